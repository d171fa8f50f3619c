"""Cluster activities: one controller pass (node health, evictions, scaling, scheduling), teardown.

A pass decides everything from the store, so repeating it is harmless:
1. nodes silent for longer than the node timeout become unusable (their jobs' lifecycles are
   woken: they requeue the job on healthy nodes, within its retry budget);
2. nodes the compute port reports evicted (low priority) are dropped, their jobs requeued;
3. the cluster is resized to its target: manual `targetNodeCount`, or auto scale (grow to fit
   the queue, shrink nodes idle for `autoscale_idle_seconds`, within min/max), replacing dead
   nodes, honouring `nodeDeallocationOption` for busy nodes that must go;
4. unless the cluster is paused, the scheduling pass starts what fits.

Failures the cluster's owner must see are kept in the cluster's `errors` (the API's BatchAIError:
code, message, details), one per code, until they stop: nodes that cannot be allocated (a quota,
say: the pass goes on with the nodes it has and tries again after a growing pause) and passes that
fail altogether (written by the controller, cleared by the next pass that succeeds).
"""

from __future__ import annotations

import time
import uuid

from batchai import jobs
from batchai.job_state import JobState, state_of
from batchai.lifecycle import EVICTED, NODE_LOST, NODE_SILENT, utcnow
from batchai.node_protocol import JOINED
from batchai.ports import NodeRecord, Record
from batchai.scheduling_pass import attached, file_server_export, schedule
from batchai.services import Services
from batchai.wake import wake_flag

MAX_WAIT_SECONDS = 30.0
ALLOCATION_FAILED = "AllocationFailed"
PASS_FAILED = "ControllerPassFailed"


def control_cluster(svc: Services, inp: dict) -> dict:
    """One controller pass; returns when the next one is due at the latest."""
    cluster = svc.store.get(inp["clusterId"])
    if cluster is None:
        return {"state": "gone"}
    svc.store.clear_flag(wake_flag(cluster))  # wakes from here on ask for another pass
    if PASS_FAILED in cluster_errors(cluster):  # this pass got this far: the store is back
        set_cluster_error(svc, cluster.id, PASS_FAILED, None)
    now = time.time()
    volumes = (cluster.properties.get("nodeSetup") or {}).get("mountVolumes")
    if not attached(cluster):
        svc.compute.mount(str(svc.settings.cluster_mount_root(cluster.internal["uuid"])), volumes, file_server_export(svc))
    lost = retire_silent_nodes(svc, cluster, now)
    if attached(cluster):  # its machines come and go by themselves (node join, node remove): nothing to size
        target, wait = len(svc.store.nodes(cluster.id)), _next_pass(svc, cluster, now, svc.settings.autoscale_idle_seconds)
        _record_target(svc, cluster, target)
        evicted: list[str] = []
    else:
        evicted = collect_evictions(svc, cluster)
        target, wait = resize(svc, cluster, now)
    paused = bool(cluster.internal.get("paused"))
    started = 0 if paused else schedule(svc, cluster.id)
    return {"state": "ok", "target": target, "paused": paused, "started": started, "lost": lost, "evicted": evicted, "wait": wait}


# ----- node health ------------------------------------------------------------------------------


def retire_silent_nodes(svc: Services, cluster: Record, now: float) -> list[str]:
    """Nodes that missed their heartbeats are unusable; their tasks are void."""
    retired = []
    for node in svc.store.nodes(cluster.id):
        if node.state in ("idle", "running", "preparing") and node.last_seen and now - node.last_seen > svc.settings.node_timeout_seconds:
            svc.store.update_node(node.id, state="unusable", error=NODE_SILENT)
            jobs.fail_tasks_of_node(svc, node.id, NODE_LOST)
            retired.append(node.name)
    return retired


def collect_evictions(svc: Services, cluster: Record) -> list[str]:
    """Low-priority nodes the compute port reports evicted are gone; their jobs go back to the queue."""
    if cluster.properties.get("vmPriority") != "lowpriority":
        return []
    nodes = svc.store.nodes(cluster.id)
    # not a node being deleted (leaving, its job already taken off): its VM going away is our own doing
    evicted = set(svc.compute.evicted([n.handle() for n in nodes if not (n.state == "leaving" and n.job is None)]))
    names = []
    for node in nodes:
        if node.id in evicted:
            jobs.fail_tasks_of_node(svc, node.id, EVICTED)
            svc.compute.stop_node(node.handle(), grace=0.0)
            svc.store.delete_node(node.id)
            names.append(node.name)
    return names


