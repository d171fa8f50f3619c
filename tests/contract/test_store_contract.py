"""The Store port's contract, run on every adapter: SQLite (embedded) and Cosmos DB (the stand-in).

Whatever an adapter does inside, the control plane sees the same hierarchy, the same creation
order, the same compare-and-set and the same all-or-nothing gang claims.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from azure.cosmos.exceptions import CosmosHttpResponseError

from batchai.adapters.cosmos_store import CosmosStore
from batchai.adapters.sqlite_store import SqliteStore
from batchai.ports import Conflict, JobSummary, Launch, NodeRecord, Record, Store, TaskRecord
from batchai.scheduling import queue_order
from batchai.scheduling_pass import queued_job
from tests.support.cosmos_server import client, cosmos_server

RG = "/subscriptions/s/resourceGroups/rg"
WS = RG + "/providers/Microsoft.BatchAI/workspaces/ws"
CL = WS + "/clusters/c1"
EXP = WS + "/experiments/e1"


@pytest.fixture(scope="module")
def cosmos_url() -> Iterator[str]:
    with cosmos_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "cosmos"])
def store(request: pytest.FixtureRequest, tmp_path) -> Store:
    if request.param == "sqlite":
        s: Store = SqliteStore(tmp_path / "store.db")
    else:
        s = CosmosStore(client(request.getfixturevalue("cosmos_url")), f"db-{uuid.uuid4().hex}")
    s.create(workspace(WS))
    s.create(Record(CL, "clusters", "c1", WS, {"properties": {}}))
    s.create(Record(EXP, "experiments", "e1", WS, {"properties": {}}))
    return s


def workspace(rid: str) -> Record:
    return Record(rid, "workspaces", rid.rsplit("/", 1)[-1], rid.split("/providers/")[0], {"properties": {}})


def job(name: str, state: str = "queued", cluster: str = CL, exp: str = EXP) -> Record:
    return Record(f"{exp}/jobs/{name}", "jobs", name, exp, {"properties": {"executionState": state, "cluster": {"id": cluster}}})


def shouted(rid: str) -> str:
    """The same ARM id spelled in another case."""
    return rid.upper().replace("SUBSCRIPTIONS", "subscriptions")


def race(n: int, fn: Callable[[int], object]) -> list[object]:
    """Run fn(0..n-1) on n threads at once; their results."""
    results: list[object] = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return results


# -- resources ---------------------------------------------------------------------------------
def test_create_conflicts_on_an_existing_id_in_any_case(store):
    with pytest.raises(Conflict):
        store.create(workspace(shouted(WS)))
    created = store.create(job("j"))
    assert created.etag and created.seq > store.get(EXP).seq


def test_get_ignores_case_and_keeps_the_first_spelling(store):
    store.create(job("MixedCase"))
    got = store.get(shouted(f"{EXP}/jobs/mixedcase"))
    assert (got.id, got.name, got.type, got.parent) == (f"{EXP}/jobs/MixedCase", "MixedCase", "jobs", EXP.lower())
    assert got.properties == {"executionState": "queued", "cluster": {"id": CL}}
    assert store.get(f"{EXP}/jobs/absent") is None


def test_children_page_in_creation_order(store):
    for i in range(5):
        store.create(job(f"j{i}"))
    first = store.children(shouted(EXP), "jobs", limit=2)
    rest = store.children(EXP, "jobs", after_seq=first[-1].seq)
    assert [r.name for r in first + rest] == [f"j{i}" for i in range(5)]
    assert [r.name for r in store.children(WS, "clusters")] == ["c1"]
    assert store.children(WS, "jobs") == []
    assert [r.name for r in store.children(RG, "workspaces")] == ["ws"]


def test_workspaces_by_subscription_or_resource_group_prefix(store):
    store.create(workspace(RG + "/providers/Microsoft.BatchAI/workspaces/ws2"))
    store.create(workspace("/subscriptions/s/resourceGroups/other/providers/Microsoft.BatchAI/workspaces/ws3"))
    store.create(workspace("/subscriptions/s2/resourceGroups/rg/providers/Microsoft.BatchAI/workspaces/elsewhere"))
    assert [r.name for r in store.workspaces("/subscriptions/s")] == ["ws", "ws2", "ws3"]
    assert [r.name for r in store.workspaces(shouted(RG))] == ["ws", "ws2"]
    first = store.workspaces("/subscriptions/s", limit=1)
    assert [r.name for r in store.workspaces("/subscriptions/s", after_seq=first[0].seq, limit=5)] == ["ws2", "ws3"]


def test_mutate_is_compare_and_set_with_one_winner_of_eight(store):
    before = store.create(job("j"))

    def finish(i: int) -> bool:
        def change(r: Record) -> Record | None:
            if r.properties["executionState"] != "queued":
                return None
            r.properties["executionState"] = f"t{i}"
            return r

        return store.mutate(shouted(f"{EXP}/jobs/j"), change) is not None

    assert sum(race(8, finish)) == 1
    after = store.get(f"{EXP}/jobs/j")
    assert after.etag != before.etag and after.seq == before.seq
    assert store.mutate(f"{EXP}/jobs/j", lambda r: None) is None
    assert store.get(f"{EXP}/jobs/j").etag == after.etag  # refusing changes nothing
    assert store.mutate(f"{EXP}/jobs/absent", lambda r: r) is None


@pytest.mark.parametrize("write", ["mutate", "end_job", "start_jobs"])
def test_a_change_is_applied_to_the_record_as_written_not_as_first_read(store, write):
    """A write that lands between the read a change was first applied to and the change's own write is kept:
    the change is applied again, to the record as it is then."""
    jid = f"{EXP}/jobs/j"
    store.create(job("j"))
    store.put_node(NodeRecord("n1", CL, "n1", "idle"))
    calls = []

    def change(r: Record) -> Record:
        if not calls:  # another writer, between this change's read and its write
            other = threading.Thread(target=store.mutate, args=(jid, lambda o: (o.internal.update(other=True), o)[1]))
            other.start()
            other.join(10)
        calls.append(dict(r.internal))
        r.internal["mine"] = True
        return r

    if write == "mutate":
        after = store.mutate(jid, change)
    elif write == "end_job":
        after, _ = store.end_job(jid, change)
    else:
        [after] = store.start_jobs(CL, [Launch(jid, ["n1"], change, [TaskRecord("t1", jid, "n1", 1, {})])])
    assert after is not None and after.internal == {"other": True, "mine": True}
    assert store.get(jid).internal == after.internal and calls[-1] == {"other": True}


def test_mutate_keeps_the_indexed_fields_current(store):
    store.create(job("j"))
    store.mutate(f"{EXP}/jobs/j", lambda r: (r.properties.update(executionState="running"), r)[1])
    assert [r.name for r in store.jobs(states=["running"])] == ["j"]
    assert store.jobs(states=["queued"]) == []


def test_delete_tree_cascades_to_children_tasks_and_nodes(store):
    store.create(job("j"))
    store.put_node(NodeRecord("n0", CL, "node-0", "idle"))
    store.put_node(NodeRecord("n1", CL, "node-1", "idle"))
    assert store.claim_nodes(CL, f"{EXP}/jobs/j", ["n0"])
    store.put_tasks([TaskRecord("t0", f"{EXP}/jobs/j", "n0", 1, {})])

    before = time.time()
    deleted = store.delete_tree(shouted(EXP))
    assert [r.type for r in deleted] == ["jobs", "experiments"]  # children first
    assert store.get(f"{EXP}/jobs/j") is None and store.get(CL) is not None
    assert store.tasks(job=f"{EXP}/jobs/j") == []
    freed = store.get_node("n0")
    assert (freed.state, freed.job) == ("idle", None) and freed.idle_since >= before  # idle from now on

    deleted = store.delete_tree(WS)
    assert [r.type for r in deleted] == ["clusters", "workspaces"]
    assert store.nodes(CL) == [] and store.get(WS) is None


def test_jobs_by_state_and_cluster_in_submission_order(store):
    other = WS + "/clusters/c2"
    store.create(Record(other, "clusters", "c2", WS, {"properties": {}}))
    store.create(job("a", "queued"))
    store.create(job("b", "running", cluster=other))
    store.create(job("c", "queued", cluster=other))
    store.create(job("d", "succeeded"))
    assert [r.name for r in store.jobs(states=["queued", "running"])] == ["a", "b", "c"]
    assert [r.name for r in store.jobs(states=["queued", "running"], cluster=shouted(other))] == ["b", "c"]
    assert store.jobs(states=[]) == []


def test_job_summaries_carry_what_scheduling_reads(store):
    high = job("high")
    high.properties.update(nodeCount=2, schedulingPriority="high", constraints={"maxWallClockTime": "PT1H"})
    store.create(high)
    store.create(job("plain"))
    store.create(job("done", "succeeded"))
    store.mutate(high.id, lambda r: (r.properties.update(executionState="running", executionInfo={"startTime": "T"}), r)[1])
    summaries = store.job_summaries(shouted(CL), ["queued", "running"])
    assert summaries == [
        JobSummary(
            id=high.id,
            seq=high.seq,
            parent=EXP.lower(),
            state="running",
            node_count=2,
            priority="high",
            max_wall_clock="PT1H",
            start_time="T",
        ),
        JobSummary(
            id=f"{EXP}/jobs/plain",
            seq=store.get(f"{EXP}/jobs/plain").seq,
            parent=EXP.lower(),
            state="queued",
            node_count=None,
            priority=None,
            max_wall_clock=None,
            start_time=None,
        ),
    ]
    assert store.job_summaries(CL, ["failed"]) == []


def test_queue_head_holds_the_first_jobs_of_the_queue_order(store):
    experiments = [EXP, WS + "/experiments/e2", WS + "/experiments/e3"]
    for exp in experiments[1:]:
        store.create(Record(exp, "experiments", exp.rsplit("/", 1)[1], WS, {"properties": {}}))
    priorities = [None, "high", "normal", "low"]
    for i in range(24):
        record = job(f"j{i:02d}", "running" if i % 7 == 3 else "queued", exp=experiments[i * 5 % 3])
        if priorities[i * 7 % 4]:
            record.properties["schedulingPriority"] = priorities[i * 7 % 4]
        store.create(record)
    queue = [queued_job(s) for s in store.job_summaries(CL, ["queued"])]
    for depth in (1, 2, 5, 30):
        head = store.queue_head(shouted(CL), depth)
        assert {q.id for q in queue_order(queue)[:depth]} <= {s.id for s in head}
        assert [s.seq for s in head] == sorted(s.seq for s in head)
        assert {s.state for s in head} == {"queued"} and len(head) == len({s.id for s in head})
    assert len(store.queue_head(CL, 30)) == len(queue)
    assert store.queue_head(WS + "/clusters/none", 5) == []


# -- nodes -------------------------------------------------------------------------------------
def test_nodes_put_get_update_list_delete(store):
    other = WS + "/clusters/c2"
    store.put_node(NodeRecord("n1", shouted(CL), "node-b", "starting", pid=7, machine="batchai-k/3"))
    store.put_node(NodeRecord("n0", CL, "node-a", "idle"))
    store.put_node(NodeRecord("m0", other, "node-a", "idle"))
    assert store.get_node("n1") == NodeRecord("n1", CL.lower(), "node-b", "starting", pid=7, machine="batchai-k/3")
    assert store.get_node("n1").handle() == {"id": "n1", "pid": 7, "root": None, "machine": "batchai-k/3"}
    assert store.get_node("absent") is None

    updated = store.update_node("n1", state="idle", address="10.0.0.1", last_seen=12.5)
    assert (updated.state, updated.address, updated.last_seen, updated.pid) == ("idle", "10.0.0.1", 12.5, 7)
    assert store.update_node("n1") == updated
    assert store.update_node("absent", state="idle") is None

    assert [n.id for n in store.nodes(CL)] == ["n0", "n1"]  # by name
    assert [n.id for n in store.nodes()] == ["n0", "n1", "m0"]  # by cluster, then name
    store.put_node(NodeRecord("n0", CL, "node-a", "leaving"))  # a put replaces
    assert store.get_node("n0").state == "leaving"

    store.delete_node("n0")
    store.delete_node("absent")
    assert [n.id for n in store.delete_nodes(other)] == ["m0"]
    assert [n.id for n in store.nodes()] == ["n1"]


def test_touch_nodes_raises_last_seen_never_lowers_it_and_skips_nodes_that_are_gone(store):
    store.put_node(NodeRecord("n0", CL, "node-a", "idle", last_seen=10.0))
    store.put_node(NodeRecord("n1", CL, "node-b", "running", job=f"{EXP}/jobs/a", last_seen=50.0))
    store.touch_nodes({"n0": 20.0, "n1": 40.0, "gone": 30.0})
    assert {n.id: n.last_seen for n in store.nodes(CL)} == {"n0": 20.0, "n1": 50.0}
    assert store.get_node("gone") is None
    assert (store.get_node("n1").state, store.get_node("n1").job) == ("running", f"{EXP}/jobs/a")  # nothing else changes


def test_claim_nodes_is_all_or_nothing_and_one_gang_per_job(store):
    for i in range(4):
        store.put_node(NodeRecord(f"n{i}", CL, f"node-{i}", "idle"))
    store.put_node(NodeRecord("busy", CL, "node-busy", "starting"))
    store.put_node(NodeRecord("far", WS + "/clusters/c2", "node-far", "idle"))
    a, b = f"{EXP}/jobs/a", f"{EXP}/jobs/b"

    assert store.claim_nodes(CL, a, ["n0", "n1"])
    assert not store.claim_nodes(CL, b, ["n2", "n1"])  # n1 taken: n2 given back
    assert not store.claim_nodes(CL, b, ["n2", "busy"])  # not idle
    assert not store.claim_nodes(CL, b, ["n2", "far"])  # another cluster's
    assert not store.claim_nodes(CL, b, ["n2", "absent"])
    assert (store.get_node("n2").state, store.get_node("n2").job) == ("idle", None)
    assert not store.claim_nodes(CL, shouted(a), ["n2"])  # a job holds one gang at a time
    assert {n.id: n.job for n in store.nodes(CL) if n.job} == {"n0": a.lower(), "n1": a.lower()}
    assert {store.get_node(i).state for i in ("n0", "n1")} == {"running"}


def test_claims_racing_for_the_same_nodes_leave_no_partial_gang(store):
    gang = [f"n{i}" for i in range(4)]
    for node_id in gang:
        store.put_node(NodeRecord(node_id, CL, f"node-{node_id}", "idle"))
    won = race(8, lambda i: store.claim_nodes(CL, f"{EXP}/jobs/j{i}", gang if i % 2 else gang[::-1]))
    assert sum(won) <= 1
    holders = {n.job for n in store.nodes(CL)}
    assert holders == ({f"{EXP}/jobs/j{won.index(True)}".lower()} if any(won) else {None})


def test_release_frees_a_jobs_nodes(store):
    for i in range(3):
        store.put_node(NodeRecord(f"n{i}", CL, f"node-{i}", "idle"))
    assert store.claim_nodes(CL, f"{EXP}/jobs/a", ["n0", "n1"])
    store.update_node("n1", state="unusable")
    started = time.time()
    assert sorted(store.release_nodes(shouted(f"{EXP}/jobs/a"))) == ["n0", "n1"]
    n0, n1 = store.get_node("n0"), store.get_node("n1")
    assert (n0.state, n0.job, n1.state, n1.job) == ("idle", None, "unusable", None)
    assert n0.idle_since >= started
    assert store.release_nodes(f"{EXP}/jobs/a") == []


def test_placeable_nodes_are_the_free_ones_and_gpu_sharers_of_the_cluster(store):
    gpus = '[{"index": "0"}]'
    store.put_node(NodeRecord("f", CL, "node-f", "idle"))
    store.put_node(NodeRecord("a", CL, "node-a", "idle"))
    store.put_node(NodeRecord("held", CL, "node-h", "idle"))
    store.put_node(NodeRecord("shared", CL, "node-s", "running", gpus=gpus, shares='{"j": ["0"]}'))
    store.put_node(NodeRecord("busy", CL, "node-b", "running"))
    store.put_node(NodeRecord("booting", CL, "node-c", "starting"))
    store.put_node(NodeRecord("lost", CL, "node-l", "unusable"))
    store.put_node(NodeRecord("elsewhere", WS + "/clusters/c2", "node-e", "idle"))
    assert store.claim_nodes(CL, f"{EXP}/jobs/a", ["held"])
    assert [n.id for n in store.placeable_nodes(shouted(CL))] == ["a", "f", "shared"]  # by name
    assert all(n.may_take_jobs() for n in store.placeable_nodes(CL))
    store.release_nodes(f"{EXP}/jobs/a")
    assert [n.id for n in store.placeable_nodes(CL)] == ["a", "f", "held", "shared"]


def test_end_job_applies_its_change_and_frees_its_nodes_or_neither(store):
    job = f"{EXP}/jobs/a"
    store.create(Record(id=job, type="jobs", name="a", parent=EXP, body={"properties": {"executionState": "running"}}))
    for i in range(2):
        store.put_node(NodeRecord(f"n{i}", CL, f"node-{i}", "idle"))
    assert store.claim_nodes(CL, job, ["n0", "n1"])
    assert store.end_job(shouted(job), lambda r: None) == (None, [])  # refused: the nodes stay its own
    assert [n.job for n in store.nodes(CL)] == [job.lower()] * 2

    def finish(record):
        record.properties["executionState"] = "succeeded"
        return record

    ended, freed = store.end_job(job, finish)
    assert ended.properties["executionState"] == "succeeded" and sorted(freed) == ["n0", "n1"]
    assert [n.job for n in store.nodes(CL)] == [None, None]
    assert store.end_job(f"{EXP}/jobs/absent", finish) == (None, [])


def test_end_job_stops_the_tasks_it_is_given_only_when_its_change_applies(store):
    job = f"{EXP}/jobs/a"
    store.create(Record(id=job, type="jobs", name="a", parent=EXP, body={"properties": {"executionState": "running"}}))
    states = {"pending": "pending", "holder": "running", "worker": "running", "done": "finished", "idle-worker": "pending"}
    store.put_tasks([TaskRecord(t, job, "n0", 1, {}, state=state) for t, state in states.items()])
    stops = {"ending": ["pending", "holder", "done"], "killing": ["worker", "idle-worker"]}
    assert store.end_job(job, lambda r: None, **stops) == (None, [])  # refused: the tasks are untouched
    assert {t.id: t.state for t in store.tasks(job=job)} == states

    def finish(record):
        record.properties["executionState"] = "succeeded"
        return record

    ended, _ = store.end_job(job, finish, **stops)
    assert ended is not None
    after = {t.id: t for t in store.tasks(job=job)}
    # pending and running ones it ends now; a finished one keeps its result; only running ones are to be killed
    assert {t: after[t].state for t in states} == {
        "pending": "finished",
        "holder": "finished",
        "worker": "killing",
        "done": "finished",
        "idle-worker": "pending",
    }
    assert after["pending"].error == after["holder"].error == "terminated" and after["holder"].end_time
    assert after["done"].error is None and after["done"].end_time is None


def test_end_job_stores_the_deciding_result_first_and_nothing_when_the_task_was_finished_already(store):
    job = f"{EXP}/jobs/a"
    store.create(Record(id=job, type="jobs", name="a", parent=EXP, body={"properties": {"executionState": "running"}}))
    store.put_node(NodeRecord("n0", CL, "node-0", "idle"))
    assert store.claim_nodes(CL, job, ["n0"])
    store.put_tasks([TaskRecord("t", job, "n0", 1, {}, state="running", boot_id="b")])
    result = {"state": "finished", "exit_code": 0, "error": None, "end_time": "2026-01-01T00:00:00.000Z"}

    def finish(record):
        record.properties["executionState"] = "succeeded"
        return record

    ended, freed = store.end_job(job, finish, finished=("t", result))
    assert ended.properties["executionState"] == "succeeded" and freed == ["n0"]
    stored = store.get_task("t")
    assert (stored.state, stored.exit_code, stored.end_time) == ("finished", 0, result["end_time"])
    # the same report again (an answer lost on the way): the task keeps its first result, and nothing else is done
    store.create(Record(id=f"{EXP}/jobs/b", type="jobs", name="b", parent=EXP, body={"properties": {"executionState": "running"}}))
    assert store.end_job(f"{EXP}/jobs/b", finish, finished=("t", {**result, "exit_code": 3})) == (None, [])
    assert store.get(f"{EXP}/jobs/b").properties["executionState"] == "running" and store.get_task("t").exit_code == 0
    # a refused change leaves the result stored
    store.put_tasks([TaskRecord("u", job, "n0", 1, {}, state="killing", boot_id="b")])
    assert store.end_job(job, lambda r: None, finished=("u", result)) == (None, [])
    assert store.get_task("u").state == "finished"


# -- tasks -------------------------------------------------------------------------------------
def test_tasks_query_and_conditional_updates(store):
    a, b = f"{EXP}/jobs/a", f"{EXP}/jobs/b"
    store.put_tasks([TaskRecord("t2", a, "n0", 1, {"x": [1, 2]}), TaskRecord("t1", a, "n1", 1, {})])
    store.put_tasks([TaskRecord("t3", b, "n0", 2, {}, state="running")])
    assert [t.id for t in store.tasks(job=shouted(a))] == ["t2", "t1"]  # in the order they were put
    assert [t.id for t in store.tasks(node="n0")] == ["t2", "t3"]
    assert [t.id for t in store.tasks(node="n0", states=["running"])] == ["t3"]
    assert [t.id for t in store.tasks()] == ["t2", "t1", "t3"]
    assert store.tasks(job=a)[0] == TaskRecord("t2", a.lower(), "n0", 1, {"x": [1, 2]})

    assert store.update_task("t2", only_if_state=["pending"], state="running", boot_id="b1")
    assert not store.update_task("t2", only_if_state=["pending"], state="running")
    assert store.update_task("t2", state="finished", exit_code=0, end_time="E")
    assert not store.update_task("absent", state="finished")
    t2 = store.tasks(job=a, states=["finished"])[0]
    assert (t2.state, t2.boot_id, t2.exit_code, t2.end_time) == ("finished", "b1", 0, "E")
    assert store.get_task("t2") == t2
    assert store.get_task("absent") is None


def test_a_task_transition_has_one_winner_of_eight(store):
    store.put_tasks([TaskRecord("t", f"{EXP}/jobs/a", "n0", 1, {})])
    won = race(8, lambda i: store.update_task("t", only_if_state=["pending"], state="running", boot_id=f"b{i}"))
    assert sum(won) == 1
    assert store.tasks()[0].boot_id == f"b{won.index(True)}"


# -- operations, flags, settings ---------------------------------------------------------------
def test_operations_progress_to_a_status(store):
    store.create_operation("op1", "delete", CL)
    store.create_operation("op2", "create", EXP)
    op1 = store.get_operation("op1")
    assert {k: op1[k] for k in ("id", "kind", "resource", "status", "error")} == {
        "id": "op1",
        "kind": "delete",
        "resource": CL,
        "status": "InProgress",
        "error": None,
    }
    assert op1["created"] <= time.time()
    assert [o["id"] for o in store.operations("InProgress")] == ["op1", "op2"]
    store.finish_operation("op1", "Failed", "boom")
    assert (store.get_operation("op1")["status"], store.get_operation("op1")["error"]) == ("Failed", "boom")
    assert [o["id"] for o in store.operations("InProgress")] == ["op2"]
    assert store.get_operation("absent") is None


def test_a_flag_is_raised_by_one_caller_until_cleared(store):
    assert sum(race(8, lambda i: store.set_flag("wake:c1"))) == 1
    assert not store.set_flag("wake:c1")
    assert store.set_flag("wake:c2")
    store.clear_flag("wake:c1")
    store.clear_flag("never-raised")
    assert store.set_flag("wake:c1")


def test_a_setting_is_created_once_and_read_by_everyone_after(store):
    values = race(8, lambda i: store.setting("signing_key", lambda: f"v{i}"))
    assert len(set(values)) == 1
    assert store.setting("signing_key", lambda: "other") == values[0]
    assert store.setting("other", lambda: "x") == "x"


def test_start_jobs_claims_changes_and_puts_tasks_of_each_launch_or_nothing_of_it(store):
    cluster, job, other, third = f"{WS}/clusters/c", f"{EXP}/jobs/j", f"{EXP}/jobs/other", f"{EXP}/jobs/third"
    for name in ("j", "other", "third"):
        store.create(Record(id=f"{EXP}/jobs/{name}", type="jobs", name=name, parent=EXP, body={"properties": {"cluster": {"id": cluster}}}))
    for n in ("n1", "n2", "n3"):
        store.put_node(NodeRecord(n, cluster, n, "idle"))

    def start(r: Record) -> Record:
        r.properties["executionState"] = "running"
        return r

    refused = store.start_jobs(cluster, [Launch(job, ["n1"], lambda r: None, [TaskRecord("t0", job, "n1", 1, {})])])
    assert refused == [None]
    assert store.get_node("n1").job is None and store.tasks(job=job) == []  # a refused change gives the claim back
    started = store.start_jobs(
        cluster,
        [
            Launch(job, ["n1"], start, [TaskRecord("t1", job, "n1", 1, {"k": 1})]),
            Launch(other, ["n1", "n2"], start, [TaskRecord("t2", other, "n2", 1, {})]),  # n1 is taken: refused alone
            Launch(third, ["n2", "n3"], start, [TaskRecord("t3", third, "n3", 1, {})]),
        ],
    )
    assert [r.properties["executionState"] if r else None for r in started] == ["running", None, "running"]
    assert store.get(job).properties["executionState"] == "running" and store.get(other).properties.get("executionState") is None
    assert store.get_node("n1").job == job.lower() and [t.id for t in store.tasks(job=job)] == ["t1"]
    assert store.tasks(job=other) == [] and [t.id for t in store.tasks(job=third)] == ["t3"]
    assert store.get_node("n2").job == store.get_node("n3").job == third.lower()


# -- tokens and the audit log ------------------------------------------------------------------
def test_tokens_are_put_read_listed_in_creation_order_and_revoked(store):
    first = {"id": "a1", "name": "one", "role": "Reader", "scope": "/", "hash": "h1", "created": 2.0, "revoked": False}
    second = {**first, "id": "a0", "name": "two", "created": 3.0}
    store.put_token(second)
    store.put_token(first)
    assert store.get_token("a1") == first and store.get_token("missing") is None
    assert [t["id"] for t in store.tokens()] == ["a1", "a0"]
    assert store.revoke_token("a1") == {**first, "revoked": True}
    assert store.get_token("a1")["revoked"] is True and store.get_token("a0")["revoked"] is False
    assert store.revoke_token("missing") is None


def audit_entry(ts: float, principal: str, action: str, resource: str, result: int) -> dict:
    return {"ts": ts, "time": "t", "principal": principal, "action": action, "resource": resource, "result": result}


def test_audit_entries_come_back_in_order_paged_and_filtered(store):
    entries = [
        audit_entry(10.0, "token:a", "Microsoft.BatchAI/workspaces/write", WS, 200),
        audit_entry(11.0, "anonymous", "authenticate", CL, 401),
        audit_entry(
            12.0, "token:a", "Microsoft.BatchAI/workspaces/experiments/write", EXP.upper().replace("SUBSCRIPTIONS", "subscriptions"), 200
        ),
        audit_entry(13.0, "token:b", "Microsoft.BatchAI/workspaces/write", WS + "x", 403),  # another workspace, not under WS
    ]
    for entry in entries:
        store.record_audit(entry)
    everything = store.audit_log()
    assert [e["ts"] for e in everything] == [10.0, 11.0, 12.0, 13.0]
    assert [e["seq"] for e in everything] == sorted({e["seq"] for e in everything})
    assert {k: v for k, v in everything[1].items() if k != "seq"} == entries[1]
    page = store.audit_log(limit=2)
    assert [e["ts"] for e in page] == [10.0, 11.0] and [e["ts"] for e in store.audit_log(after_seq=page[-1]["seq"])] == [12.0, 13.0]
    assert [e["ts"] for e in store.audit_log(principal="token:a")] == [10.0, 12.0]
    assert [e["ts"] for e in store.audit_log(action="authenticate")] == [11.0]
    assert [e["ts"] for e in store.audit_log(result=403)] == [13.0]
    assert [e["ts"] for e in store.audit_log(resource=WS)] == [10.0, 11.0, 12.0]  # the workspace and under it, any case
    assert [e["ts"] for e in store.audit_log(resource=shouted(EXP))] == [12.0]
    assert [e["ts"] for e in store.audit_log(since=11.0, until=13.0)] == [11.0, 12.0]


def test_create_many_creates_all_or_none(store):
    first = store.create_many([job("a1"), job("a2")])
    assert [r.seq for r in first] == sorted(r.seq for r in first) and first[0].seq < first[1].seq
    with pytest.raises(Conflict):
        store.create_many([job("a3"), job("a1")])  # a1 exists: a3 is not left behind
    assert store.get(f"{EXP}/jobs/a3") is None
    assert [r.name for r in store.children(EXP, "jobs")] == ["a1", "a2"]


def test_job_counts_count_the_jobs_under_a_parent_by_state(store):
    array = job("arr")
    store.create(array)
    tasks = [
        Record(f"{array.id}/tasks/{i}", "jobs", str(i), array.id, job(str(i), state).body)
        for i, state in enumerate(["queued", "queued", "running", "succeeded"])
    ]
    store.create_many(tasks)
    assert store.job_counts(array.id) == {"queued": 2, "running": 1, "succeeded": 1}
    assert store.job_counts(f"{EXP}/jobs/a-job-without-tasks") == {}


def test_jobs_share_a_nodes_gpus_disjointly_and_a_whole_node_job_waits_for_all_of_them(store):
    gpus = json.dumps([{"index": str(i), "name": "H200", "memoryMiB": 1, "uuid": f"GPU-{i}"} for i in range(4)])
    store.put_node(NodeRecord("g0", CL, "node-g0", "idle", gpus=gpus))
    a, b, c, whole = (f"{EXP}/jobs/{n}" for n in ("a", "b", "c", "whole"))
    for j in (a, b, c, whole):
        store.create(job(j.rsplit("/", 1)[-1]))

    def start(r: Record) -> Record:
        r.properties["executionState"] = "running"
        return r

    def share(job_id: str, indices: list[str]) -> Record | None:
        return store.start_jobs(CL, [Launch(job_id, ["g0"], start, [], gpus={"g0": indices})])[0]

    assert share(a, ["0", "1"]) is not None
    assert share(b, ["1", "2"]) is None  # GPU 1 is a's
    assert share(b, ["2", "3"]) is not None
    node = store.get_node("g0")
    assert (node.state, node.job, node.free_gpus()) == ("running", None, [])
    assert node.share_map() == {a.lower(): ["0", "1"], b.lower(): ["2", "3"]}
    assert not store.claim_nodes(CL, whole, ["g0"])  # shared: no whole-node job
    assert share(c, ["9"]) is None  # no such GPU

    assert store.release_nodes(shouted(a)) == ["g0"]
    assert (store.get_node("g0").state, store.get_node("g0").free_gpus()) == ("running", ["0", "1"])
    assert not store.claim_nodes(CL, whole, ["g0"])
    started = time.time()
    store.delete_tree(b)  # a deleted job gives its GPUs back too
    node = store.get_node("g0")
    assert (node.state, node.shares, node.free_gpus()) == ("idle", None, ["0", "1", "2", "3"]) and node.idle_since >= started
    assert store.claim_nodes(CL, whole, ["g0"])


def test_cosmos_opened_without_creating_uses_the_containers_the_template_made(cosmos_url):
    """With a managed identity (data-plane role only) the store creates nothing: it opens the database and the
    containers infra/main.bicep made (here: made first by a store that may create them)."""
    database = f"db-{uuid.uuid4().hex}"
    made = CosmosStore(client(cosmos_url), database)
    made.create(workspace(WS))
    opened = CosmosStore(client(cosmos_url), database, create=False)
    assert opened.get(WS) is not None
    opened.create(Record(CL, "clusters", "c1", WS, {"properties": {}}))
    assert [r.id for r in made.children(WS, "clusters")] == [CL]
    with pytest.raises(CosmosHttpResponseError):  # the database was never made
        CosmosStore(client(cosmos_url), f"db-{uuid.uuid4().hex}", create=False).get(WS)
