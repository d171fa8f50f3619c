"""The embedded Store: one SQLite file in WAL mode.

Every read-modify-write runs in a `BEGIN IMMEDIATE` transaction, so a mutation is a
compare-and-set: the change function sees the current record and may refuse it. That is what
makes state transitions exactly-once even when two activities race, or when the control plane
is killed and restarted mid-transition.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

import orjson

from batchai import ids
from batchai.adapters.record_fields import cluster_of, scheduling_of, state_of
from batchai.adapters.sqlite_db import SqliteDb
from batchai.lifecycle import utcnow
from batchai.ports import REPORTABLE, Conflict, JobSummary, Launch, Mutation, NodeRecord, Record, TaskRecord
from batchai.scheduling import head_limits

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    key TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    type TEXT NOT NULL,
    name TEXT NOT NULL,
    parent TEXT,
    seq INTEGER NOT NULL,
    etag TEXT NOT NULL,
    state TEXT,
    cluster TEXT,
    body TEXT NOT NULL,
    internal TEXT NOT NULL,
    node_count INTEGER, priority TEXT, wall_clock TEXT, start_time TEXT, gpus_per_node INTEGER
);
CREATE INDEX IF NOT EXISTS resources_parent ON resources(parent, type, seq);
CREATE INDEX IF NOT EXISTS resources_parent_state ON resources(parent, type, state);
CREATE INDEX IF NOT EXISTS resources_jobs ON resources(type, state, cluster, seq);
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY, cluster TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL,
    job TEXT, pid INTEGER, boot_id TEXT, address TEXT, root TEXT,
    last_seen REAL NOT NULL DEFAULT 0, error TEXT, exec_port INTEGER, idle_since REAL NOT NULL DEFAULT 0,
    machine TEXT, gpus TEXT, shares TEXT
);
CREATE INDEX IF NOT EXISTS nodes_cluster ON nodes(cluster, name);
CREATE INDEX IF NOT EXISTS nodes_job ON nodes(job);
CREATE INDEX IF NOT EXISTS nodes_free ON nodes(cluster, name) WHERE job IS NULL;
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, job TEXT NOT NULL, node TEXT NOT NULL, attempt INTEGER NOT NULL,
    spec TEXT NOT NULL, state TEXT NOT NULL, boot_id TEXT, exit_code INTEGER, error TEXT,
    start_time TEXT, end_time TEXT
);
CREATE INDEX IF NOT EXISTS tasks_job ON tasks(job);
CREATE INDEX IF NOT EXISTS tasks_node ON tasks(node, state);
CREATE TABLE IF NOT EXISTS operations (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, resource TEXT NOT NULL, status TEXT NOT NULL,
    error TEXT, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, principal TEXT NOT NULL, action TEXT NOT NULL,
    resource TEXT NOT NULL, result INTEGER NOT NULL, doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit(ts);
"""

_NODE_FIELDS = [f.name for f in fields(NodeRecord)]
_TASK_FIELDS = [f.name for f in fields(TaskRecord)]
_NODE_COLUMNS = ", ".join(_NODE_FIELDS)


# What a scheduling pass reads of every queued job, kept in columns: reading them out of ten
# thousand JSON bodies on every pass cost more than the whole scheduling decision.
_SCHEDULING_COLUMNS = ("node_count", "priority", "wall_clock", "start_time", "gpus_per_node")


_SUMMARY_COLUMNS = ("id", "seq", "parent", "state", "node_count", "priority", "wall_clock AS max_wall_clock", "start_time", "gpus_per_node")


def _columns(record: Record) -> dict:
    """The columns derived from a record's body, written with it."""
    return {"state": state_of(record), "cluster": cluster_of(record), **dict(zip(_SCHEDULING_COLUMNS, scheduling_of(record), strict=True))}


def _task_update(task_id: str, only_if_state: Iterable[str] | None, changes: dict) -> tuple[str, list]:
    """The statement that changes a task's `changes` fields (in one of `only_if_state`, if given)."""
    unknown = set(changes) - set(_TASK_FIELDS)
    assert not unknown and changes, unknown
    sql = f"UPDATE tasks SET {', '.join(f'{k}=?' for k in changes)} WHERE id=?"
    args = [*changes.values(), task_id]
    if only_if_state is not None:
        allowed = list(only_if_state)
        sql += f" AND state IN ({','.join('?' * len(allowed))})"
        args += allowed
    return sql, args


