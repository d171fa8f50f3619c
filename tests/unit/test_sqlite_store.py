"""The SQLite store: hierarchy, compare-and-set mutations, gang claims, cascading deletes."""

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from batchai.adapters.sqlite_store import SqliteStore
from batchai.ports import Conflict, JobSummary, NodeRecord, Record, TaskRecord

WS = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.BatchAI/workspaces/ws"
CL = WS + "/clusters/c1"
EXP = WS + "/experiments/e1"


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "store.db")
    s.create(Record(WS, "workspaces", "ws", "/subscriptions/s/resourceGroups/rg", {"properties": {}}))
    s.create(Record(CL, "clusters", "c1", WS, {"properties": {}}))
    s.create(Record(EXP, "experiments", "e1", WS, {"properties": {}}))
    return s


def job(name, state="queued"):
    return Record(f"{EXP}/jobs/{name}", "jobs", name, EXP, {"properties": {"executionState": state, "cluster": {"id": CL}}})


def test_wal_and_create_conflict(store):
    assert store._db().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(Conflict):
        store.create(Record(WS.upper().replace("SUBSCRIPTIONS", "subscriptions"), "workspaces", "ws", None, {}))


def test_children_paging_and_case_insensitive_get(store):
    for i in range(5):
        store.create(job(f"j{i}"))
    first = store.children(EXP, "jobs", limit=2)
    rest = store.children(EXP, "jobs", after_seq=first[-1].seq)
    assert [r.name for r in first + rest] == [f"j{i}" for i in range(5)]
    assert store.get((EXP + "/jobs/J3").upper().replace("SUBSCRIPTIONS", "subscriptions")).name == "j3"
    assert [r.name for r in store.workspaces("/subscriptions/s")] == ["ws"]


def test_mutation_is_compare_and_set(store):
    store.create(job("j"))
    winners = []

    def finish(tag):
        def change(r):
            if r.properties["executionState"] != "queued":
                return None
            r.properties["executionState"] = tag
            return r

        if store.mutate(f"{EXP}/jobs/j", change):
            winners.append(tag)

    threads = [threading.Thread(target=finish, args=(f"t{i}",)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(winners) == 1
    assert store.jobs(states=winners, cluster=CL)[0].name == "j"


def test_claim_nodes_all_or_nothing(store):
    for i in range(3):
        store.put_node(NodeRecord(f"n{i}", CL, f"node-{i}", "idle"))
    assert store.claim_nodes(CL, f"{EXP}/jobs/a", ["n0", "n1"])
    assert not store.claim_nodes(CL, f"{EXP}/jobs/b", ["n1", "n2"])  # n1 taken: nothing claimed
    assert store.get_node("n2").job is None
    assert not store.claim_nodes(CL, f"{EXP}/jobs/a", ["n2"])  # a job holds one gang at a time
    assert sorted(store.release_nodes(f"{EXP}/jobs/a")) == ["n0", "n1"]
    assert {n.state for n in store.nodes(CL)} == {"idle"}


def test_task_transitions_are_conditional(store):
    store.put_tasks([TaskRecord("t1", f"{EXP}/jobs/a", "n0", 1, {"x": 1})])
    assert store.update_task("t1", only_if_state=["pending"], state="running")
    assert not store.update_task("t1", only_if_state=["pending"], state="running")
    assert store.tasks(job=f"{EXP}/jobs/a")[0].spec == {"x": 1}


def test_delete_tree_cascades(store):
    store.create(job("j"))
    store.put_node(NodeRecord("n0", CL, "node-0", "idle"))
    deleted = store.delete_tree(WS)
    assert {r.type for r in deleted} == {"workspaces", "clusters", "experiments", "jobs"}
    assert store.get(CL) is None and store.nodes(CL) == []


def test_settings_survive_reopen(store, tmp_path):
    key = store.setting("k", lambda: "v1")
    assert SqliteStore(tmp_path / "store.db").setting("k", lambda: "other") == key == "v1"


def test_job_summaries_follow_every_write_and_older_data_dirs_are_migrated(store, tmp_path):
    record = job("j")
    record.body["properties"].update(nodeCount=2, schedulingPriority="high", constraints={"maxWallClockTime": "PT1H"})
    store.create(record)
    store.mutate(record.id, lambda r: (r.body["properties"].update(executionState="running", executionInfo={"startTime": "T"}), r)[1])
    expected = JobSummary(
        id=record.id, seq=4, parent=EXP.lower(), state="running", node_count=2, priority="high", max_wall_clock="PT1H", start_time="T"
    )
    assert store.job_summaries(CL, ["running"]) == [expected]
    assert store.job_summaries(CL, ["queued"]) == []

    db = store._db()  # a data dir from before the scheduling columns existed
    db.execute("DROP INDEX resources_queue_head")
    for column in ("node_count", "priority", "wall_clock", "start_time", "gpus_per_node"):
        db.execute(f"ALTER TABLE resources DROP COLUMN {column}")
    db.commit()
    assert SqliteStore(tmp_path / "store.db").job_summaries(CL, ["running"]) == [expected]


INCREMENTS = """
import sys
from batchai.adapters.sqlite_store import SqliteStore
store = SqliteStore(sys.argv[1])
for _ in range(100):
    store.mutate(sys.argv[2], lambda r: (r.properties.update(n=r.properties.get("n", 0) + 1), r)[1])
"""


def test_writers_in_several_processes_lose_no_update(store, tmp_path):
    """The control plane's API workers write the same file: compare-and-set holds across processes."""
    root = str(Path(__file__).resolve().parents[2])
    procs = [
        subprocess.Popen([sys.executable, "-c", INCREMENTS, str(tmp_path / "store.db"), EXP], env={"PYTHONPATH": root}) for _ in range(3)
    ]
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    assert store.get(EXP).properties["n"] == 300


def test_the_wal_starts_over_while_reads_go_on(tmp_path, monkeypatch):
    """Passive checkpoints alone let the WAL grow for as long as some reader is at work (a busy control plane
    always has one: with RESTART_EVERY out of reach this WAL ends over 2 MB); a restart checkpoint now and
    then keeps it to a few checkpoints' worth."""
    from batchai.adapters import sqlite_db

    monkeypatch.setattr(sqlite_db, "CHECKPOINT_EVERY", 10)
    monkeypatch.setattr(sqlite_db, "RESTART_EVERY", 2)
    store = SqliteStore(tmp_path / "store.db")
    store.put_node(NodeRecord("n0", CL, "node-0", "idle"))
    stop = threading.Event()

    def read():
        while not stop.is_set():
            store.nodes(CL)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for i in range(1500):
            store.update_node("n0", last_seen=float(i))
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    wal = (tmp_path / "store.db-wal").stat().st_size
    assert wal < 500_000, wal  # 20 commits' worth, and a margin
