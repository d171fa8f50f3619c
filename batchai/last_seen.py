"""When nodes were last heard from, written to the store in batches.

A node's report needs its `last_seen` stored only to a resolution (`node_protocol.LAST_SEEN_RESOLUTION`
of the node timeout), but one write per node per resolution is still a write transaction for most
reports on a busy cluster (1,000 nodes: over a hundred a second), each queuing behind the store's
write lock. Noted here instead, they are written every `interval` seconds in one transaction
(`Store.touch_nodes`), from a thread of their own, started by the first note. A stored time then
lags the report by at most `interval`, which the composition root keeps to the same resolution;
what a crash loses is covered by the restart's grace (`batchai.lifecycle.restart_grace`).
"""

from __future__ import annotations

import logging
import threading

from batchai.background import Repeating
from batchai.ports import Store

log = logging.getLogger("batchai.last_seen")


class LastSeenWriter:
    def __init__(self, store: Store, interval: float) -> None:
        self._store = store
        self._interval = interval
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._thread: Repeating | None = None

    def note(self, node_id: str, when: float) -> None:
        """The node was heard from at `when`: written with the next batch."""
        with self._lock:
            self._seen[node_id] = max(when, self._seen.get(node_id, 0.0))
            if self._thread is None:
                self._thread = Repeating("last-seen", self.flush, self._interval, log)
                self._thread.start()

    def flush(self) -> bool:
        """Writes what was noted since the last batch (kept for the next one if the write fails)."""
        with self._lock:
            seen, self._seen = self._seen, {}
        if not seen:
            return False
        try:
            self._store.touch_nodes(seen)
        except BaseException:
            with self._lock:
                for node_id, when in seen.items():
                    self._seen[node_id] = max(when, self._seen.get(node_id, 0.0))
            raise
        return False  # a batch per interval, however much it wrote

    def close(self) -> None:
        """Stops the thread, then writes what is left."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.stop()
        self.flush()
