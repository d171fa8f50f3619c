"""Work done in a thread of its own: what the embedded host repeats (consuming the queue, scanning the
drop box, uploading outputs), and functions called at their times (durable timers, simulated nodes)."""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable


class Repeating:
    """Calls `step` in a daemon thread until stopped, waiting `interval` seconds after each call that
    found nothing to do (`step` returns falsy) and going again at once after one that did. A step that
    raises is logged and the loop goes on: one bad pass must not end the host's only worker of its kind."""

    def __init__(self, name: str, step: Callable[[], object], interval: float, log: logging.Logger):
        self.name, self.step, self.interval, self.log = name, step, interval, log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.step()
            except Exception:  # noqa: BLE001 - keep going
                self.log.exception("%s failed; trying again in %ss", self.name, self.interval)
                busy = False
            if not busy:
                self._stop.wait(self.interval)


class TimerThread:
    """Calls each function at its time, from one daemon thread named `name`, in time order. A function
    that raises is logged and the others go on."""

    def __init__(self, name: str, log: logging.Logger) -> None:
        self.log = log
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def at(self, when: float, fn: Callable[[], None]) -> None:
        with self._cv:
            heapq.heappush(self._heap, (when, next(self._seq), fn))
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.time()):
                    self._cv.wait(None if not self._heap else self._heap[0][0] - time.time())
                if self._stopped:
                    return
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception:  # noqa: BLE001 - one timer's failure must not stop the others
                self.log.exception("a timer of %s failed", self._thread.name)


class Serial:
    """Calls the functions it is given one after another, in the order given (or `delay` seconds later),
    from one daemon thread named `name`: work a request hands off so that its answer does not wait for
    it. A function that raises is logged and the others go on. `stop` calls what was given before it
    without a delay, drops what waits for its time, then ends."""

    def __init__(self, name: str, log: logging.Logger) -> None:
        self.log = log
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._timers: TimerThread | None = None
        self._timers_lock = threading.Lock()

    def __call__(self, fn: Callable[[], None], delay: float = 0.0) -> None:
        if delay <= 0:
            self._queue.put(fn)
            return
        with self._timers_lock:
            if self._timers is None:
                self._timers = TimerThread(f"{self._thread.name}-timers", self.log)
            timers = self._timers
        timers.at(time.time() + delay, lambda: self._queue.put(fn))

    def stop(self, timeout: float = 30.0) -> None:
        with self._timers_lock:
            if self._timers is not None:
                self._timers.stop()
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (fn := self._queue.get()) is not None:
            try:
                fn()
            except Exception:  # noqa: BLE001 - one failure must not stop what comes after it
                self.log.exception("a call handed to %s failed", self._thread.name)