def _row_of(record: Record) -> dict:
    """The record's values as its row of the resources table stores them."""
    return {"body": _dumps(record.body), "internal": _dumps(record.internal), "etag": record.etag, **_columns(record)}


def _update_row(db: sqlite3.Connection, key: str, values: dict, etag: str) -> bool:
    """The resource's row set to `values` (see `_row_of`) if its etag is still `etag`; whether it was."""
    sql = f"UPDATE resources SET {', '.join(f'{c}=?' for c in values)} WHERE key=? AND etag=?"
    return db.execute(sql, [*values.values(), key, etag]).rowcount == 1


class _Prepared(NamedTuple):
    etag: str  # of the record the change was applied to
    record: Record
    row: dict


def _like(text: str) -> str:
    """`text` as a literal inside a LIKE pattern."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# nodes whose shares may name a job (`_shared_by` its pattern; the JSON decides: `_sharing`)
_SHARED_BY = "shares IS NOT NULL AND shares LIKE ? ESCAPE '\\'"


def _shared_by(job_key: str) -> str:
    return f'%"{_like(job_key)}"%'


def _dumps(value) -> str:
    """JSON text for a column (orjson: a pass reads and writes many records)."""
    return orjson.dumps(value).decode()


class SqliteStore(SqliteDb):
    def __init__(self, path: Path | str):
        super().__init__(path, _SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Columns added after a data dir was created."""
        added = {
            "nodes": {"exec_port": "INTEGER", "idle_since": "REAL NOT NULL DEFAULT 0", "machine": "TEXT", "gpus": "TEXT", "shares": "TEXT"},
            "resources": {
                "node_count": "INTEGER",
                "priority": "TEXT",
                "wall_clock": "TEXT",
                "start_time": "TEXT",
                "gpus_per_node": "INTEGER",
            },
        }
        with self._tx() as db:
            for table, wanted in added.items():
                columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                missing = [name for name in wanted if name not in columns]
                for name in missing:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {wanted[name]}")
                if table == "resources":
                    # covers job_summaries and queue_head (one experiment's queue of one priority, in order)
                    for older in ("resources_scheduling", "resources_queue"):
                        db.execute(f"DROP INDEX IF EXISTS {older}")
                    db.execute(
                        "CREATE INDEX IF NOT EXISTS resources_queue_head ON resources"
                        "(cluster, state, type, priority, parent, seq, id, node_count, wall_clock, start_time, gpus_per_node)"
                    )
                if table == "nodes":
                    # the few shared nodes: every launch and every end asks which nodes a job shares
                    db.execute("CREATE INDEX IF NOT EXISTS nodes_shared ON nodes(id) WHERE shares IS NOT NULL")
                if table == "resources" and missing:
                    for row in db.execute("SELECT * FROM resources WHERE type='jobs'").fetchall():
                        record = self._record(row)
                        db.execute(
                            f"UPDATE resources SET {', '.join(f'{c}=?' for c in _SCHEDULING_COLUMNS)} WHERE key=?",
                            (*scheduling_of(record), row["key"]),
                        )

    @staticmethod
    def _record(row: sqlite3.Row) -> Record:
        return Record(
            id=row["id"],
            type=row["type"],
            name=row["name"],
            parent=row["parent"],
            body=orjson.loads(row["body"]),
            internal=orjson.loads(row["internal"]),
            etag=row["etag"],
            seq=row["seq"],
        )

    # -- resources ----------------------------------------------------------------------
    def create(self, record: Record) -> Record:
        return self.create_many([record])[0]

    def create_many(self, records: Sequence[Record]) -> list[Record]:
        """One transaction: all are created, or (an id exists) none."""
        with self._tx() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) FROM resources").fetchone()[0]
            for record in records:
                if db.execute("SELECT 1 FROM resources WHERE key=?", (ids.key(record.id),)).fetchone():
                    raise Conflict(record.id)
                seq += 1
                record.etag, record.seq = uuid.uuid4().hex, seq
                row = {
                    "key": ids.key(record.id),
                    "id": record.id,
                    "type": record.type,
                    "name": record.name,
                    "parent": ids.key(record.parent) if record.parent else None,
                    "seq": record.seq,
                    **_row_of(record),
                }
                db.execute(f"INSERT INTO resources ({','.join(row)}) VALUES ({','.join('?' * len(row))})", list(row.values()))
        return list(records)

    def get(self, resource_id: str) -> Record | None:
        row = self._db().execute("SELECT * FROM resources WHERE key=?", (ids.key(resource_id),)).fetchone()
        return self._record(row) if row else None

    def children(self, parent_id: str, type: str, *, after_seq: int = 0, limit: int | None = None) -> list[Record]:
        rows = (
            self._db()
            .execute(
                "SELECT * FROM resources WHERE parent=? AND type=? AND seq>? ORDER BY seq LIMIT ?",
                (ids.key(parent_id), type, after_seq, -1 if limit is None else limit),
            )
            .fetchall()
        )
        return [self._record(r) for r in rows]

    def workspaces(self, prefix: str, *, after_seq: int = 0, limit: int | None = None) -> list[Record]:
        pattern = _like(ids.key(prefix)) + "/%"
        rows = (
            self._db()
            .execute(
                "SELECT * FROM resources WHERE type='workspaces' AND key LIKE ? ESCAPE '\\' AND seq>? ORDER BY seq LIMIT ?",
                (pattern, after_seq, -1 if limit is None else limit),
            )
            .fetchall()
        )
        return [self._record(r) for r in rows]

    def mutate(self, resource_id: str, change: Mutation) -> Record | None:
        prepared = self._prepare({resource_id: change})
        with self._tx() as db:
            return self._mutate(db, resource_id, change, prepared.get(ids.key(resource_id)))

    def _prepare(self, changes: Mapping[str, Mutation]) -> dict[str, _Prepared]:
        """Each resource's change applied to it as read now, and encoded, before the write lock is taken (decoding,
        changing and encoding a job took most of the time its end held the lock): by key, those that changed.
        Under the lock, `_mutate` writes one only if its etag still holds."""
        by_key = {ids.key(r): change for r, change in changes.items()}
        rows = self._db().execute(f"SELECT * FROM resources WHERE key IN ({','.join('?' * len(by_key))})", list(by_key)).fetchall()
        prepared = {}
        for row in rows:
            updated = by_key[row["key"]](self._record(row))
            if updated is not None:
                updated.etag = uuid.uuid4().hex
                prepared[row["key"]] = _Prepared(row["etag"], updated, _row_of(updated))
        return prepared

    def _mutate(self, db: sqlite3.Connection, resource_id: str, change: Mutation, prepared: _Prepared | None = None) -> Record | None:
        """The change, compare-and-set: `prepared` (see `_prepare`) if the record is still what it was made from,
        else applied to the record as it is now."""
        key = ids.key(resource_id)
        if prepared is not None and _update_row(db, key, prepared.row, prepared.etag):
            return prepared.record
        row = db.execute("SELECT * FROM resources WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        updated = change(self._record(row))
        if updated is None:
            return None
        updated.etag = uuid.uuid4().hex
        _update_row(db, key, _row_of(updated), row["etag"])
        return updated

    def start_jobs(self, cluster: str, launches: Sequence[Launch]) -> list[Record | None]:
        """One transaction for the batch; each launch leaves all of itself or nothing (`_launch`)."""
        started: list[Record | None] = []
        # encoded before the write lock is taken
        rows = [self._task_rows(launch.tasks) for launch in launches]
        prepared = self._prepare({launch.job: launch.change for launch in launches})
        with self._tx() as db:
            for launch, task_rows in zip(launches, rows, strict=True):
                started.append(self._launch(db, cluster, launch, task_rows, prepared.get(ids.key(launch.job))))
        return started

    def _launch(
        self, db: sqlite3.Connection, cluster: str, launch: Launch, task_rows: list[list], prepared: _Prepared | None
    ) -> Record | None:
        """Claim, change, tasks: all of the launch or nothing of it. A claim of whole nodes is one statement,
        given back by another if the change is refused; one of GPU shares is several, and a savepoint gives it
        back (each call into SQLite under the write lock waits for the GIL again: the fewer, the shorter)."""
        shares = launch.gpus is not None
        if shares:
            db.execute("SAVEPOINT launch")
        claimed = self._claim(db, cluster, launch.job, launch.node_ids, launch.gpus)
        record = self._mutate(db, launch.job, launch.change, prepared) if claimed else None
        if record is not None:
            self._insert_tasks(db, task_rows)
        elif shares:
            db.execute("ROLLBACK TO launch")
        elif claimed:
            db.execute("UPDATE nodes SET state='idle', job=NULL WHERE job=?", (ids.key(launch.job),))
        if shares:
            db.execute("RELEASE launch")
        return record

    def delete_tree(self, resource_id: str) -> list[Record]:
        k = ids.key(resource_id)
        pattern = _like(k) + "/%"
        with self._tx() as db:
            rows = db.execute("SELECT * FROM resources WHERE key=? OR key LIKE ? ESCAPE '\\' ORDER BY seq DESC", (k, pattern)).fetchall()
            keys = [r["key"] for r in rows]
            db.executemany("DELETE FROM resources WHERE key=?", [(x,) for x in keys])
            db.executemany("DELETE FROM tasks WHERE job=?", [(x,) for x in keys])
            self._release(db, [r["key"] for r in rows if r["type"] == "jobs"])
            db.executemany("DELETE FROM nodes WHERE cluster=?", [(x,) for x in keys])
        return [self._record(r) for r in rows]

    def jobs(self, *, states: Iterable[str], cluster: str | None = None) -> list[Record]:
        states = list(states)
        marks = ",".join("?" * len(states))
        sql = f"SELECT * FROM resources WHERE type='jobs' AND state IN ({marks})"
        args: list = list(states)
        if cluster is not None:
            sql += " AND cluster=?"
            args.append(ids.key(cluster))
        rows = self._db().execute(sql + " ORDER BY seq", args).fetchall()
        return [self._record(r) for r in rows]

    def job_summaries(self, cluster: str, states: Iterable[str]) -> list[JobSummary]:
        """What scheduling needs of a cluster's jobs, in submission order, without loading bodies."""
        states = list(states)
        cursor = self._db().cursor()
        cursor.row_factory = None  # plain tuples, made JobSummary in one C-level map: no per-row Python
        rows = cursor.execute(
            f"SELECT {', '.join(_SUMMARY_COLUMNS)} FROM resources"
            f" WHERE type='jobs' AND cluster=? AND state IN ({','.join('?' * len(states))}) ORDER BY seq",
            (ids.key(cluster), *states),
        ).fetchall()
        return list(map(JobSummary._make, rows))

    def job_counts(self, parent: str) -> dict[str, int]:
        rows = self._db().execute("SELECT state, COUNT(*) FROM resources WHERE parent=? AND type='jobs' GROUP BY state", (ids.key(parent),))
        return dict(rows.fetchall())

    def queue_head(self, cluster: str, depth: int) -> list[JobSummary]:
        key = ids.key(cluster)
        cursor = self._db().cursor()
        cursor.row_factory = None
        queued = "type='jobs' AND cluster=? AND state='queued'"
        groups = cursor.execute(
            f"SELECT priority, parent, MIN(seq), COUNT(*) FROM resources WHERE {queued} GROUP BY priority, parent", (key,)
        )
        rows = []
        for priority, parent, limit in head_limits(groups.fetchall(), depth):
            rows += cursor.execute(
                f"SELECT {', '.join(_SUMMARY_COLUMNS)} FROM resources WHERE {queued} AND priority IS ? AND parent=? ORDER BY seq LIMIT ?",
                (key, priority, parent, limit),
            ).fetchall()
        rows.sort(key=itemgetter(1))
        return list(map(JobSummary._make, rows))

    # -- nodes --------------------------------------------------------------------------
    @staticmethod
    def _node(row: sqlite3.Row) -> NodeRecord:
        return NodeRecord(**{f: row[f] for f in _NODE_FIELDS})

    def put_node(self, node: NodeRecord) -> None:
        node.cluster = ids.key(node.cluster)
        with self._tx() as db:
            db.execute(
                f"INSERT OR REPLACE INTO nodes ({','.join(_NODE_FIELDS)}) VALUES ({','.join('?' * len(_NODE_FIELDS))})",
                [getattr(node, f) for f in _NODE_FIELDS],
            )

    def get_node(self, node_id: str) -> NodeRecord | None:
        row = self._db().execute("SELECT * FROM nodes WHERE id=?", (node_id,)).fetchone()
        return self._node(row) if row else None

    def nodes(self, cluster: str | None = None) -> list[NodeRecord]:
        # plain tuples in the fields' order: a pass reads a thousand nodes, and a Row read by name per field cost most of it
        cursor = self._db().cursor()
        cursor.row_factory = None
        if cluster is None:
            rows = cursor.execute(f"SELECT {_NODE_COLUMNS} FROM nodes ORDER BY cluster, name").fetchall()
        else:
            rows = cursor.execute(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE cluster=? ORDER BY name", (ids.key(cluster),)).fetchall()
        return [NodeRecord(*row) for row in rows]

    def placeable_nodes(self, cluster: str) -> list[NodeRecord]:
        cursor = self._db().cursor()
        cursor.row_factory = None
        rows = cursor.execute(
            f"SELECT {_NODE_COLUMNS} FROM nodes WHERE cluster=? AND job IS NULL"
            " AND (state='idle' OR (state='running' AND gpus IS NOT NULL)) ORDER BY name",
            (ids.key(cluster),),
        ).fetchall()
        return [NodeRecord(*row) for row in rows]

    def update_node(self, node_id: str, **changes) -> NodeRecord | None:
        unknown = set(changes) - set(_NODE_FIELDS)
        assert not unknown, unknown
        if not changes:
            return self.get_node(node_id)
        _, rows = self._write(
            f"UPDATE nodes SET {', '.join(f'{k}=?' for k in changes)} WHERE id=? RETURNING *", [*changes.values(), node_id]
        )
        return self._node(rows[0]) if rows else None

    def touch_nodes(self, seen: Mapping[str, float]) -> None:
        with self._tx() as db:
            db.executemany("UPDATE nodes SET last_seen=? WHERE id=? AND last_seen<?", [(t, n, t) for n, t in seen.items()])

    def claim_nodes(self, cluster: str, job: str, node_ids: list[str]) -> bool:
        """Reserve all of `node_ids` for `job`, or none: gang placement is all-or-nothing."""
        with self._tx() as db:
            return self._claim(db, cluster, job, node_ids)

    def _claim(self, db: sqlite3.Connection, cluster: str, job: str, node_ids: list[str], gpus: dict[str, list[str]] | None = None) -> bool:
        job_key = ids.key(job)
        if self._holds(db, job_key):
            return False
        if gpus is not None:
            return self._claim_gpus(db, cluster, job_key, gpus)
        free = f"cluster=? AND state='idle' AND job IS NULL AND shares IS NULL AND id IN ({','.join('?' * len(node_ids))})"
        args = [ids.key(cluster), *node_ids]
        # all or none in one statement: its subquery counts the nodes as they were before it
        cursor = db.execute(
            f"UPDATE nodes SET state='running', job=? WHERE {free} AND (SELECT COUNT(*) FROM nodes WHERE {free})=?",
            [job_key, *args, *args, len(node_ids)],
        )
        return cursor.rowcount == len(node_ids)

    def _claim_gpus(self, db: sqlite3.Connection, cluster: str, job_key: str, gpus: dict[str, list[str]]) -> bool:
        """Each node's GPUs of `gpus`, shared with the jobs already there, or nothing."""
        updates = []
        for node_id, wanted in gpus.items():
            row = db.execute("SELECT * FROM nodes WHERE id=? AND cluster=? AND job IS NULL", (node_id, ids.key(cluster))).fetchone()
            node = self._node(row) if row else None
            if node is None or node.state not in ("idle", "running") or (node.state == "running" and not node.shares):
                return False
            if not set(wanted) <= set(node.free_gpus()):
                return False
            updates.append((_dumps({**node.share_map(), job_key: wanted}), node_id))
        db.executemany("UPDATE nodes SET state='running', shares=? WHERE id=?", updates)
        return True

    @staticmethod
    def _holds(db: sqlite3.Connection, job_key: str) -> bool:
        """Whether the job holds a node or a share of one, in one statement (a shares value names its jobs as JSON
        keys, quoted: the pattern matches only the key)."""
        row = db.execute(
            f"SELECT 1 FROM nodes WHERE job=? UNION ALL SELECT 1 FROM nodes WHERE {_SHARED_BY} LIMIT 1", (job_key, _shared_by(job_key))
        ).fetchone()
        return row is not None

    def _sharing(self, db: sqlite3.Connection, job_key: str) -> list[NodeRecord]:
        """The nodes whose GPUs the job shares."""
        rows = db.execute(f"SELECT * FROM nodes WHERE {_SHARED_BY}", (_shared_by(job_key),)).fetchall()
        return [n for n in map(self._node, rows) if job_key in n.share_map()]

    def _release(self, db: sqlite3.Connection, job_keys: list[str]) -> list[str]:
        """The jobs' nodes, whole or shared, freed (now: auto scale counts idleness from here)."""
        now, freed = time.time(), []
        for key in job_keys:
            rows = db.execute(
                "UPDATE nodes SET job=NULL, idle_since=?, state=CASE WHEN state='running' THEN 'idle' ELSE state END WHERE job=? RETURNING id",
                (now, key),
            ).fetchall()
            freed += [r["id"] for r in rows]
            if rows:  # a job takes whole nodes or shares of nodes, never both (`_claim`)
                continue
            for node in self._sharing(db, key):
                shares = {j: g for j, g in node.share_map().items() if j != key}
                state = "idle" if not shares and node.state == "running" else node.state
                db.execute(
                    "UPDATE nodes SET shares=?, state=?, idle_since=? WHERE id=?",
                    (_dumps(shares) if shares else None, state, now if not shares else node.idle_since, node.id),
                )
                freed.append(node.id)
        return freed

    def release_nodes(self, job: str) -> list[str]:
        key = ids.key(job)
        if not self._holds(self._db(), key):  # most calls find nothing (each node's report of an ended job asks): no write lock
            return []
        with self._tx() as db:
            return self._release(db, [key])

    def end_job(
        self,
        job: str,
        change: Mutation,
        *,
        ending: Sequence[str] = (),
        killing: Sequence[str] = (),
        finished: tuple[str, dict] | None = None,
    ) -> tuple[Record | None, list[str]]:
        prepared = self._prepare({job: change})
        with self._tx() as db:
            if finished is not None and db.execute(*_task_update(finished[0], REPORTABLE, finished[1])).rowcount != 1:
                return None, []
            ended = self._mutate(db, job, change, prepared.get(ids.key(job)))
            if ended is None:
                return None, []
            if ending:
                db.execute(
                    f"UPDATE tasks SET state='finished', error='terminated', end_time=?"
                    f" WHERE id IN ({','.join('?' * len(ending))}) AND state IN ('pending', 'running')",
                    [utcnow(), *ending],
                )
            if killing:
                db.execute(
                    f"UPDATE tasks SET state='killing' WHERE id IN ({','.join('?' * len(killing))}) AND state='running'", list(killing)
                )
            return ended, self._release(db, [ids.key(job)])

    def delete_node(self, node_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM nodes WHERE id=?", (node_id,))

    def delete_nodes(self, cluster: str) -> list[NodeRecord]:
        with self._tx() as db:
            rows = db.execute("SELECT * FROM nodes WHERE cluster=?", (ids.key(cluster),)).fetchall()
            db.execute("DELETE FROM nodes WHERE cluster=?", (ids.key(cluster),))
        return [self._node(r) for r in rows]

    # -- tasks --------------------------------------------------------------------------
    @staticmethod
    def _task(row: sqlite3.Row) -> TaskRecord:
        values = {f: row[f] for f in _TASK_FIELDS}
        values["spec"] = orjson.loads(values["spec"])
        return TaskRecord(**values)

    def put_tasks(self, tasks: list[TaskRecord]) -> None:
        rows = self._task_rows(tasks)
        with self._tx() as db:
            self._insert_tasks(db, rows)

    @staticmethod
    def _task_rows(tasks: list[TaskRecord]) -> list[list]:
        """The tasks as rows of the tasks table (not asdict: it deep-copies the spec)."""
        return [[ids.key(t.job) if f == "job" else _dumps(t.spec) if f == "spec" else getattr(t, f) for f in _TASK_FIELDS] for t in tasks]

    @staticmethod
    def _insert_tasks(db: sqlite3.Connection, rows: list[list]) -> None:
        db.executemany(f"INSERT INTO tasks ({','.join(_TASK_FIELDS)}) VALUES ({','.join('?' * len(_TASK_FIELDS))})", rows)

    def tasks(self, *, job: str | None = None, node: str | None = None, states: Iterable[str] | None = None) -> list[TaskRecord]:
        sql, args = "SELECT * FROM tasks WHERE 1=1", []
        if job is not None:
            sql += " AND job=?"
            args.append(ids.key(job))
        if node is not None:
            sql += " AND node=?"
            args.append(node)
        if states is not None:
            states = list(states)
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += states
        return [self._task(r) for r in self._db().execute(sql + " ORDER BY rowid", args).fetchall()]

    def get_task(self, task_id: str) -> TaskRecord | None:
        row = self._db().execute("SELECT * FROM tasks WHERE id=?", (task_id,)).fetchone()
        return self._task(row) if row else None

    def update_task(self, task_id: str, *, only_if_state: Iterable[str] | None = None, **changes) -> bool:
        return self._write(*_task_update(task_id, only_if_state, changes))[0] == 1

    # -- operations ---------------------------------------------------------------------
    def create_operation(self, op_id: str, kind: str, resource_id: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO operations VALUES (?,?,?,?,?,?)", (op_id, kind, resource_id, "InProgress", None, time.time()))

    def get_operation(self, op_id: str) -> dict | None:
        row = self._db().execute("SELECT * FROM operations WHERE id=?", (op_id,)).fetchone()
        return dict(row) if row else None

    def operations(self, status: str) -> list[dict]:
        return [dict(r) for r in self._db().execute("SELECT * FROM operations WHERE status=?", (status,)).fetchall()]

    def finish_operation(self, op_id: str, status: str, error: str | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE operations SET status=?, error=? WHERE id=?", (status, error, op_id))

    # -- settings -----------------------------------------------------------------------
    def setting(self, name: str, default) -> str:
        with self._tx() as db:
            row = db.execute("SELECT value FROM settings WHERE name=?", (name,)).fetchone()
            if row:
                return row[0]
            value = default()
            db.execute("INSERT INTO settings VALUES (?, ?)", (name, value))
            return value

    def set_flag(self, name: str) -> bool:
        """Raise a flag; true if it was down (so the caller is the one to act on it)."""
        return self._write("INSERT OR IGNORE INTO settings VALUES (?, '1')", (f"flag:{name}",))[0] == 1

    def clear_flag(self, name: str) -> None:
        self._write("DELETE FROM settings WHERE name=?", (f"flag:{name}",))

    # -- tokens and the audit log -----------------------------------------------------------
    def put_token(self, token: dict) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO tokens VALUES (?, ?)", (token["id"], _dumps(token)))

    def get_token(self, token_id: str) -> dict | None:
        row = self._db().execute("SELECT doc FROM tokens WHERE id=?", (token_id,)).fetchone()
        return orjson.loads(row[0]) if row else None

    def tokens(self) -> list[dict]:
        docs = [orjson.loads(r[0]) for r in self._db().execute("SELECT doc FROM tokens").fetchall()]
        return sorted(docs, key=itemgetter("created"))

    def revoke_token(self, token_id: str) -> dict | None:
        with self._tx() as db:
            row = db.execute("SELECT doc FROM tokens WHERE id=?", (token_id,)).fetchone()
            if row is None:
                return None
            token = {**orjson.loads(row[0]), "revoked": True}
            db.execute("UPDATE tokens SET doc=? WHERE id=?", (_dumps(token), token_id))
            return token

    def record_audit(self, entry: dict) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO audit (ts, principal, action, resource, result, doc) VALUES (?,?,?,?,?,?)",
                (entry["ts"], entry["principal"], entry["action"], entry["resource"], entry["result"], _dumps(entry)),
            )

    def audit_log(self, *, after_seq: int = 0, limit: int = 100, **filters) -> list[dict]:
        where, params = ["seq > ?"], [after_seq]
        for name in ("principal", "action", "result"):
            if filters.get(name) is not None:
                where.append(f"{name} = ?")
                params.append(filters[name])
        if filters.get("resource"):
            where.append("(lower(resource) = ? OR lower(resource) LIKE ? ESCAPE '\\')")
            key = filters["resource"].rstrip("/").lower()
            params += [key, key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"]
        if filters.get("since") is not None:
            where.append("ts >= ?")
            params.append(filters["since"])
        if filters.get("until") is not None:
            where.append("ts < ?")
            params.append(filters["until"])
        rows = self._db().execute(f"SELECT seq, doc FROM audit WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?", (*params, limit))
        return [{**orjson.loads(doc), "seq": seq} for seq, doc in rows.fetchall()]
