"""Fixtures every test folder shares."""

from __future__ import annotations

import pytest

from tests.support.azurite import azurite


@pytest.fixture(scope="session")
def azurite_connection():
    """One Azurite for the whole run (it takes about 1.5 s to start); tests use containers of their own."""
    with azurite() as connection:
        yield connection
