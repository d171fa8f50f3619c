"""The host's repeating workers: a failing pass is logged and the loop goes on; busy passes do not wait."""

from __future__ import annotations

import logging
import threading

from batchai.background import Repeating


def test_a_step_that_raises_is_logged_and_the_loop_goes_on(caplog):
    calls, done = [], threading.Event()

    def step():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("storage unreachable")
        done.set()

    loop = Repeating("uploader", step, 0.01, logging.getLogger("test.background"))
    loop.start()
    assert done.wait(10)
    loop.stop()
    assert "uploader failed" in caplog.text and "storage unreachable" in caplog.text


def test_a_busy_step_runs_again_without_waiting_and_stop_ends_the_thread():
    remaining, idle = [3], threading.Event()

    def step():
        if remaining[0] == 0:
            idle.set()
            return 0
        remaining[0] -= 1
        return 1

    loop = Repeating("consumer", step, 3600, logging.getLogger("test.background"))  # an idle wait would be an hour
    loop.start()
    assert idle.wait(10) and remaining == [0]
    loop.stop()
    assert loop.stopping and not loop._thread.is_alive()
