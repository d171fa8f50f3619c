"""A launched job's lifecycle, as pure functions over stored records: what it observes, and what
it does next. The states and transitions themselves live in `batchai.job_state`.

Activities apply transitions inside the store's compare-and-set, so every step is decided from
what is stored now (the source of truth), never from what an event claimed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from batchai.job_state import TERMINAL, JobState, attempt_of
from batchai.model.common import parse_duration
from batchai.ports import NodeRecord, Record, Store, TaskRecord
from batchai.scheduling import DEFAULT_MAX_SECONDS

NODE_LOST = "node_lost"  # a task error: its node died or restarted; not the job's fault
NODE_SILENT = "The node stopped responding."  # a node's error once its heartbeats stopped
EVICTED = "node_evicted"  # a task error: its low-priority node was taken back (or scaled away with requeue)

# A lifecycle is woken by whoever changes its job (batchai.wake); its timers are safety nets, and the deadline.
QUEUED_RECHECK_SECONDS = 600.0  # a requeued job: the controller wakes it when it starts it again
RUNNING_RECHECK_SECONDS = 30.0
TERMINATING_RECHECK_SECONDS = 2.0


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


def sweep_instance(sweep_uuid: str) -> str:
    """The durable instance id of a sweep's orchestration: one per sweep, stable across restarts."""
    return f"sweep-{sweep_uuid}"


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@lru_cache(maxsize=256)
def wall_clock_seconds(value: str | None) -> float:
    """A stored maxWallClockTime in seconds (sweeps share a handful of values: cached)."""
    return DEFAULT_MAX_SECONDS if value is None else parse_duration(value).total_seconds()


def seconds_left(record: Record, now: float) -> float:
    """Until a running job's maxWallClockTime runs out."""
    start = parse_time(record.properties["executionInfo"]["startTime"]).timestamp()
    return start + wall_clock_seconds((record.properties.get("constraints") or {}).get("maxWallClockTime")) - now


def settled_view(record: Record) -> dict:
    """What a lifecycle is told when its job ended: it takes a terminal state as is (states never leave it)."""
    return {"state": record.properties["executionState"], "attempt": attempt_of(record)}


def launch_view(record: Record, now: float) -> dict:
    """What a lifecycle starts with: the job just launched, nothing decided yet."""
    return {
        "state": JobState.RUNNING.value,
        "attempt": attempt_of(record),
        "outcome": None,
        "deadlineExceeded": False,
        "wait": max(0.1, min(RUNNING_RECHECK_SECONDS, seconds_left(record, now))),
    }


def is_settled(view: dict | None) -> bool:
    return view is not None and (view["state"] in TERMINAL or view["state"] == "gone")


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


def restart_grace(store: Store, now: float) -> int:
    """A control plane (re)starting gives every node a full node timeout to reach it again: while it was
    down, the nodes' heartbeats had nowhere to go, so their silence says nothing about them. Called once per
    process start, before anything judges a node (controller passes, lifecycles, scheduling passes); answers
    how many nodes it touched."""
    nodes = [n for n in store.nodes() if n.last_seen and n.last_seen < now]
    for node in nodes:
        store.update_node(node.id, last_seen=now)
    return len(nodes)


def node_is_lost(node: NodeRecord | None, task: TaskRecord, now: float, timeout: float) -> bool:
    if node is None or node.state == "unusable":
        return True
    if task.boot_id and node.boot_id and node.boot_id != task.boot_id:
        return True
    return node.last_seen > 0 and now - node.last_seen > timeout


def node_state(node: NodeRecord, now: float, timeout: float) -> str:
    """A node's state as the API reports it (a Batch AI node state): one gone silent is unusable."""
    if node.state == "unusable" or (node.state in ("idle", "running") and node.last_seen and now - node.last_seen > timeout):
        return "unusable"
    return "preparing" if node.state == "starting" else node.state


def node_state_counts(nodes: list[NodeRecord], now: float, timeout: float) -> dict[str, int]:
    counts = {"idleNodeCount": 0, "runningNodeCount": 0, "preparingNodeCount": 0, "unusableNodeCount": 0, "leavingNodeCount": 0}
    for n in nodes:
        counts[f"{node_state(n, now, timeout)}NodeCount"] += 1
    return counts


def next_step(view: dict) -> str:
    """What a job lifecycle does next, from an observed view: wait, complete, requeue, kill, done."""
    state = view["state"]
    if is_settled(view):
        return "done"
    if state == JobState.QUEUED:
        return "wait"
    if state == JobState.RUNNING:
        if view.get("outcome"):
            return "requeue" if view["outcome"].get("nodeLost") else "complete"
        if view.get("deadlineExceeded"):
            return "kill"
        return "wait"
    # terminating
    if view.get("outcome") or view.get("tasksDone") or view.get("killExpired"):
        return "complete"
    return "wait" if view.get("killRequested") else "kill"
