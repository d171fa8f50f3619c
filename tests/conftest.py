"""Fixtures every test folder shares."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support import naming
from tests.support.azurite import azurite
from tests.support.function_app import WorkerLoop


@pytest.fixture(scope="session")
def azurite_connection():
    """One Azurite for the whole run (it takes about 1.5 s to start); tests use containers of their own."""
    with azurite() as connection:
        yield connection


@pytest.fixture(scope="session")
def worker_loop():
    """The Functions worker's one event loop, for the tests that run the app's triggers as the host does."""
    loop = WorkerLoop()
    yield loop
    loop.close()


@pytest.fixture
def unique_name(request) -> Callable[[str], str]:
    """unique_name("ws") -> "ws-<this test's name, shortened>-1a2b3c4d", a new one each call.

    Module fixtures, which cannot use this one, call `tests.support.naming.unique_name` themselves.
    """
    return lambda prefix: naming.unique_name(prefix, request.node.name)
