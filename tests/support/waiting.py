"""Waiting in tests: one `until`, on something the test can observe, never a fixed sleep.

`until(predicate, timeout, what)` calls `predicate` every `interval` seconds until it returns a
truthy value, and returns that value, so a predicate can hand back what it found:

    job = until(lambda: (j := get_job()).state in ("succeeded", "failed") and j, 60, "the job to end")

When `timeout` seconds pass first it raises `WaitTimedOut`, an AssertionError (pytest reports a
failed test, not an error in the test), naming `what` and the last value the predicate returned.

An exception raised by the predicate ends the wait at once: none of the waits this replaced
tolerated one, and a bug in a predicate should not read as a timeout. Where a predicate may raise
while what it waits for is not there yet (a server that still refuses connections), name those
exceptions in `ignoring`: they count as "not yet", and the last one is reported on timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_SHOWN = 300  # characters of the last value a timeout shows


class WaitTimedOut(AssertionError):
    """`until` ran out of time."""


def until(
    predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05, ignoring: tuple[type[BaseException], ...] = ()
) -> T:
    """The predicate's first truthy value, polling every `interval` s for at most `timeout` s."""
    deadline = time.monotonic() + timeout
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            value = predicate()
        except ignoring as e:
            error = e
        else:
            if value:
                return value
            last, error = value, None
        if time.monotonic() >= deadline:
            seen = f"it last raised {error!r}" if error is not None else f"it last returned {last!r}"
            if len(seen) > _SHOWN:
                seen = seen[:_SHOWN] + "..."
            raise WaitTimedOut(f"timed out after {timeout:g} s waiting for {what}: {seen}") from error
        time.sleep(interval)