# ----- scaling ----------------------------------------------------------------------------------


def _replaceable(node: NodeRecord) -> bool:
    """Dead nodes are replaced; a node whose setup task failed stays, showing its error."""
    return node.state == "unusable" and node.error == NODE_SILENT


def desired_nodes(cluster: Record, nodes: list[NodeRecord], queued: list[Record], now: float, idle_after: float) -> int:
    """Pure: how many nodes the cluster should have now."""
    scale = cluster.properties.get("scaleSettings") or {}
    if "manual" in scale:
        return scale["manual"].get("targetNodeCount", 0)
    auto = scale.get("autoScale") or {}
    low, high = auto.get("minimumNodeCount", 0), auto.get("maximumNodeCount", 0)
    live = [n for n in nodes if n.state not in ("leaving",) and not _replaceable(n)]
    busy = sum(1 for n in live if n.job is not None or n.shares)  # shared by gpusPerNode jobs: busy too
    demand = sum(r.properties.get("nodeCount", 1) for r in queued)
    expired = sum(1 for n in live if n.state == "idle" and n.job is None and now - (n.idle_since or now) >= idle_after)
    want = max(busy + demand, len(live) - expired)
    if not cluster.internal.get("initialized"):
        want = max(want, auto.get("initialNodeCount", 0))
    return max(low, min(high, want))


def _next_name(nodes: list[NodeRecord]) -> str:
    taken = {n.name for n in nodes}
    return next(f"node-{i}" for i in range(len(taken) + 1) if f"node-{i}" not in taken)


def _start_node(svc: Services, cluster: Record, nodes: list[NodeRecord]) -> NodeRecord:
    name = _next_name(nodes)
    node_id = f"{cluster.internal['uuid'][:8]}-{name.split('-')[-1]}-{uuid.uuid4().hex[:6]}"
    # stored first: the node door refuses an agent whose node does not exist, and it may call before start_node returns
    svc.store.put_node(NodeRecord(id=node_id, cluster=cluster.id, name=name, state="starting", last_seen=0.0))
    try:
        started = svc.compute.start_node(node_id=node_id, cluster_id=cluster.id, cluster_key=cluster.internal["uuid"], name=name)
    except BaseException:
        svc.store.delete_node(node_id)
        raise
    node = svc.store.update_node(node_id, pid=started["pid"], root=started["root"], machine=started.get("machine"))
    if node is not None and node.address is None:  # unless the agent has registered its own already
        node = svc.store.update_node(node_id, address=started["address"])
    assert node is not None  # only this pass removes a starting node
    return node


def _remove_node(svc: Services, node: NodeRecord) -> None:
    svc.store.update_node(node.id, state="leaving", job=None)
    svc.compute.stop_node(node.handle(), grace=1.0)
    svc.store.delete_node(node.id)


def _deallocate_busy(svc: Services, cluster: Record, node: NodeRecord, option: str) -> None:
    """A busy node must go: requeue or terminate its job, or let it finish first."""
    svc.store.update_node(node.id, state="leaving")
    job = svc.store.get(node.job) if node.job else None
    if job is None or option == "waitforjobcompletion":
        return
    if option == "terminate" and state_of(job) is JobState.RUNNING:
        jobs.terminate(svc, job.id, "deallocated")
    jobs.fail_tasks_of_node(svc, node.id, EVICTED if option == "requeue" else "deallocated")


def resize(svc: Services, cluster: Record, now: float) -> tuple[int, float]:
    """Bring the node count to the target; returns (target, seconds until a pass is due)."""
    idle_after = svc.settings.autoscale_idle_seconds
    nodes = svc.store.nodes(cluster.id)
    for node in nodes:  # dead agents, and agents that never came up, make way for new ones
        starting_dead = node.state == "starting" and not svc.compute.is_alive(node.handle())
        if _replaceable(node) or starting_dead or (node.state == "leaving" and node.job is None):
            _remove_node(svc, node)
    nodes = svc.store.nodes(cluster.id)
    autoscale = "autoScale" in (cluster.properties.get("scaleSettings") or {})
    queued = svc.store.jobs(states=["queued"], cluster=cluster.id) if autoscale else []  # only auto scale sizes to the queue
    target = desired_nodes(cluster, nodes, queued, now, idle_after)
    live = [n for n in nodes if n.state != "leaving"]
    failed_allocations = _grow(svc, cluster, nodes, live, target)
    if len(live) > target:
        option = ((cluster.properties.get("scaleSettings") or {}).get("manual") or {}).get("nodeDeallocationOption", "requeue")
        idle = sorted(
            (n for n in live if n.job is None and n.state in ("idle", "starting", "preparing", "unusable")),
            key=lambda n: (n.state == "idle", n.name),
            reverse=True,
        )
        busy = sorted((n for n in live if n.job is not None), key=lambda n: n.name, reverse=True)
        for node in (idle + busy)[: len(live) - target]:
            if node.job is None:
                _remove_node(svc, node)
            else:
                _deallocate_busy(svc, cluster, node, option)
    _record_target(svc, cluster, target)
    wait = _next_pass(svc, cluster, now, idle_after)
    if failed_allocations:
        wait = min(wait, allocation_backoff(failed_allocations))
    return target, wait


