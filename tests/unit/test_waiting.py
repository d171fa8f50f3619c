"""The tests' own helpers: `until` (tests/support/waiting.py) and `unique_name` (tests/support/naming.py)."""

from __future__ import annotations

import itertools
import re

import pytest

from batchai.model.names import validate_name
from tests.support.naming import unique_name
from tests.support.waiting import WaitTimedOut, until


def test_until_returns_the_first_truthy_value():
    calls = itertools.count()
    assert until(lambda: next(calls) >= 3 and "found", 5, "the third call", interval=0) == "found"


def test_until_names_what_it_waited_for_and_the_last_value():
    with pytest.raises(AssertionError, match=r"waiting for the dead letters: it last returned \[\]") as failed:
        until(lambda: [], 0.05, "the dead letters", interval=0.01)
    assert isinstance(failed.value, WaitTimedOut)


def test_until_fails_at_once_on_an_exception_it_was_not_told_to_ignore():
    calls = itertools.count()

    def broken():
        next(calls)
        raise KeyError("properties")

    with pytest.raises(KeyError):
        until(broken, 5, "a job", interval=0)
    assert next(calls) == 1


def test_until_keeps_polling_through_ignored_exceptions_and_reports_the_last():
    attempts = iter([ConnectionRefusedError(), ConnectionRefusedError(), "up"])

    def probe():
        answer = next(attempts)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert until(probe, 5, "the server", interval=0, ignoring=(OSError,)) == "up"
    with pytest.raises(WaitTimedOut, match="it last raised ConnectionRefusedError") as failed:
        until(lambda: (_ for _ in ()).throw(ConnectionRefusedError()), 0.05, "the server", interval=0.01, ignoring=(OSError,))
    assert isinstance(failed.value.__cause__, ConnectionRefusedError)


def test_unique_names_are_valid_distinct_and_say_who_made_them():
    names = {unique_name("ws", "test_a_paused_cluster_starts_its_queue[high-low]") for _ in range(100)}
    assert len(names) == 100
    for name in names:
        assert validate_name("workspace", name, "name") == name
        assert re.fullmatch(r"ws-a_paused_cluster_starts-[0-9a-f]{8}", name), name
    assert re.fullmatch(r"cli-scheduler-[0-9a-f]{8}", unique_name("cli", "test_scheduler.py"))
    assert re.fullmatch(r"bad-[0-9a-f]{8}", unique_name("bad"))
    with pytest.raises(ValueError):
        unique_name("bad name")


def test_the_fixture_names_the_test(unique_name):
    assert unique_name("ws").startswith("ws-the_fixture_names_the_te-")
