"""The host's repeating workers: a failing pass is logged and the loop goes on; busy passes do not wait;
the queue consumer gives back what it did not handle when it stops."""

from __future__ import annotations

import logging
import threading

from batchai.adapters.sqlite_queue import SqliteSubmissionQueue
from batchai.background import Repeating, Serial
from batchai.queue_consumer import QueueConsumer


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


def test_a_consumer_stopped_mid_batch_gives_the_rest_back_at_once(tmp_path):
    queue = SqliteSubmissionQueue(tmp_path / "queue.db")
    for i in range(3):
        queue.publish(f'{{"n": {i}}}', message_id=f"m{i}")
    consumer = QueueConsumer(None, queue)
    handled = []

    def handle_then_stop(message):
        handled.append(message.id)
        consumer._loop._stop.set()  # the host stops while this batch is being handled

    consumer._handle = handle_then_stop
    assert consumer.consume() == 3 and handled == ["m0"]
    back = queue.receive(max_messages=10, lock_seconds=60)  # not locked until their lock would have run out
    assert sorted(m.id for m in back) == ["m1", "m2"]


def test_serial_calls_in_order_past_a_failure_and_stop_runs_what_was_given_first(caplog):
    calls: list[int] = []
    gate = threading.Event()
    serial = Serial("engine-calls", logging.getLogger("test.background"))
    serial(gate.wait)  # holds the thread while the rest queue up behind it
    serial(lambda: calls.append(1))
    serial(lambda: 1 / 0)
    serial(lambda: calls.append(2))
    gate.set()
    serial.stop()
    assert calls == [1, 2]
    assert "a call handed to engine-calls failed" in caplog.text and "ZeroDivisionError" in caplog.text


def test_serial_calls_a_delayed_function_after_those_due_now_and_stop_drops_one_not_due():
    calls: list[str] = []
    done = threading.Event()
    serial = Serial("engine-calls", logging.getLogger("test.background"))
    serial(lambda: (calls.append("later"), done.set()), 0.2)
    serial(lambda: calls.append("now"))
    serial(lambda: calls.append("never"), 3600)
    assert done.wait(10)
    serial.stop()
    assert calls == ["now", "later"]