def allocation_backoff(failures: int) -> float:
    """Seconds before trying to allocate again after `failures` failed passes in a row: 1, 2, 4, ... (the
    pass's own wait, at most MAX_WAIT_SECONDS, bounds it: a refusal is retried at least that often)."""
    return 2.0 ** min(failures - 1, 10)


def _grow(svc: Services, cluster: Record, nodes: list[NodeRecord], live: list[NodeRecord], target: int) -> int:
    """Start nodes up to `target` (appending them to `live`). When the compute refuses one, the rest wait for
    a later pass, and the cluster's errors say why; returns the failed passes in a row (0: none now)."""
    try:
        for _ in range(target - len(live)):
            live.append(_start_node(svc, cluster, nodes + live))
    except Exception as exc:  # noqa: BLE001 - the compute's own error, for the cluster's owner to read
        failures = (cluster_errors(cluster).get(ALLOCATION_FAILED) or {}).get("failures", 0) + 1
        message = f"{len(live)} of {target} nodes could be allocated: {type(exc).__name__}: {exc}"
        set_cluster_error(svc, cluster.id, ALLOCATION_FAILED, message, failures=failures)
        return failures
    if ALLOCATION_FAILED in cluster_errors(cluster):
        set_cluster_error(svc, cluster.id, ALLOCATION_FAILED, None)
    return 0


# ----- errors -----------------------------------------------------------------------------------


def cluster_errors(cluster: Record) -> dict[str, dict]:
    """The cluster's current errors by code, with how many passes in a row have met each."""
    return cluster.internal.get("errors") or {}


def set_cluster_error(svc: Services, cluster_id: str, code: str, message: str | None, *, failures: int = 1) -> None:
    """Keep (or, with no message, clear) the cluster's error `code`."""

    def update(r: Record):
        errors = dict(r.internal.get("errors") or {})
        if message is None:
            errors.pop(code, None)
        else:
            errors[code] = {"code": code, "message": message, "failures": failures, "time": utcnow()}
        r.internal["errors"] = errors
        return r

    svc.store.mutate(cluster_id, update)


def record_pass_failure(svc: Services, inp: dict) -> None:
    """A controller pass failed all its retries: the cluster's owner sees why until a pass succeeds."""
    if svc.store.get(inp["clusterId"]) is not None:
        set_cluster_error(
            svc, inp["clusterId"], PASS_FAILED, f"The cluster's controller pass failed: {inp['message']}", failures=inp["failedPasses"]
        )


def _record_target(svc: Services, cluster: Record, target: int) -> None:
    if cluster.internal.get("target") == target and cluster.internal.get("initialized"):
        return

    def update(r: Record):
        if r.internal.get("target") != target:
            r.internal["allocationTime"] = utcnow()
        r.internal.update(target=target, initialized=True)
        return r

    svc.store.mutate(cluster.id, update)


def _next_pass(svc: Services, cluster: Record, now: float, idle_after: float) -> float:
    """Timers, not polling: when a node could go silent, or an idle node becomes removable."""
    nodes = svc.store.nodes(cluster.id)
    wait = MAX_WAIT_SECONDS
    if any(n.state in ("idle", "running", "preparing", "starting", "leaving") for n in nodes):
        wait = min(wait, svc.settings.node_timeout_seconds / 2)
    if "autoScale" in (cluster.properties.get("scaleSettings") or {}):
        for n in nodes:
            if n.state == "idle" and n.job is None:
                wait = min(wait, max(0.1, (n.idle_since or now) + idle_after - now))
    return wait


def stop_cluster_nodes(svc: Services, cluster_id: str) -> None:
    for node in svc.store.delete_nodes(cluster_id):
        if node.machine != JOINED:  # a joined machine's agent stops when its node is refused
            svc.compute.stop_node(node.handle(), grace=2.0)
