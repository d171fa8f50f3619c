"""A SQLite database shared by threads and processes: one connection per thread, WAL, explicit
transactions.

`BEGIN IMMEDIATE` takes the write lock at the start, so a read-modify-write in a transaction is
a compare-and-set across threads and processes (the control plane's processes and the CLI share
files). Writers queue for it on a lock of their own first, a Python lock between the threads of a
process and an flock on `<db>.lock` between processes: SQLite's own busy handler waits by
sleeping (1, 2, 5, 10 ... 100 ms), and a hundred concurrent writers in one process spent most of
their time asleep (500 PUTs: 23 ms each with the CPU 60% idle). A blocked flock wakes when the
holder lets go.

Checkpoints (the WAL copied back into the database, with its fsync) run after a commit has let go of
the write lock, in the committing thread, every `CHECKPOINT_EVERY` commits of the process, and passive:
SQLite's own ran inside COMMIT, so every writer queued behind each fsync (a third of the simulated
cluster's throughput). One in `RESTART_EVERY` is a restart, under the write lock, so that the WAL
starts over instead of growing for as long as reads go on.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

CHECKPOINT_EVERY = 200  # commits; SQLite's default is 1,000 pages, and a commit here writes a few
# A passive checkpoint copies the WAL back but never starts it over while any reader is at work, and a busy
# control plane always has one: the simulated cluster's WAL grew past 700 MB, every read slower for it. A
# restart checkpoint, every this many, holds the writers until the readers of old frames are done (they
# are short) and makes the next commit write the WAL from its start.
RESTART_EVERY = 10
RESTART_WAIT_MS = 1000
BUSY_TIMEOUT_MS = 30_000


class _WriterLock:
    """The threads of this process, then the processes, one at a time."""

    def __init__(self, path: str) -> None:
        self._threads = threading.Lock()
        self.commits = 0  # in this process, counted under the lock
        self._fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def __enter__(self) -> None:
        self._threads.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()


_WRITERS: dict[str, _WriterLock] = {}  # one per database file in this process
_WRITERS_LOCK = threading.Lock()


def _writer_lock(path: str) -> _WriterLock:
    with _WRITERS_LOCK:
        if path not in _WRITERS:
            _WRITERS[path] = _WriterLock(path)
        return _WRITERS[path]


class SqliteDb:
    def __init__(self, path: Path | str, schema: str):
        self.path = str(path)
        self._local = threading.local()
        self._writer = _writer_lock(str(Path(self.path).resolve()))
        self._db().executescript(schema)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA wal_autocheckpoint=0")  # see CHECKPOINT_EVERY
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        with self._writer:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            passive = self._committed(db)
        if passive:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")  # busy (another one running) is no error here

    def _write(self, sql: str, args: Sequence = ()) -> tuple[int, list[sqlite3.Row]]:
        """One statement as its own transaction (autocommit): (rows changed, rows it returns). A statement is
        atomic by itself, and the write lock is held for one call into SQLite instead of three (BEGIN and
        COMMIT too): each call gives up the GIL, and the other writers queue behind the lock while it is
        won back."""
        db = self._db()
        with self._writer:
            cursor = db.execute(sql, args)
            rows = cursor.fetchall()  # a RETURNING statement commits when its last row is read
            changed = cursor.rowcount
            passive = self._committed(db)
        if passive:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")  # busy (another one running) is no error here
        return changed, rows

    def _committed(self, db: sqlite3.Connection) -> bool:
        """Counts a commit (under the write lock); whether a passive checkpoint is due after it lets go. One in
        `RESTART_EVERY` is a restart, run here: passive ones never let the WAL start over while reads go on."""
        self._writer.commits += 1
        if self._writer.commits % (CHECKPOINT_EVERY * RESTART_EVERY) == 0:
            db.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")  # a reader that stays longer: it waits for the next one
            try:
                db.execute("PRAGMA wal_checkpoint(RESTART)")
            finally:
                db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            return False
        return self._writer.commits % CHECKPOINT_EVERY == 0

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
