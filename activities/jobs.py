"""Job lifecycle activities. Each one reads the store (the source of truth), changes it with a
compare-and-set, and reports a fresh view of the job for the orchestration to decide on."""

from __future__ import annotations

import time

from activities.scheduling import job_properties
from batchai.lifecycle import (
    EVICTED, NODE_LOST, NODE_SILENT, TERMINAL, node_is_lost, parse_time, set_execution_state,
    task_outcome, utcnow,
)
from batchai.ports import Record
from batchai.wake import wake_cluster

# A queued job is woken by the controller that starts it (or the API that terminates it); its timer is only a
# safety net. Ten thousand queued jobs rechecking every 30 s kept the engine too busy to start any (the
# simulated-cluster bench: 40 s to the first completion, 4 jobs/s).
QUEUED_RECHECK_SECONDS = 600.0
RUNNING_RECHECK_SECONDS = 5.0
TERMINATING_RECHECK_SECONDS = 2.0
LAUNCH_GRACE_SECONDS = 30.0  # running without tasks for this long: the launch was interrupted

TERMINATED = {"code": "JobTerminated", "message": "The job was terminated by the user."}
TIMED_OUT = {"code": "JobTimedOut", "message": "The job exceeded its maxWallClockTime and was terminated."}
DEALLOCATED = {"code": "NodeDeallocated", "message": "The job's node was removed by a scale-down (nodeDeallocationOption: terminate)."}
END_REASONS = {"timeout": TIMED_OUT, "deallocated": DEALLOCATED}


def _attempt_tasks(svc, record: Record):
    attempt = record.internal.get("attempt", 1)
    return [t for t in svc.store.tasks(job=record.id) if t.attempt == attempt]


def _view(svc, record: Record | None) -> dict:
    if record is None:
        return {"state": "gone"}
    props = record.properties
    state = props["executionState"]
    view = {"state": state, "attempt": record.internal.get("attempt", 1), "wait": QUEUED_RECHECK_SECONDS}
    if state in TERMINAL or state == "queued":
        return view
    now = time.time()
    tasks = _attempt_tasks(svc, record)
    outcome = task_outcome(tasks)
    if outcome is None:
        for t in tasks:
            if t.state != "finished" and node_is_lost(svc.store.get_node(t.node), t, now, svc.settings.node_timeout_seconds):
                outcome = {"nodeLost": True, "node": t.node}
                break
    if outcome is None and not tasks and now - parse_time(props["executionStateTransitionTime"]).timestamp() > LAUNCH_GRACE_SECONDS:
        outcome = {"nodeLost": True, "node": None}
    view["outcome"] = outcome
    if state == "running":
        start = parse_time(props["executionInfo"]["startTime"]).timestamp()
        remaining = start + job_properties(record).constraints.max_wall_clock_time.total_seconds() - now
        view["deadlineExceeded"] = remaining <= 0
        view["wait"] = max(0.1, min(RUNNING_RECHECK_SECONDS, remaining))
    else:
        requested = record.internal.get("killRequestedAt")
        view["killRequested"] = requested is not None
        view["killExpired"] = requested is not None and now - requested > svc.settings.kill_grace_seconds
        view["tasksDone"] = all(t.state == "finished" for t in tasks)
        view["wait"] = TERMINATING_RECHECK_SECONDS
    return view


def observe_job(svc, inp: dict) -> dict:
    """The job as stored now (the cluster's controller starts queued jobs, then wakes them); "gone" when it
    was deleted, also when a new job has taken its name since."""
    record = svc.store.get(inp["jobId"])
    if record is not None and inp.get("uuid") and record.internal.get("uuid") != inp["uuid"]:
        record = None
    return _view(svc, record)


def _stop_tasks(svc, record: Record) -> None:
    """Pending tasks never start; running ones are killed by their node agents."""
    woken = set()
    for t in _attempt_tasks(svc, record):
        if svc.store.update_task(t.id, only_if_state=["pending"], state="finished", error="terminated", end_time=utcnow()):
            continue
        if svc.store.update_task(t.id, only_if_state=["running"], state="killing"):
            woken.add(t.node)
    svc.wake_nodes(sorted(woken))


def kill_job(svc, inp: dict) -> dict:
    """Begin ending a running job: `reason` is "terminate" (the user asked) or "timeout"."""
    reason = inp.get("reason", "terminate")

    def request(r: Record):
        state = r.properties["executionState"]
        if state not in ("running", "terminating") or r.internal.get("killRequestedAt"):
            return None
        if state == "running":
            set_execution_state(r, "terminating", utcnow())
        r.internal.setdefault("endReason", reason)
        r.internal["killRequestedAt"] = time.time()
        r.internal.setdefault("events", []).append({"time": utcnow(), "event": f"kill requested ({reason})"})
        return r

    record = svc.store.mutate(inp["jobId"], request) or svc.store.get(inp["jobId"])
    if record is not None:
        _stop_tasks(svc, record)
    return _view(svc, record)


