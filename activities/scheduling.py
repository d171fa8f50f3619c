"""The scheduling pass: start the queued jobs of a cluster that fit on its idle nodes.

Placement itself is the pure `batchai.scheduling.place`; this module claims the nodes
(all-or-nothing, in the store), moves the job to `running`, writes the per-node tasks and wakes
the nodes and the started jobs' lifecycles.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections import defaultdict

from batchai import ids
from batchai.frameworks import LaunchContext, PlacedNode, UnsupportedToolkit, job_paths, plan_job
from batchai.lifecycle import job_instance, set_execution_state, utcnow
from batchai.model import JobCreateParameters
from batchai.ports import NodeRecord, Record, TaskRecord
from batchai.scheduling import QueuedJob, place

_cluster_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)


def job_properties(record: Record):
    return JobCreateParameters.model_validate({"properties": record.properties}).properties


def usable(node: NodeRecord, now: float, timeout: float) -> bool:
    return node.state == "idle" and node.job is None and now - node.last_seen <= timeout


def run_pass(svc, cluster_id: str) -> list[str]:
    """Start what fits now; returns the ids of the jobs started."""
    with _cluster_locks[ids.key(cluster_id)]:
        # Nodes first: on a busy cluster there is nothing to place, and reading the queue costs.
        now = time.time()
        nodes = {n.id: n for n in svc.store.nodes(cluster_id) if usable(n, now, svc.settings.node_timeout_seconds)}
        if not nodes:
            return []
        queued = svc.store.queued_jobs(cluster_id)
        if not queued:
            return []
        plan = place([QueuedJob(q["id"], q["node_count"] or 1, q["priority"] or "normal", q["seq"]) for q in queued], list(nodes))
        started = []
        for job_id, node_ids in plan:
            record = svc.store.get(job_id)
            if record is not None and launch(svc, record, [nodes[n] for n in node_ids]):
                started.append(record)
    for record in started:
        svc.engine.raise_event(job_instance(record), "wake")
    return [r.id for r in started]


def file_server_export(svc):
    """file server id -> the directory it exports (its mount point), for the compute port."""
    def export(file_server_id: str) -> str | None:
        record = svc.store.get(file_server_id)
        return (record.properties.get("mountSettings") or {}).get("mountPoint") if record else None
    return export


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mpirun_command(python: str) -> str:
    """OpenMPI's launcher for local nodes: remote launches go through the node agents (rsh.py)
    and all traffic over loopback TCP. Local "nodes" share one kernel, so the shared-memory
    paths that assume one daemon per host are off (vader BTL, hwloc's shared topology; PMIx's
    shared-memory store is off through the job environment): with them ranks crash at random."""
    return (
        "mpirun --allow-run-as-root --oversubscribe --bind-to none"
        f" --mca plm_rsh_agent '{python} -m batchai.agent.rsh'"
        " --mca oob_tcp_if_include lo --mca btl self,tcp --mca btl_tcp_if_include lo --mca rtc_hwloc_vmhole none"
    )


def launch_context(svc, record: Record, nodes: list[NodeRecord]) -> LaunchContext:
    cluster = svc.store.get(record.properties["cluster"]["id"])
    return LaunchContext(
        job_id=record.id,
        job_name=record.name,
        job_uuid=record.internal["uuid"],
        attempt=record.internal["attempt"],
        output_segment=record.properties["jobOutputDirectoryPathSegment"],
        cluster_mount_root=str(svc.settings.cluster_mount_root(cluster.internal["uuid"])),
        job_dir=str(svc.settings.job_dir(record.internal["uuid"])),
        nodes=tuple(PlacedNode(n.id, n.name, n.address or "127.0.0.1", n.root, n.exec_port or 0) for n in nodes),
        master_port=_free_port(),
        python=svc.settings.python,
        mpirun=mpirun_command(svc.settings.python),
        exec_secret=secrets.token_hex(16),
        container_binds=(str(svc.settings.data_dir),),  # every local path of a job lives under it
    )


def launch(svc, record: Record, nodes: list[NodeRecord]) -> bool:
    cluster_id = record.properties["cluster"]["id"]
    if not svc.store.claim_nodes(cluster_id, record.id, [n.id for n in nodes]):
        return False
    try:
        props = job_properties(record)
        ctx = launch_context(svc, record, nodes)
        tasks = plan_job(props, ctx)
        svc.compute.mount(ctx.job_mount_root, record.properties.get("mountVolumes"), file_server_export(svc))
        paths = job_paths(props, ctx)
    except UnsupportedToolkit as exc:
        svc.store.release_nodes(record.id)
        fail_unlaunchable(svc, record.id, "UnsupportedToolkit", str(exc))
        return False
    except (OSError, LookupError) as exc:
        svc.store.release_nodes(record.id)
        fail_unlaunchable(svc, record.id, "MountFailed", f"The job's volumes could not be mounted: {exc}")
        return False
    now = utcnow()

    def start(r: Record):
        if r.properties.get("executionState") != "queued":
            return None
        set_execution_state(r, "running", now)
        r.properties["executionInfo"] = {"startTime": now}
        # where the files really are: a path through a job-level mount ends with the job
        r.internal["paths"] = {"stdouterr": os.path.realpath(paths.stdouterr),
                               "outputs": {k: os.path.realpath(v) for k, v in paths.outputs.items()}}
        r.internal["nodes"] = [n.id for n in nodes]
        r.internal["nodeNames"] = {n.id: n.name for n in nodes}  # nodes may be gone when the job's events name them
        r.internal.setdefault("events", []).append(
            {"time": now, "event": "started", "attempt": r.internal["attempt"], "nodes": [n.name for n in nodes]}
        )
        return r

    if svc.store.mutate(record.id, start) is None:
        svc.store.release_nodes(record.id)
        return False
    svc.store.put_tasks([
        TaskRecord(id=t.task_id, job=record.id, node=t.node_id, attempt=ctx.attempt, spec=t.to_json()) for t in tasks
    ])
    svc.wake_nodes([n.id for n in nodes])
    return True


def fail_unlaunchable(svc, job_id: str, code: str, message: str) -> None:
    now = utcnow()

    def fail(r: Record):
        if r.properties.get("executionState") != "queued":
            return None
        set_execution_state(r, "failed", now)
        r.properties["executionInfo"] = {"startTime": now, "endTime": now, "errors": [{"code": code, "message": message}]}
        return r

    record = svc.store.mutate(job_id, fail)
    if record is not None:
        svc.engine.raise_event(job_instance(record), "wake")
