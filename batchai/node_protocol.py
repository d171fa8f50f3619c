"""The node protocol, without its transport: what a node's register and heartbeat do.

Agents speak it over HTTP (batchai/api/nodes.py); simulated nodes call it in process
(batchai/adapters/simulated_compute.py). A heartbeat carries what the node runs, what
finished and its tasks' new metric lines (batchai/metrics.py); the answer carries tasks to start
and to kill. Finished results are recorded with a
compare-and-set, so a result re-sent after a lost answer is harmless; a result that decides its
job ends the job there and then (`batchai.jobs.settle`), which frees its nodes for the controller.
A node that joins runs the cluster's setup task first, if any.
"""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING

from batchai import job_state, jobs, metrics, scheduling_pass
from batchai.frameworks import PlacedNode
from batchai.frameworks.node_setup import plan_node_setup
from batchai.lifecycle import NODE_LOST, utcnow
from batchai.ports import TaskRecord
from batchai.wake import wake_cluster, wake_trial_sweep

if TYPE_CHECKING:
    from batchai.services import Services

SETUP_ATTEMPT = 0  # the attempt number of node setup tasks (jobs count from 1)
LAST_SEEN_RESOLUTION = 1.0  # seconds; a node is silent only after node_timeout_seconds (15 by default)


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
        last_seen=time.time(),
        state=node.state,
    )
    if joined:
        _join(svc, svc.store.get_node(node_id), body["bootId"])
    return {"heartbeatSeconds": svc.settings.heartbeat_seconds}


def _join(svc: Services, node, boot_id: str) -> None:
    """A new node (or a new boot of one still preparing) runs the cluster's setup task first."""
    cluster = svc.store.get(node.cluster)
    setup = ((cluster.properties.get("nodeSetup") or {}).get("setupTask")) if cluster else None
    if cluster is None or not setup:
        svc.store.update_node(node.id, state="idle", error=None, idle_since=time.time())
        _wake_controller(svc, node.cluster)
        return
    task = plan_node_setup(
        setup,
        cluster_id=cluster.id,
        node=PlacedNode(node.id, node.name, node.address or "127.0.0.1", node.root or ""),
        cluster_mount_root=str(svc.settings.cluster_mount_root(cluster.internal["uuid"])),
        boot_id=boot_id,
    )
    svc.store.put_tasks([TaskRecord(id=task.task_id, job=cluster.id, node=node.id, attempt=0, spec=task.to_json())])
    svc.store.update_node(node.id, state="preparing", error=None)


def _setup_finished(svc: Services, node_id: str, result: dict) -> None:
    """The node joins the cluster's pool, or is unusable with the setup task's error."""
    code = result.get("exitCode")
    if code == 0:
        node = svc.store.update_node(node_id, state="idle", error=None, idle_since=time.time())
        if node is not None:
            _wake_controller(svc, node.cluster)
        return
    reason = result.get("error") or f"exit code {code}"
    svc.store.update_node(
        node_id, state="unusable", error=f"The node setup task failed ({reason}); its logs are under the setup task's stdOutErrPathPrefix."
    )


def _wake_controller(svc: Services, cluster_id: str) -> None:
    """New capacity: the cluster's controller runs a pass."""
    wake_cluster(svc, svc.store.get(cluster_id))


def _record_results(svc: Services, node_id: str, body: dict) -> list[str]:
    acked = []
    for result in body.get("finished", []):
        task_id = result["taskId"]
        if svc.store.update_task(
            task_id,
            only_if_state=["pending", "running", "killing"],
            state="finished",
            exit_code=result.get("exitCode"),
            error=result.get("error"),
            start_time=result.get("startTime"),
            end_time=result.get("endTime"),
        ):
            task = svc.store.get_task(task_id)
            if task is not None and task.attempt == SETUP_ATTEMPT:
                _setup_finished(svc, node_id, result)
            elif task is not None:
                _record_warnings(svc, task.job, node_id, result.get("warnings") or [])
                jobs.settle(svc, task.job)  # the job ends now if this decided it
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
    """Tasks to start (new ones, and ones the agent never confirmed) and tasks to kill."""
    boot = body["bootId"]
    reported = set(body.get("running", [])) | {f["taskId"] for f in body.get("finished", [])}
    start, kill = [], []
    for t in svc.store.tasks(node=node_id, states=["pending", "running", "killing"]):
        if t.state == "pending":
            if svc.store.update_task(t.id, only_if_state=["pending"], state="running", boot_id=boot):
                start.append(t.spec)
        elif t.state == "running" and t.boot_id == boot and t.id not in reported:
            start.append(t.spec)
        elif t.state == "killing":
            kill.append(t.id)
    stray = set(body.get("running", [])) - {t.id for t in svc.store.tasks(node=node_id, states=["running", "killing"])}
    return start, kill + sorted(stray)


def beat(svc: Services, node_id: str, body: dict) -> dict:
    node = svc.store.get_node(node_id)
    if node is None:
        return {"start": [], "kill": list(body.get("running", [])), "ack": [], "action": "shutdown"}
    if node.boot_id != body.get("bootId"):
        return {"start": [], "kill": [], "ack": [], "action": "register"}
    now = time.time()
    if now - node.last_seen >= LAST_SEEN_RESOLUTION:  # a write per beat was most of the store's writes
        svc.store.update_node(node_id, last_seen=now)
    _record_metrics(svc, node_id, body.get("metrics") or [])  # first: a job that ends below has all it reported
    with scheduling_pass.answering(node_id):  # the orders below answer for what it starts here
        acked = _record_results(svc, node_id, body)
    start, kill = _orders(svc, node_id, body)
    return {"start": start, "kill": kill, "ack": acked, "action": "ok"}
