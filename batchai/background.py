"""Work the embedded host repeats in a thread: consuming the queue, scanning the drop box, uploading outputs."""

from __future__ import annotations

import logging
import threading
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
