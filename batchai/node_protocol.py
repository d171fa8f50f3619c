"""The node protocol, without its transport: what a node's register and heartbeat do.

Agents speak it over HTTP (batchai/api/nodes.py); simulated nodes call it in process
(batchai/adapters/simulated_compute.py). A heartbeat carries what the node runs, what
finished and its tasks' new metric lines (batchai/metrics.py); the answer carries tasks to start
and to kill. Finished results are recorded with a
compare-and-set, so a result re-sent after a lost answer is harmless; a result that decides its
job ends the job there and then (`batchai.jobs.settle`), which frees its nodes for the controller.
A node that joins runs the cluster's setup task first, if any.

Machines join attached clusters by enrolling (`enroll`) with the cluster's token; they get a node of
their own and its credential (batchai/node_identity.py). A node reports only its own tasks' results
and sends only its own tasks' files (`receive_file`): anything else is refused (NotYours, a 403).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
import uuid
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from batchai import job_state, jobs, metrics, node_identity, scheduling_pass
from batchai.agent.gpus import MAX_GPUS, MAX_TEXT
from batchai.errors import ApiError
from batchai.frameworks import PlacedNode
from batchai.frameworks.node_setup import plan_node_setup
from batchai.lifecycle import NODE_LOST, utcnow
from batchai.mounting import file_server_address, mount_plan, render
from batchai.ports import REPORTABLE, NodeRecord, TaskRecord
from batchai.wake import wake_cluster, wake_trial_sweep

if TYPE_CHECKING:
    from batchai.services import Services

JOINED = "joined"  # NodeRecord.machine of a node that enrolled from another machine
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
MAX_FILE_BYTES = 1 << 40  # an offset past this is refused: no file of a job grows that large
SETUP_ATTEMPT = 0  # the attempt number of node setup tasks (jobs count from 1)
# how stale a node's stored last_seen may be, as a part of the node timeout (a second of 15 by default): a
# write per beat was most of the store's writes, and each report of a task's start or end is a beat
LAST_SEEN_RESOLUTION = 1 / 15


def register(svc: Services, node_id: str, body: dict) -> dict:
    node = svc.store.get_node(node_id)
    if node is None:
        return {"heartbeatSeconds": svc.settings.heartbeat_seconds}
    if node.boot_id and node.boot_id != body["bootId"]:
        # The agent restarted: whatever it ran under its old boot is gone (what it had not started, it will).
        jobs.fail_tasks_of_node(svc, node_id, NODE_LOST, states=("running", "killing"))
    joined = node.state in ("starting", "preparing")
    svc.store.update_node(
        node_id,
        boot_id=body["bootId"],
        pid=body.get("pid"),
        address=body.get("address"),
        root=body.get("root"),
        exec_port=body.get("execPort"),
        gpus=_gpus(body.get("gpus")),
        last_seen=time.time(),
        state=node.state,
    )
    if joined:
        _join(svc, svc.store.get_node(node_id), body["bootId"])
    return {"heartbeatSeconds": svc.settings.heartbeat_seconds}


def _gpus(reported) -> str | None:
    """The GPUs a node reported, checked and bounded, as stored (JSON); None for none."""
    if not reported:
        return None
    if not isinstance(reported, list) or len(reported) > MAX_GPUS:
        raise ValueError(f"gpus must be a list of at most {MAX_GPUS} GPUs")
    gpus = []
    for gpu in reported:
        index, name, memory, uid = gpu["index"], gpu["name"], gpu.get("memoryMiB"), gpu["uuid"]
        if not (isinstance(index, str) and index.isdigit() and isinstance(name, str) and isinstance(uid, str)):
            raise ValueError("a GPU needs an index (digits), a name and a uuid")
        if memory is not None and (not isinstance(memory, int) or isinstance(memory, bool)):
            raise ValueError("a GPU's memoryMiB is an integer")
        gpus.append({"index": index, "name": name[:MAX_TEXT], "memoryMiB": memory, "uuid": uid[:MAX_TEXT]})
    return json.dumps(gpus)


# What a joined machine runs when its cluster has volumes to mount but no setup task of its own.
MOUNT_ONLY_SETUP = {"commandLine": "true", "stdOutErrPathPrefix": "$AZ_BATCHAI_MOUNT_ROOT", "stdOutErrPathSuffix": ".batchai/setup"}


def _join(svc: Services, node, boot_id: str) -> None:
    """A new node (or a new boot of one still preparing) runs the cluster's setup task first. A machine that
    joined mounts the cluster's volumes under its own root first (the agent runs the mount script before the
    setup task; a VM's boot script mounts them on a scale set)."""
    cluster = svc.store.get(node.cluster)
    if cluster is None:
        _ready(svc, node.id)
        return
    setup = (cluster.properties.get("nodeSetup") or {}).get("setupTask")
    joined = scheduling_pass.attached(cluster)
    mount_root = f"{node.root}/mounts" if joined else str(svc.settings.cluster_mount_root(cluster.internal["uuid"]))
    volumes = (cluster.properties.get("nodeSetup") or {}).get("mountVolumes") if joined else None
    try:
        mounts = render(mount_plan(volumes, mount_root, file_server_address(svc.store)), redact=False) if volumes else ""
    except ValueError as exc:  # no credentials, a file server without an address yet
        svc.store.update_node(node.id, state="unusable", error=f"The cluster's volumes cannot be mounted: {exc}")
        return
    if not (setup or mounts):
        _ready(svc, node.id)
        return
    task = plan_node_setup(
        setup or MOUNT_ONLY_SETUP,
        cluster_id=cluster.id,
        node=PlacedNode(node.id, node.name, node.address or "127.0.0.1", node.root or ""),
        cluster_mount_root=mount_root,
        boot_id=boot_id,
    )
    task = replace(task, mounts=mounts)
    svc.store.put_tasks([TaskRecord(id=task.task_id, job=cluster.id, node=node.id, attempt=0, spec=task.to_json())])
    svc.store.update_node(node.id, state="preparing", error=None)