def complete_job(svc, inp: dict) -> dict:
    """Move the job to its one terminal state, free its nodes, and start what waits for them."""
    record = svc.store.get(inp["jobId"])
    if record is None:
        return {"state": "gone"}
    outcome = task_outcome(_attempt_tasks(svc, record)) or {}
    if record.properties["executionState"] not in (*TERMINAL, "queued"):
        svc.sync_job_files(record)  # before the job shows as ended: then all it wrote is in storage
    now = utcnow()

    def finish(r: Record):
        state = r.properties["executionState"]
        if state in TERMINAL or state == "queued":
            return None
        info = r.properties.setdefault("executionInfo", {"startTime": now})
        info["endTime"] = now
        if outcome.get("exitCode") is not None:
            info["exitCode"] = outcome["exitCode"]
        if state == "terminating":
            info["errors"] = [END_REASONS.get(r.internal.get("endReason"), TERMINATED)]
            final = "failed"
        elif outcome.get("exitCode") == 0:
            final = "succeeded"
        else:
            final = "failed"
            if outcome.get("error"):
                info["errors"] = [{"code": "JobFailed", "message": outcome["error"]}]
        set_execution_state(r, final, now)
        r.internal.setdefault("events", []).append({"time": now, "event": final, "attempt": r.internal.get("attempt", 1)})
        return r

    updated = svc.store.mutate(record.id, finish)
    if updated is not None:
        _stop_tasks(svc, updated)
        unmount_job_volumes(svc, updated)
    current = updated or svc.store.get(record.id)
    # a retried completion that died after the state change still frees the nodes
    if current is not None and current.properties["executionState"] in TERMINAL and (svc.store.release_nodes(record.id) or updated):
        wake_controller(svc, record)
    return _view(svc, current)


def requeue_job(svc, inp: dict) -> dict:
    """A node of the job was lost or evicted: void the attempt and queue the job again.

    Lost nodes count against the job's retry budget (`max_attempts`); evictions do not, since a
    low-priority job is expected to be evicted and to resume from its checkpoints.
    """
    record = svc.store.get(inp["jobId"])
    if record is None:
        return {"state": "gone"}
    tasks = _attempt_tasks(svc, record)
    lost_nodes = {t.node for t in tasks if t.error == NODE_LOST}
    evicted_nodes = {t.node for t in tasks if t.error == EVICTED}
    outcome = inp.get("outcome") or {}
    if outcome.get("node") and not outcome.get("evicted"):
        lost_nodes.add(outcome["node"])
    for node_id in lost_nodes - evicted_nodes:
        node = svc.store.get_node(node_id)
        if node is not None and node.state != "leaving":
            svc.store.update_node(node_id, state="unusable", job=None, error=NODE_SILENT)
    _stop_tasks(svc, record)
    now = utcnow()
    names = sorted(record.internal.get("nodeNames", {}).get(i, i) for i in lost_nodes | evicted_nodes)

    def again(r: Record):
        if r.properties["executionState"] != "running" or r.internal.get("attempt", 1) != record.internal.get("attempt", 1):
            return None
        attempt = r.internal.get("attempt", 1)
        evicted = bool(evicted_nodes) and not (lost_nodes - evicted_nodes)
        r.internal["evictions"] = r.internal.get("evictions", 0) + (1 if evicted else 0)
        r.internal.setdefault("events", []).append(
            {"time": now, "event": "node evicted" if evicted else "node lost", "attempt": attempt, "nodes": names})
        if attempt - r.internal["evictions"] >= svc.settings.max_attempts:
            set_execution_state(r, "failed", now)
            r.properties["executionInfo"]["endTime"] = now
            r.properties["executionInfo"]["errors"] = [{
                "code": "NodeFailure",
                "message": f"The job's nodes failed {attempt - r.internal['evictions']} times; the retry budget is exhausted.",
            }]
        else:
            r.internal["attempt"] = attempt + 1
            set_execution_state(r, "queued", now)
        return r

    updated = svc.store.mutate(record.id, again)
    if updated is not None and updated.properties["executionState"] in TERMINAL:
        unmount_job_volumes(svc, updated)
    svc.store.release_nodes(record.id)
    wake_controller(svc, record)
    return _view(svc, updated or svc.store.get(record.id))


def wake_controller(svc, job: Record) -> None:
    """Nodes were freed or a job was queued: the cluster's controller runs a pass."""
    wake_cluster(svc, svc.store.get(job.properties["cluster"]["id"]))


def unmount_job_volumes(svc, record: Record) -> None:
    """Job-level volumes are mounted for the job only (its files stay in the volumes)."""
    volumes = record.properties.get("mountVolumes")
    if volumes:
        svc.compute.unmount(f"{svc.settings.job_dir(record.internal['uuid'])}/mounts", volumes)
