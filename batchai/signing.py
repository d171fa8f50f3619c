"""The keys that sign download URLs (`batchai.api.files`), rotated: a new random key each period.

A URL names the period whose key signed it; only the current and the previous period's keys are
accepted, so a URL (at most MAX_LINK_MINUTES long-lived, far less than a period) never outlives its key
by more than a period, and a key that leaked stops opening anything within two periods. The keys are
kept in the store (`Store.setting`), so every control-plane process signs and checks alike.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable

ROTATION_SECONDS = 86_400
MAX_LINK_MINUTES = 600  # listOutputFiles' linkexpiryinminutes: its upper bound


class SigningKeys:
    def __init__(self, store, *, rotation: float = ROTATION_SECONDS, clock: Callable[[], float] = time.time):
        assert rotation > MAX_LINK_MINUTES * 60, "a URL must not outlive the previous period"
        self.store, self.rotation, self.clock = store, rotation, clock
        self._keys: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def current(self) -> tuple[int, bytes]:
        period = int(self.clock() // self.rotation)
        return period, self._key(period)

    def key(self, period: int) -> bytes | None:
        """The key of `period` while URLs it signed may still be valid; None after (or for a future one)."""
        now = int(self.clock() // self.rotation)
        return self._key(period) if period in (now, now - 1) else None

    def _key(self, period: int) -> bytes:
        with self._lock:
            if period not in self._keys:
                self._keys = {p: k for p, k in self._keys.items() if p >= period - 1}
                self._keys[period] = self.store.setting(f"signing_key:{period}", lambda: secrets.token_hex(32)).encode()
            return self._keys[period]