def _ready(svc: Services, node_id: str) -> None:
    """The node joins the cluster's pool of idle nodes: its controller may start something there."""
    node = svc.store.update_node(node_id, state="idle", error=None, idle_since=time.time())
    if node is not None:
        _wake_controller(svc, node.cluster)


def _setup_finished(svc: Services, node_id: str, result: dict) -> None:
    """The node joins the cluster's pool, or is unusable with the setup task's error."""
    code = result.get("exitCode")
    if code == 0:
        _ready(svc, node_id)
        return
    reason = result.get("error") or f"exit code {code}"
    svc.store.update_node(
        node_id, state="unusable", error=f"The node setup task failed ({reason}); its logs are under the setup task's stdOutErrPathPrefix."
    )


def _wake_controller(svc: Services, cluster_id: str) -> None:
    """New capacity: the cluster's controller runs a pass."""
    wake_cluster(svc, svc.store.get(cluster_id))


class NotYours(ApiError):
    def __init__(self, what: str):
        super().__init__(403, "AuthorizationFailed", f"{what} belongs to another node.")


def _own_task(svc: Services, node_id: str, task_id: str) -> TaskRecord | None:
    """The task, if it is this node's (None: no such task any more); NotYours if another node's."""
    task = svc.store.get_task(task_id)
    if task is not None and task.node != node_id:
        raise NotYours(f"The task '{task_id}'")
    return task


def _record_results(svc: Services, node_id: str, body: dict) -> list[str]:
    acked = []
    for result in body.get("finished", []):
        task_id = result["taskId"]
        known = _own_task(svc, node_id, task_id)
        if known is not None and known.state != "finished":  # finished: its job's end stopped it
            fields = {
                "state": "finished",
                "exit_code": result.get("exitCode"),
                "error": result.get("error"),
                "start_time": result.get("startTime"),
                "end_time": result.get("endTime"),
            }
            if known.attempt != SETUP_ATTEMPT:
                _record_warnings(svc, known.job, node_id, result.get("warnings") or [])
                jobs.finish_task(svc, known, fields)  # the job ends now if this decided it
            elif svc.store.update_task(task_id, only_if_state=REPORTABLE, **fields):
                _setup_finished(svc, node_id, result)
        acked.append(task_id)
    return acked


def _record_metrics(svc: Services, node_id: str, reports: list[dict]) -> None:
    for report in reports:
        job = metrics.record_report(svc, node_id, report)
        if job is not None:
            svc.defer(partial(wake_trial_sweep, svc, job))  # a sweep's early-termination policy looks at each report


def _record_warnings(svc: Services, job_id: str, node_id: str, warnings: list[str]) -> None:
    if warnings:
        node = svc.store.get_node(node_id)
        svc.store.mutate(
            job_id, job_state.change(job_state.note_warnings, now=utcnow(), node=node.name if node else node_id, warnings=warnings)
        )


def _orders(svc: Services, node_id: str, body: dict) -> tuple[list[dict], list[str]]:
    """Tasks to start and tasks to kill. To start: those given to this boot (a launch gives them to the boot
    it found) that it does not report, and pending ones (a node's setup task), given to it now. To kill: its
    own that are to stop, and what it runs that is not its own (a task that ended meanwhile is killed on its
    next beat). A task to stop that this boot does not report never reached it (an agent reports each start
    on its next beat): it ends now. Tasks given to an earlier boot were lost with it."""
    boot = body["bootId"]
    reported = set(body.get("running", [])) | {f["taskId"] for f in body.get("finished", [])}
    start: list[dict] = []
    own: set[str] = set()
    kill: list[TaskRecord] = []
    unstarted: list[TaskRecord] = []
    lost: list[TaskRecord] = []
    for t in svc.store.tasks(node=node_id, states=["pending", "running", "killing"]):
        if t.state == "pending":
            if svc.store.update_task(t.id, only_if_state=["pending"], state="running", boot_id=boot):
                start.append(t.spec)
                own.add(t.id)
            continue
        if t.boot_id != boot:
            lost.append(t)
            continue
        own.add(t.id)
        if t.state == "running" and t.id not in reported:
            start.append(t.spec)
        elif t.state == "killing":
            (kill if t.id in reported else unstarted).append(t)
    for t in unstarted:  # as its report of them killed would
        if svc.store.update_task(t.id, only_if_state=["killing"], state="finished", error="terminated", end_time=utcnow()):
            if t.attempt != SETUP_ATTEMPT:
                jobs.settle(svc, t.job)
    jobs.lose_tasks(svc, lost, NODE_LOST, ("running", "killing"))
    return start, [t.id for t in kill] + sorted(set(body.get("running", [])) - own)


