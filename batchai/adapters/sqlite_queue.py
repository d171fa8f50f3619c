"""The embedded SubmissionQueue: a priority queue with peek-lock in SQLite (WAL).

Semantics follow Service Bus so the two adapters are interchangeable:
- receive takes the oldest unlocked messages of the highest priority first, locks each for
  `lock_seconds` under a fresh lock token and counts the delivery;
- complete deletes, abandon unlocks (both only with the current lock token: a receiver whose
  lock expired cannot settle a message someone else now holds);
- a message delivered `max_delivery_count` times without being completed is dead-lettered
  (reason MaxDeliveryCountExceeded) instead of being delivered again;
- publishing a message id that is already queued is a no-op (duplicate detection), so an
  idempotency key used as the message id makes re-publishing harmless.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from batchai.adapters.sqlite_db import SqliteDb
from batchai.ports import PRIORITIES, QueueMessage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, priority TEXT NOT NULL, rank INTEGER NOT NULL, body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'active', delivery_count INTEGER NOT NULL DEFAULT 0,
    locked_until REAL NOT NULL DEFAULT 0, lock_token TEXT, reason TEXT, description TEXT, enqueued REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_next ON messages(state, rank, seq);
"""


class LockLost(Exception):
    """The message's lock expired or another receiver holds it now."""


class SqliteSubmissionQueue(SqliteDb):
    def __init__(self, path: Path | str, *, max_delivery_count: int = 5):
        super().__init__(path, _SCHEMA)
        self.max_delivery_count = max_delivery_count

    def publish(self, body: str, *, priority: str = "normal", message_id: str | None = None) -> str:
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}")
        message_id = message_id or uuid.uuid4().hex
        with self._tx() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM messages").fetchone()[0]
            db.execute(
                "INSERT OR IGNORE INTO messages (id, seq, priority, rank, body, enqueued) VALUES (?, ?, ?, ?, ?, ?)",
                (message_id, seq, priority, PRIORITIES.index(priority), body, time.time()),
            )
        return message_id

    def receive(self, *, max_messages: int = 10, lock_seconds: float = 30.0) -> list[QueueMessage]:
        now = time.time()
        out: list[QueueMessage] = []
        with self._tx() as db:
            rows = db.execute(
                "SELECT * FROM messages WHERE state='active' AND locked_until<=? ORDER BY rank, seq LIMIT ?", (now, max_messages)
            ).fetchall()
            for row in rows:
                if row["delivery_count"] >= self.max_delivery_count:
                    db.execute(
                        "UPDATE messages SET state='dead', reason='MaxDeliveryCountExceeded', description=? WHERE id=?",
                        (f"not completed after {row['delivery_count']} deliveries", row["id"]),
                    )
                    continue
                token = uuid.uuid4().hex
                db.execute(
                    "UPDATE messages SET delivery_count=delivery_count+1, locked_until=?, lock_token=? WHERE id=?",
                    (now + lock_seconds, token, row["id"]),
                )
                out.append(
                    QueueMessage(
                        id=row["id"], body=row["body"], priority=row["priority"], delivery_count=row["delivery_count"] + 1, lock_token=token
                    )
                )
        return out

    def _settle(self, message: QueueMessage, sql: str, *args) -> None:
        with self._tx() as db:
            changed = db.execute(sql + " WHERE id=? AND lock_token=? AND state='active'", (*args, message.id, message.lock_token)).rowcount
        if not changed:
            raise LockLost(f"message {message.id}: the lock was lost")

    def complete(self, message: QueueMessage) -> None:
        self._settle(message, "DELETE FROM messages")

    def abandon(self, message: QueueMessage) -> None:
        self._settle(message, "UPDATE messages SET locked_until=0, lock_token=NULL")

    def dead_letter(self, message: QueueMessage, reason: str, description: str) -> None:
        self._settle(message, "UPDATE messages SET state='dead', reason=?, description=?, lock_token=NULL", reason, description)

    def depth(self) -> dict[str, int]:
        rows = self._db().execute("SELECT priority, COUNT(*) AS n FROM messages WHERE state='active' GROUP BY priority").fetchall()
        counts = {p: 0 for p in PRIORITIES}
        counts.update({r["priority"]: r["n"] for r in rows})
        return counts

    def dead_letters(self) -> list[dict]:
        rows = self._db().execute("SELECT id, priority, reason, description, body FROM messages WHERE state='dead' ORDER BY seq").fetchall()
        return [dict(r) for r in rows]

    def close(self) -> None:
        """Closes the calling thread's connection; another thread's closes as that thread ends. Nothing else
        is held: a message's lock is a row, and expires by itself."""
        super().close()
