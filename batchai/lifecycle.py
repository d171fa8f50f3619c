"""Job and node state, as pure functions over stored records.

Activities apply these inside the store's compare-and-set, so every transition is decided from
what is stored now (the source of truth), never from what an event claimed.
"""

from __future__ import annotations

from datetime import datetime, timezone

from batchai.ports import NodeRecord, Record, TaskRecord

TERMINAL = ("succeeded", "failed")
ACTIVE = ("queued", "running", "terminating")
NODE_LOST = "node_lost"  # a task error: its node died or restarted; not the job's fault
NODE_SILENT = "The node stopped responding."  # a node's error once its heartbeats stopped
EVICTED = "node_evicted"  # a task error: its low-priority node was taken back (or scaled away with requeue)


def job_instance(record: Record) -> str:
    """The durable instance id of a job's lifecycle: one per job, stable across restarts."""
    return f"job-{record.internal['uuid']}"


def lifecycle_input(record: Record) -> dict:
    """What a job's lifecycle starts with: the job's id, and which job of that name it is (a job deleted and
    submitted again under the same name is another job; the old lifecycle must not drive it)."""
    return {"jobId": record.id, "uuid": record.internal["uuid"]}


def controller_instance(cluster: Record) -> str:
    """The durable instance id of a cluster's controller: one per cluster, stable across restarts."""
    return f"controller-{cluster.internal['uuid']}"


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def set_execution_state(record: Record, state: str, now: str) -> Record:
    props = record.properties
    props["executionState"] = state
    props["executionStateTransitionTime"] = now
    return record


def holds_only(task: TaskRecord) -> bool:
    """A task with no process of its own to wait for: it holds its node until the job ends."""
    return not any(not p.get("daemon") for p in task.spec.get("processes") or [])


def task_outcome(tasks: list[TaskRecord]) -> dict | None:
    """The job attempt's result once it is decided, else None.

    A lost node decides at once (the attempt is void); so does the first task that fails (a
    failed preparation included); success needs every task with processes to have finished with
    0 (the tasks that only hold a node end when the job does).
    """
    if not tasks:
        return None
    finished = [t for t in tasks if t.state == "finished"]
    lost = [t for t in finished if t.error in (NODE_LOST, EVICTED)]
    if lost:
        return {"nodeLost": True, "node": lost[0].node, "evicted": lost[0].error == EVICTED}
    failed = [t for t in finished if t.exit_code not in (0, None)]
    if failed:
        first = failed[0]
        return {"exitCode": first.exit_code, "error": first.error, "node": first.node}
    working = [t for t in tasks if not holds_only(t)] or tasks
    if all(t.state == "finished" for t in working):
        return {"exitCode": 0}
    return None


def node_is_lost(node: NodeRecord | None, task: TaskRecord, now: float, timeout: float) -> bool:
    if node is None or node.state == "unusable":
        return True
    if task.boot_id and node.boot_id and node.boot_id != task.boot_id:
        return True
    return node.last_seen > 0 and now - node.last_seen > timeout


def node_state_counts(nodes: list[NodeRecord], now: float, timeout: float) -> dict[str, int]:
    counts = {"idleNodeCount": 0, "runningNodeCount": 0, "preparingNodeCount": 0, "unusableNodeCount": 0, "leavingNodeCount": 0}
    for n in nodes:
        if n.state == "unusable" or (n.state in ("idle", "running") and n.last_seen and now - n.last_seen > timeout):
            counts["unusableNodeCount"] += 1
        elif n.state == "starting":
            counts["preparingNodeCount"] += 1
        elif n.state == "leaving":
            counts["leavingNodeCount"] += 1
        else:
            counts[f"{n.state}NodeCount"] += 1
    return counts


def next_step(view: dict) -> str:
    """What a job lifecycle does next, from an observed view: wait, complete, requeue, kill, done."""
    state = view["state"]
    if state in TERMINAL or state == "gone":
        return "done"
    if state == "queued":
        return "wait"
    if state == "running":
        if view.get("outcome"):
            return "requeue" if view["outcome"].get("nodeLost") else "complete"
        if view.get("deadlineExceeded"):
            return "kill"
        return "wait"
    # terminating
    if view.get("outcome") or view.get("tasksDone") or view.get("killExpired"):
        return "complete"
    return "wait" if view.get("killRequested") else "kill"