def beat(svc: Services, node_id: str, body: dict) -> dict:
    node = svc.store.get_node(node_id)
    if node is None:
        return {"start": [], "kill": list(body.get("running", [])), "ack": [], "action": "shutdown"}
    if node.boot_id != body.get("bootId"):
        return {"start": [], "kill": [], "ack": [], "action": "register"}
    now = time.time()
    if now - node.last_seen >= LAST_SEEN_RESOLUTION * svc.settings.node_timeout_seconds:
        if svc.note_seen is not None:
            svc.note_seen(node_id, now)
        else:
            svc.store.update_node(node_id, last_seen=now)
    _record_metrics(svc, node_id, body.get("metrics") or [])  # first: a job that ends below has all it reported
    with scheduling_pass.answering(node_id):  # the orders below answer for what it starts here
        acked = _record_results(svc, node_id, body)
    start, kill = _orders(svc, node_id, body)
    return {"start": start, "kill": kill, "ack": acked, "action": "ok"}


def enroll(svc: Services, key: bytes, token: str, body: dict) -> dict:
    """A machine joins the attached cluster the enrollment token names: a new node, and its credential."""
    cluster_id = node_identity.enrollment_cluster(token)
    cluster = svc.store.get(cluster_id) if cluster_id else None
    generation = cluster.internal.get("enrollGeneration", 0) if cluster else 0
    if cluster is None or not scheduling_pass.attached(cluster) or not node_identity.enrollment_matches(key, token, cluster.id, generation):
        raise ApiError(401, "AuthenticationFailed", "The enrollment token is not valid (wrong, or rotated since).")
    nodes = svc.store.nodes(cluster.id)
    name = body.get("name")
    if name is None:
        taken = {n.name for n in nodes}
        name = next(f"node-{i}" for i in range(len(taken) + 1) if f"node-{i}" not in taken)
    if not isinstance(name, str) or not NODE_NAME.fullmatch(name):
        raise ApiError.bad_request("name: 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit.", target="name")
    now = time.time()
    for old in nodes:
        if old.name != name:
            continue
        if old.state != "unusable" and now - old.last_seen <= svc.settings.node_timeout_seconds:
            raise ApiError.conflict(
                f"The cluster has a live node named '{name}'; remove it first, or join under another name.", target="name"
            )
        remove_node(svc, old)  # the same machine back after its agent died: its old node is gone for good
    node_id = f"{cluster.internal['uuid'][:8]}-{name}-{uuid.uuid4().hex[:12]}"
    svc.store.put_node(NodeRecord(id=node_id, cluster=cluster.id, name=name, state="starting", last_seen=now, machine=JOINED))
    return {
        "nodeId": node_id,
        "clusterId": cluster.id,
        "name": name,
        "credential": node_identity.node_credential(key, node_id),
        "heartbeatSeconds": svc.settings.heartbeat_seconds,
    }


def remove_node(svc: Services, node: NodeRecord) -> None:
    """The node leaves for good: its tasks are void (their jobs retry elsewhere) and its credential
    refused from now on (its record is gone; ids are never reused)."""
    svc.store.update_node(node.id, state="leaving")
    jobs.fail_tasks_of_node(svc, node.id, NODE_LOST)
    svc.store.delete_node(node.id)


def receive_file(svc: Services, node_id: str, body: dict) -> dict:
    """Writes a piece of one of the node's tasks' files where the control plane keeps the job's files."""
    task = _own_task(svc, node_id, body["taskId"])
    job = svc.store.get(task.job) if task is not None else None
    paths = job.internal.get("paths") if job is not None else None
    if not paths:
        return {"written": 0}  # the job is gone: nobody reads its files any more
    directory = body["directory"]
    root = paths["stdouterr"] if directory == "stdouterr" else paths["outputs"].get(directory)
    if not isinstance(root, str):
        raise ApiError.bad_request(f"The job has no output directory '{directory}'.", target="directory")
    relative = body["path"]
    parts = relative.split("/") if isinstance(relative, str) else []
    if not parts or any(p in ("", ".", "..") for p in parts):
        raise ApiError.bad_request("path must be a relative path inside the output directory.", target="path")
    offset = body["offset"]
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= MAX_FILE_BYTES:
        raise ApiError.bad_request(f"offset must be an integer from 0 to {MAX_FILE_BYTES}.", target="offset")
    try:
        data = base64.b64decode(body["data"], validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise ApiError.bad_request("data must be base64.", target="data") from None
    target = Path(root, *parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, offset)
        os.ftruncate(fd, offset + len(data))
    finally:
        os.close(fd)
    return {"written": len(data)}
