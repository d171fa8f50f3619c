"""A cluster's queue as its users ask about it: where each queued job stands and why it waits.

Read-only, and computed by the scheduler's own code: the same inputs a scheduling pass reads
(`scheduling_pass.plan_inputs`: idle nodes, shareable GPUs, the head of the queue, when busy nodes
free up) go through `queue_order` and `plan`, which say which jobs would start and why the others
are passed over.
Served at `GET .../clusters/{c}/queue` (ours, beyond 2018-05-01) for the dashboard and scripts.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from batchai import ids
from batchai.lifecycle import node_state
from batchai.ports import Record
from batchai.scheduling import plan, queue_order
from batchai.scheduling.placement import PRIORITY_RANK
from batchai.scheduling_pass import QUEUE_DEPTH, plan_inputs, queued_job

if TYPE_CHECKING:
    from batchai.services import Services


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def max_nodes(cluster: Record) -> int:
    """The most nodes the cluster's scale settings let it have."""
    scale = cluster.properties.get("scaleSettings") or {}
    if "autoScale" in scale:
        return int(scale["autoScale"].get("maximumNodeCount", 0))
    return int((scale.get("manual") or {}).get("targetNodeCount", 0))


def explain(svc: Services, cluster: Record) -> dict:
    """`{"paused", "idleNodes", "usableNodes", "value": [{position, id, name, experiment, priority,
    nodeCount, reason: {code, message}, startsWithinSeconds?}], "more"}` for the head of the queue
    a pass reads (`QUEUE_DEPTH` plus the idle nodes); `more` when deeper jobs may wait behind it."""
    now, timeout = time.time(), svc.settings.node_timeout_seconds
    store = svc.store
    nodes = store.nodes(cluster.id)
    active = {ids.key(j.id): j for j in store.job_summaries(cluster.id, ("running", "terminating"))}
    inputs = plan_inputs(store, cluster.id, nodes, active, now, timeout, busy=True)
    assert inputs is not None  # busy=True: always read
    live = sum(1 for n in nodes if node_state(n, now, timeout) not in ("unusable", "leaving"))
    why: dict[str, tuple[str, float]] = {}
    starting = {job_id for job_id, _ in plan(inputs.queued, inputs.free, inputs.busy_until, inputs.gpus, why)[0]}
    ordered = queue_order(inputs.queued + [queued_job(h) for h in inputs.held])
    held = {h.id for h in inputs.held}
    paused = bool(cluster.internal.get("paused"))
    head_name = next((_name(j.id) for j in ordered if why.get(j.id, ("",))[0] == "reserved"), None)
    rows = []
    for position, job in enumerate(ordered, 1):
        ahead = ordered[: position - 1]
        higher = sum(1 for a in ahead if PRIORITY_RANK.get(a.priority, 1) < PRIORITY_RANK.get(job.priority, 1))
        reason, detail = why.get(job.id, ("", 0.0))
        row = {
            "position": position,
            "id": job.id,
            "name": _name(job.id),
            "experiment": job.id.split("/experiments/", 1)[1].split("/", 1)[0],
            "priority": job.priority,
            "nodeCount": job.node_count,
        }
        if job.gpus:
            row["gpusPerNode"] = job.gpus
        if paused:
            code, message = "ClusterPaused", "The cluster is paused: queued jobs stay queued until it is resumed."
        elif job.id in held:
            code, message = "ArrayParallelLimit", "Its array already runs as many tasks as its maxParallel allows."
        elif job.id in starting:
            code, message = "Starting", "Idle nodes fit it: it starts at the cluster's next scheduling pass."
        elif reason == "reserved" and math.isinf(detail):
            most = max_nodes(cluster)
            grow = f"; its scale settings allow {most}" if most != live else ""
            code = "ClusterTooSmall" if most < job.node_count else "WaitingForNodes"
            message = f"Needs {job.node_count} nodes at once (gang); the cluster has {live} usable{grow}."
        elif reason == "reserved":
            code = "Reservation"
            message = (
                f"First in line for {job.node_count} nodes at once (gang), {len(inputs.free)} idle: the next nodes to free up are "
                f"reserved for it; it starts within {_duration(detail)} at the latest (running jobs' maxWallClockTime)."
            )
            row["startsWithinSeconds"] = round(detail)
        elif reason == "gang":
            code = "GangSize"
            message = f"Needs {job.node_count} nodes at once (gang), only {int(detail)} idle; {head_name} has the reservation."
        elif reason == "backfill":
            code = "BehindReservation"
            message = (
                f"Would delay {head_name}, which has the reservation: it may start on idle nodes only if it ends (maxWallClockTime) "
                f"within {_duration(detail)} or fits on the nodes that job leaves spare."
            )
        elif reason == "gpus":
            code, message = "GpusBusy", f"Needs {int(detail)} free GPU(s) on each of {job.node_count} node(s): not free now."
        elif higher:
            code, message = "Priority", f"No idle node for it: {len(ahead)} job(s) ahead of it, {higher} of a higher priority."
        elif ahead:
            code, message = "NoIdleNode", f"No idle node for it: {len(ahead)} job(s) ahead of it in the queue."
        else:
            code, message = "NoIdleNode", "Next in line: every usable node is busy, it starts on the first one to free up."
        row["reason"] = {"code": code, "message": message}
        rows.append(row)
    depth = QUEUE_DEPTH + len(inputs.free)
    return {"paused": paused, "idleNodes": len(inputs.free), "usableNodes": live, "value": rows, "more": len(ordered) >= depth}


def _name(job_id: str) -> str:
    """A job's name; an array task's `array/tasks/index`."""
    return job_id.split("/jobs/", 1)[1]
