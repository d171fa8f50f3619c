"""The scheduling pass: start the queued jobs of a cluster that fit on its idle nodes.

Placement itself is the pure `batchai.scheduling.place` over the head of the queue; this module
prepares each placed job's tasks, then, in one store operation for the whole batch
(`Store.start_jobs`), claims each job's nodes (all-or-nothing), moves it to `running` and writes
its per-node tasks; then it wakes the nodes, and the launched jobs' lifecycles are due a moment
later.

Who runs it: the cluster's controller (a job queued, a node joined, a scale change, its timer)
and, as Slurm does when a job's epilog completes, the node report that freed nodes, so the
node's next task rides back on the answer to its report instead of waiting for an engine round
trip. `schedule` keeps passes of a cluster from overlapping in this process and folds the
requests that arrive during a pass into one more pass. Passes in different processes (the API
workers) may overlap: a launch claims and starts its job in one transaction, so each job and
each node is taken once, and a claim without a running job is only ever left by a crash.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

from batchai import arrays, ids, job_state
from batchai.agent.runner import PYTHON_ENV
from batchai.frameworks import LaunchContext, PlacedNode, UnsupportedToolkit, job_paths, plan_job
from batchai.frameworks.plan import NodeTask
from batchai.job_state import JobState, attempt_of, state_of
from batchai.lifecycle import launch_view, parse_time, seconds_left, utcnow, wall_clock_seconds
from batchai.model import JobCreateParameters, MountVolumes
from batchai.mounting import file_server_address, plan_mounts, plan_unmounts, render
from batchai.ports import JobSummary, Launch, NodeRecord, Record, Store, TaskRecord
from batchai.scheduling import QueuedJob, plan
from batchai.wake import start_lifecycle

if TYPE_CHECKING:
    from batchai.services import Services

log = logging.getLogger("batchai.scheduling")

# How far past what fits on the free nodes a pass looks for a job to start (backfill candidates
# behind a head that has to wait): Slurm's default_queue_depth. Deeper jobs wait for their turn.
QUEUE_DEPTH = 100


# The node whose report runs this pass (in this thread): what it launches there rides back on the report's
# answer, so waking the node's long poll too would only cost both sides a round trip, and the node is placed on
# first, so that its next task is that answer's.
_answering: ContextVar[str | None] = ContextVar("answering", default=None)


@contextmanager
def answering(node_id: str) -> Iterator[None]:
    token = _answering.set(node_id)
    try:
        yield
    finally:
        _answering.reset(token)


class _Gate:
    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.running = False
        self.again: bool | None = None  # a pass asked for meanwhile: None none, else whether a thorough one


_gates: dict[str, _Gate] = defaultdict(_Gate)
_gates_mutex = threading.Lock()


def schedule(svc: Services, cluster_id: str, *, thorough: bool = True) -> int:
    """Run the cluster's scheduling pass now, unless it is paused, or one is running in this process:
    that one then runs once more when it ends (a burst of requests is a few passes, not one each), a
    thorough one if any request was (see `decide`). Returns how many jobs this call started."""
    with _gates_mutex:
        gate = _gates[ids.key(cluster_id)]
    with gate.mutex:
        if gate.running:
            gate.again = bool(gate.again) or thorough
            return 0
        gate.running = True
    started = 0
    try:
        while True:
            cluster = svc.store.get(cluster_id)
            if cluster is not None and not cluster.internal.get("paused"):
                started += len(run_pass(svc, cluster, thorough=thorough))
            with gate.mutex:  # the check and the release in one step: a request now is never lost
                if gate.again is None:
                    gate.running = False
                    return started
                thorough, gate.again = gate.again, None
    except BaseException:
        with gate.mutex:  # what was asked for meanwhile waits for the controller's next pass
            gate.running, gate.again = False, None
        raise


def job_properties(record: Record):
    return JobCreateParameters.model_validate({"properties": record.properties}).properties


def usable(node: NodeRecord, now: float, timeout: float) -> bool:
    """Free for a whole-node job."""
    return node.state == "idle" and node.job is None and not node.shares and now - node.last_seen <= timeout


def shareable(node: NodeRecord, now: float, timeout: float) -> bool:
    """Its free GPUs can be shared by `gpusPerNode` jobs: idle, or shared already."""
    return bool(node.gpus) and node.job is None and node.state in ("idle", "running") and now - node.last_seen <= timeout


def queued_job(summary: JobSummary) -> QueuedJob:
    return QueuedJob(
        summary.id,
        summary.node_count or 1,
        summary.priority or "normal",
        summary.seq,
        summary.parent,
        wall_clock_seconds(summary.max_wall_clock),
        summary.gpus_per_node or 0,
    )


def busy_until(nodes: list[NodeRecord], active: dict[str, JobSummary], now: float, timeout: float) -> list[float]:
    """Seconds until each node that is not idle now is free at the latest (see `place`).

    A starting node is about to be idle (0); a busy one frees when its job's maxWallClockTime
    runs out (a terminating job's nodes: now), a shared one when the last of its jobs' does.
    Silent, unusable and leaving nodes never will.
    """

    def left(job: JobSummary) -> float:
        start = parse_time(job.start_time).timestamp() if job.start_time else now
        return max(0.0, start + wall_clock_seconds(job.max_wall_clock) - now) if job.state == "running" else 0.0

    ends = []
    for node in nodes:
        if node.last_seen and now - node.last_seen > timeout:
            continue
        if node.state in ("starting", "preparing"):
            ends.append(0.0)
        elif node.state != "running":
            continue
        elif node.job and (job := active.get(ids.key(node.job))):
            ends.append(left(job))
        elif sharing := [active[key] for key in node.share_map() if key in active]:
            ends.append(max(map(left, sharing)))
    return ends


def release_stale_claims(store: Store, nodes: list[NodeRecord], active: dict[str, JobSummary]) -> bool:
    """Nodes held by a job that is not running: a launch or an ending died half-way. Free them.

    A launch claims and starts its job in one transaction, so a claim whose job is queued, ended or
    gone is left over (or its ending is about to release it: freeing it first changes nothing),
    whichever process's pass finds it.
    """
    holders = {n.job for n in nodes if n.job} | {job for n in nodes for job in n.share_map()}
    stale = {job for job in holders if ids.key(job) not in active}
    for job_id in stale:
        store.release_nodes(job_id)
    return bool(stale)


def run_pass(svc: Services, cluster: Record, *, thorough: bool = True) -> list[str]:
    """Start what fits now, in one store operation; returns the ids of the jobs started.

    A job that cannot be prepared (its toolkit unknown, its volumes not mounted) fails alone; one
    whose preparation breaks unexpectedly stays queued for the next pass, and the others start.
    Each launched job's lifecycle is due later (`lifecycle_start_delay_seconds`, or its deadline if sooner)."""
    launches: list[tuple[Launch, list[NodeRecord]]] = []
    for job_id, nodes, gpus in decide(svc.store, cluster.id, time.time(), svc.settings.node_timeout_seconds, thorough=thorough):
        record = svc.store.get(job_id)
        try:
            prepared = prepare(svc, record, nodes, cluster, gpus) if record is not None else None
        except Exception:  # noqa: BLE001 - one job's fault must not keep the others from starting
            log.exception("preparing the launch of %s failed; it stays queued", job_id)
            continue
        if prepared is not None:
            launches.append((_handed(prepared, nodes), nodes))
    if not launches:
        return []
    started = svc.store.start_jobs(cluster.id, [launch for launch, _ in launches])
    now = time.time()
    _busy_now(cluster.id, now, [(r, launch) for r, (launch, _) in zip(started, launches, strict=True) if r is not None])
    answering = _answering.get()
    started_arrays = set()
    for record, (_, nodes) in zip(started, launches, strict=True):
        if record is not None:
            svc.wake_nodes([n.id for n in nodes if n.id != answering])
            if array := arrays.array_of(record):
                started_arrays.add(array)
            else:
                due = min(svc.settings.lifecycle_start_delay_seconds, max(0.0, seconds_left(record, now)))
                svc.defer(partial(_start_lifecycle, svc, record), due)
    arrays.tasks_started(svc, started_arrays)
    return [r.id for r in started if r is not None]


def _busy_now(cluster_id: str, now: float, started: list[tuple[Record, Launch]]) -> None:
    """The nodes of the jobs just started are busy until their maxWallClockTime: the ends that quick passes
    reuse say so from now (see `ENDS_REUSE_SECONDS`)."""
    key = ids.key(cluster_id)
    if key not in _ends or not started:
        return
    read_at, ends = _ends[key]
    for record, launch in started:
        if launch.gpus is None:  # a whole-node job (GPU sharers free a node only with its other sharers)
            seconds = wall_clock_seconds((record.properties.get("constraints") or {}).get("maxWallClockTime"))
            ends = ends + [seconds + now - read_at] * len(launch.node_ids)
    _ends[key] = (read_at, sorted(ends))


def _handed(launch: Launch, nodes: list[NodeRecord]) -> Launch:
    """The launch with each task stored as given to the boot its node had when this pass read it: the node's
    next report (the answering node's own, or the one its wake asks for) carries it in its answer, and it costs
    no write of its own (`node_protocol._orders`). A task given to a boot that is gone by then is lost with it."""
    boots = {n.id: n.boot_id for n in nodes}
    return launch._replace(tasks=[replace(t, state="running", boot_id=boots[t.node]) if boots.get(t.node) else t for t in launch.tasks])


def _start_lifecycle(svc: Services, launched: Record) -> None:
    """Start the lifecycle of a job launched a while ago, if it still runs that attempt: one that ended,
    was requeued or is terminating (which starts its lifecycle itself) needs no watching from here, and
    until now nothing needed it (a lost node or a terminate starts it at once, its deadline is not due)."""
    try:
        record = svc.store.get(launched.id)
        if record is not None and state_of(record) is JobState.RUNNING and attempt_of(record) == attempt_of(launched):
            start_lifecycle(svc, record, launch_view(record, time.time()))
    except Exception:  # noqa: BLE001 - the host's reconciliation starts it after a restart
        log.exception("starting the lifecycle of %s failed", launched.id)


class PlanInputs(NamedTuple):
    queued: list[QueuedJob]  # the head of the queue a pass reads, less array tasks past their maxParallel
    free: list[str]  # idle nodes
    busy_until: list[float]
    gpus: dict[str, list[str]]  # the free GPUs of the nodes that jobs may share
    held: list[JobSummary]  # array tasks held back by their array's maxParallel


def plan_inputs(
    store: Store, cluster_id: str, nodes: list[NodeRecord], active: dict[str, JobSummary], now: float, timeout: float, *, busy: bool = False
) -> PlanInputs | None:
    """What a pass hands `plan`; None when no node or GPU is free, where a pass has nothing to place and
    reads no queue (unless `busy`: the queue view wants the queue all the same)."""
    free = [n.id for n in nodes if usable(n, now, timeout)]
    if (answering := _answering.get()) is not None and answering in free:  # its next task rides back on its answer
        free.remove(answering)
        free.insert(0, answering)
    gpus = {n.id: n.free_gpus() for n in nodes if shareable(n, now, timeout)}
    if not free and not any(gpus.values()) and not busy:
        return None
    head = store.queue_head(cluster_id, QUEUE_DEPTH + len(free))
    queued = arrays.within_parallel_limits(store, head) if head else []
    kept = {q.id for q in queued}
    held = [q for q in head if q.id not in kept]
    return PlanInputs([queued_job(q) for q in queued], free, busy_until(nodes, active, now, timeout), gpus, held)


Decision = list[tuple[str, list[NodeRecord], dict[str, list[str]] | None]]

# When each busy node of a cluster frees up, as the last thorough pass in this process read it: (read at,
# seconds until each frees then). A quick pass whose head needs a reservation takes them, aged, for this
# long instead of reading every node and running job again (most of a busy cluster's passes): a pass only
# advises (a launch claims its nodes or fails), and a reservation off by this much holds the head back
# little beside a job's maxWallClockTime.
ENDS_REUSE_SECONDS = 1.0
_ends: dict[str, tuple[float, list[float]]] = {}


def decide(store: Store, cluster_id: str, now: float, timeout: float, *, thorough: bool = True) -> Decision:
    """What a pass starts, `(job id, its nodes, the GPUs it shares of each or None)` in start order.

    A thorough pass (the controller's) reads every node and the running jobs: it frees stale claims
    first, and knows when busy nodes free up, for the reservation of a head that does not fit yet.
    A quick one (a node report's: one per few job ends) reads only the nodes it may place on; where
    the head of the queue needs a reservation, it takes the busy nodes' ends from the last thorough
    pass if that was recent (`ENDS_REUSE_SECONDS`), else it is thorough after all, reusing what it read."""
    quick = None
    if not thorough:
        nodes = store.placeable_nodes(cluster_id)
        quick = plan_inputs(store, cluster_id, nodes, {}, now, timeout)
        if quick is None or not quick.queued:
            return []
        why: dict[str, tuple[str, float]] = {}
        placements, shares = plan(quick.queued, quick.free, (), quick.gpus, why)
        if not any(reason == "reserved" for reason, _ in why.values()):
            return _decision(nodes, placements, shares)
        read_at, ends = _ends.get(ids.key(cluster_id), (-math.inf, []))
        if now - read_at <= ENDS_REUSE_SECONDS:
            why.clear()
            placements, shares = plan(quick.queued, quick.free, [max(0.0, e - (now - read_at)) for e in ends], quick.gpus, why)
            # a head these ends say can never start may be one they are too old to know a node of: look
            if not any(reason == "reserved" and math.isinf(at) for reason, at in why.values()):
                return _decision(nodes, placements, shares)
    nodes = store.nodes(cluster_id)
    held = any(n.job or n.shares for n in nodes)
    active = {ids.key(j.id): j for j in store.job_summaries(cluster_id, ("running", "terminating"))} if held else {}
    if release_stale_claims(store, nodes, active):
        nodes, quick = store.nodes(cluster_id), None  # more nodes are free than the quick read saw
    if quick is not None:  # its free nodes and queue head stand: what it lacked is when the busy nodes free up
        inputs: PlanInputs | None = quick._replace(busy_until=busy_until(nodes, active, now, timeout))
    else:
        inputs = plan_inputs(store, cluster_id, nodes, active, now, timeout)
    if inputs is None or not inputs.queued:
        return []
    _ends[ids.key(cluster_id)] = (now, sorted(inputs.busy_until))
    placements, shares = plan(inputs.queued, inputs.free, inputs.busy_until, inputs.gpus)
    return _decision(nodes, placements, shares)


def _decision(nodes: list[NodeRecord], placements: list[tuple[str, list[str]]], shares: dict) -> Decision:
    by_id = {n.id: n for n in nodes}
    return [(job_id, [by_id[n] for n in node_ids], shares.get(job_id)) for job_id, node_ids in placements]


def file_server_export(svc: Services):
    """file server id -> the directory it exports (its mount point), for the compute port."""

    def export(file_server_id: str) -> str | None:
        record = svc.store.get(file_server_id)
        return (record.properties.get("mountSettings") or {}).get("mountPoint") if record else None

    return export


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mpirun_command(python: str, *, loopback: bool = True) -> str:
    """OpenMPI's launcher: remote launches go through the node agents (rsh.py), and traffic over
    TCP: loopback between local nodes, the nodes' networks between machines that joined. Nodes may
    share one kernel (local ones, or network namespaces), so the shared-memory paths that assume one
    daemon per host are off (vader BTL, hwloc's shared topology; PMIx's shared-memory store is off
    through the job environment): with them ranks crash at random."""
    interfaces = " --mca oob_tcp_if_include lo --mca btl_tcp_if_include lo" if loopback else ""
    return (
        "mpirun --allow-run-as-root --oversubscribe --bind-to none"
        f' --mca plm_rsh_agent "{python} -m batchai.agent.rsh"'  # double quotes: a joined node's $BATCHAI_PYTHON expands
        f" --mca btl self,tcp --mca rtc_hwloc_vmhole none{interfaces}"
    )


def attached(cluster: Record) -> bool:
    """Whether the cluster's nodes are machines that joined it (see batchai/node_identity.py)."""
    return bool(cluster.properties.get("attached"))


def nodes_elsewhere(svc: Services, cluster: Record) -> bool:
    """Whether the cluster's nodes are other machines (joined ones, or VMs): they see nothing of this disk."""
    return attached(cluster) or svc.compute.remote


def shared_volume(cluster: Record) -> str | None:
    """A cluster volume every node mounts read-write (a file server or an Azure Files share): where a job on
    other machines keeps AZ_BATCHAI_SHARED_JOB_TEMP. Its relativeMountPath, or None."""
    volumes = (cluster.properties.get("nodeSetup") or {}).get("mountVolumes") or {}
    for kind in ("fileServers", "azureFileShares"):
        for volume in volumes.get(kind) or []:
            return str(volume["relativeMountPath"]).strip("/")
    return None


def launch_context(
    svc: Services, record: Record, nodes: list[NodeRecord], cluster: Record, gpus: dict[str, list[str]] | None = None
) -> LaunchContext:
    elsewhere = nodes_elsewhere(svc, cluster)
    # another machine's interpreter is the one its agent runs on (the agent says which in the task's environment)
    python = f"${{{PYTHON_ENV}:-python3}}" if elsewhere else svc.settings.python
    # a job takes whole nodes (Batch AI's semantics), all their GPUs; one with gpusPerNode, the GPUs it shares of each
    placed = tuple(
        PlacedNode(
            n.id,
            n.name,
            n.address or "127.0.0.1",
            n.root or "",
            n.exec_port or 0,
            tuple(gpus[n.id]) if gpus else tuple(g["index"] for g in n.gpu_list()),
        )
        for n in nodes
    )
    mount_root, job_dir, data_dir = (
        str(svc.settings.cluster_mount_root(cluster.internal["uuid"])),
        str(svc.settings.job_dir(record.internal["uuid"])),
        str(svc.settings.data_dir),
    )
    return LaunchContext(
        job_id=record.id,
        job_name=record.name,
        job_uuid=record.internal["uuid"],
        attempt=record.internal["attempt"],
        output_segment=record.properties["jobOutputDirectoryPathSegment"],
        cluster_mount_root=mount_root,
        job_dir=job_dir,
        nodes=placed,
        master_port=_free_port(),
        gpus_per_node=min(len(p.gpus) for p in placed),
        python=python,
        mpirun=mpirun_command(python, loopback=not elsewhere),
        exec_secret=secrets.token_hex(16),
        # a container sees the job's own directories and the shared storage its mounts link to, never the
        # rest of the data dir (the token, the databases, other jobs' directories)
        container_binds=(mount_root, job_dir, f"{data_dir}/storage", f"{data_dir}/fileservers"),
        node_local=elsewhere,
        shared_volume=shared_volume(cluster) if elsewhere else None,
    )


def uploaded_paths(svc: Services, record: Record, paths) -> dict:
    """Where the control plane keeps what the agents of other machines send of a job's directories."""
    base = svc.settings.job_dir(record.internal["uuid"]) / "files"
    return {"stdouterr": str(base / "stdouterr"), "outputs": {k: str(base / "outputs" / k) for k in paths.outputs}}


def prepare(
    svc: Services, record: Record, nodes: list[NodeRecord], cluster: Record, gpus: dict[str, list[str]] | None = None
) -> Launch | None:
    """The queued job's start on `nodes` (sharing `gpus` of each, if given; else whole) with its tasks planned
    and its volumes mounted, for `Store.start_jobs`; None when it cannot start at all, and it is failed."""
    try:
        props = job_properties(record)
        ctx = launch_context(svc, record, nodes, cluster, gpus)
        tasks = plan_job(props, ctx)
        if not ctx.node_local:
            svc.compute.mount(ctx.job_mount_root, record.properties.get("mountVolumes"), file_server_export(svc))
        elif svc.compute.remote:
            tasks = mounted_on_nodes(svc, record, ctx, tasks)
        paths = job_paths(props, ctx)
    except UnsupportedToolkit as exc:
        fail_unlaunchable(svc, record.id, "UnsupportedToolkit", str(exc))
        return None
    except (OSError, LookupError) as exc:
        fail_unlaunchable(svc, record.id, "MountFailed", f"The job's volumes could not be mounted: {exc}")
        return None
    # where the files really are: a path through a job-level mount ends with the job
    if ctx.node_local:
        real = uploaded_paths(svc, record, paths)
    else:
        real = {"stdouterr": os.path.realpath(paths.stdouterr), "outputs": {k: os.path.realpath(v) for k, v in paths.outputs.items()}}
    start = job_state.change(job_state.start, now=utcnow(), nodes=[(n.id, n.name) for n in nodes], paths=real)
    task_records = [TaskRecord(id=t.task_id, job=record.id, node=t.node_id, attempt=ctx.attempt, spec=t.to_json()) for t in tasks]
    return Launch(record.id, [n.id for n in nodes], start, task_records, gpus)


def mounted_on_nodes(svc: Services, record: Record, ctx: LaunchContext, tasks: list[NodeTask]) -> list[NodeTask]:
    """A job's own volumes on VMs: each node's agent mounts them under the job's mount root there before the
    task, and unmounts them after (a node's first task of the job only: a servers task shares its node)."""
    volumes = record.properties.get("mountVolumes")
    if not volumes:
        return tasks
    parsed = MountVolumes.model_validate(volumes)
    nodes = {n.id: n for n in ctx.nodes}
    out = []
    for task in tasks:
        if task.after is None:
            try:
                steps = plan_mounts(
                    parsed, f"{ctx.job_dir_of(nodes[task.node_id])}/mounts", file_server_address=file_server_address(svc.store)
                )
            except ValueError as exc:  # no credentials, a file server without an address yet
                raise LookupError(str(exc)) from None
            task = replace(task, mounts=render(steps, redact=False), unmounts=render(plan_unmounts(steps), redact=False))
        out.append(task)
    return out


def fail_unlaunchable(svc: Services, job_id: str, code: str, message: str) -> None:
    record = svc.store.mutate(job_id, job_state.change(job_state.fail_unlaunchable, now=utcnow(), code=code, message=message))
    if record is not None:
        arrays.tell_ended(svc, record)  # a requeued job may have a lifecycle waiting
