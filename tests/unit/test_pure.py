"""Pure parts: ids, $VAR expansion, job outcome, next step (the scheduling policy: test_scheduling_policy)."""

from batchai import ids
from batchai.frameworks.expand import expand
from batchai.lifecycle import next_step, node_state_counts, task_outcome
from batchai.ports import NodeRecord, TaskRecord

SUB = "00000000-0000-0000-0000-000000000000"


def test_ids_round_trip():
    ws = ids.workspace_id(SUB, "rg", "ws")
    job = ids.child_id(ids.child_id(ws, "experiments", "e1"), "jobs", "j1")
    parsed = ids.parse(job)
    assert (parsed.kind, parsed.name, parsed.experiment, parsed.workspace) == ("jobs", "j1", "e1", "ws")
    assert ids.parse(ids.child_id(ws, "fileservers", "fs")).kind == "fileServers"
    assert ids.parse("/subscriptions/x/resourceGroups/rg/providers/Other/workspaces/w") is None
    assert ids.key(job.upper()) == ids.key(job)
    assert ids.output_segment(job, "u1") == f"{SUB}/rg/workspaces/ws/experiments/e1/jobs/j1/u1"


def test_expand_like_the_service():
    env = {"A": "1", "ROOT": "/mnt"}
    assert expand("$ROOT/x/${A}", env) == "/mnt/x/1"
    assert expand("$UNDEFINED/y", env) == "/y"
    assert expand("no vars $", env) == "no vars $"


def _task(node, state="finished", exit_code=0, error=None, spec=None):
    return TaskRecord(id=node, job="j", node=node, attempt=1, spec=spec or {}, state=state, exit_code=exit_code, error=error)


def test_task_outcome():
    assert task_outcome([]) is None
    assert task_outcome([_task("a"), _task("b", state="running", exit_code=None)]) is None
    assert task_outcome([_task("a"), _task("b")]) == {"exitCode": 0}
    assert task_outcome([_task("a", exit_code=3), _task("b", state="running", exit_code=None)])["exitCode"] == 3
    assert task_outcome([_task("a", error="node_lost", exit_code=None)])["nodeLost"]


def test_a_job_ends_when_its_working_tasks_do_while_the_others_hold_their_nodes():
    work = TaskRecord(id="a", job="j", node="a", attempt=1, spec={"processes": [{"name": ""}]}, state="finished", exit_code=0)
    hold = _task("b", state="running", exit_code=None)
    assert task_outcome([work, hold]) == {"exitCode": 0}
    assert task_outcome([_task("a", state="running", exit_code=None, spec={"processes": [{}]}), hold]) is None
    assert task_outcome([work, _task("b", exit_code=2)])["exitCode"] == 2  # a holder's preparation failed


def test_next_step():
    assert next_step({"state": "queued"}) == "wait"
    assert next_step({"state": "running", "outcome": {"exitCode": 0}}) == "complete"
    assert next_step({"state": "running", "outcome": {"nodeLost": True}}) == "requeue"
    assert next_step({"state": "running", "deadlineExceeded": True}) == "kill"
    assert next_step({"state": "terminating"}) == "kill"
    assert next_step({"state": "terminating", "killRequested": True}) == "wait"
    assert next_step({"state": "terminating", "killRequested": True, "tasksDone": True}) == "complete"
    assert next_step({"state": "failed"}) == "done"


def test_node_state_counts_treat_silence_as_unusable():
    nodes = [
        NodeRecord("a", "c", "n0", "idle", last_seen=100.0),
        NodeRecord("b", "c", "n1", "running", last_seen=10.0),
        NodeRecord("c", "c", "n2", "starting"),
    ]
    counts = node_state_counts(nodes, now=101.0, timeout=15.0)
    assert counts["idleNodeCount"] == 1 and counts["unusableNodeCount"] == 1 and counts["preparingNodeCount"] == 1
