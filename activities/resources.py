"""Deleting a resource and everything under it, as one long-running operation."""

from __future__ import annotations

from activities.clusters import stop_cluster_nodes
from batchai import arrays, ids, job_state, sweep_runs
from batchai.job_state import ACTIVE, LAUNCHED
from batchai.jobs import stop_tasks
from batchai.lifecycle import utcnow
from batchai.services import Services
from batchai.wake import wake_job, wake_sweep


def delete_resource(svc: Services, inp: dict) -> dict:
    """Stop what runs under the resource (jobs' processes, clusters' nodes), then delete the tree."""
    resource_id, op_id = inp["resourceId"], inp["operationId"]
    root = svc.store.get(resource_id)
    if root is not None:
        # by id: an experiment's sweeps yield their trials, which are among its jobs too
        doomed = list({ids.key(r.id): r for r in [root, *_descendants(svc, root)]}.values())
        for r in doomed:
            if r.type == "jobs" and r.properties.get("executionState") in LAUNCHED:
                stop_tasks(svc, r)
        for r in doomed:
            if r.type == "clusters":
                _fail_jobs_of(svc, r.id)
                stop_cluster_nodes(svc, r.id)
            if r.type == "fileServers" and svc.file_servers is not None:
                svc.file_servers.delete(r.internal["uuid"])
        for r in doomed:  # the root's tree, and what belongs to it elsewhere (a sweep's trials)
            if r is root or not ids.key(r.id).startswith(ids.key(resource_id) + "/"):
                svc.store.delete_tree(r.id)
        for r in doomed:
            if r.type == "sweeps":
                wake_sweep(svc, r.internal["uuid"])  # its orchestration sees it gone and ends now
        for r in doomed:
            if r.type == "jobs" and r.properties.get("executionState") in ACTIVE and not arrays.array_of(r):
                wake_job(svc, r)  # its lifecycle sees it gone and ends now, not at its next timer
    svc.store.finish_operation(op_id, "Succeeded")
    return {"deleted": resource_id}


def provision_file_server(svc: Services, inp: dict) -> dict:
    """Makes a file server's machine; it shows `succeeded` with its mountSettings (the private address the
    nodes mount), or `failed` with the platform's error. A file server deleted meanwhile loses its machine."""
    record = svc.store.get(inp["fileServerId"])
    if record is None or record.properties.get("provisioningState") != "creating" or svc.file_servers is None:
        return {"state": "gone" if record is None else record.properties.get("provisioningState")}
    try:
        mount_settings = svc.file_servers.create(record.internal["uuid"], record.properties)
    except ValueError as exc:  # the properties: no retry helps
        return _file_server_ended(svc, record.id, "failed", errors=[{"code": "InvalidFileServer", "message": str(exc)}])
    ended = _file_server_ended(svc, record.id, "succeeded", mountSettings=mount_settings)
    if ended["state"] == "gone":
        svc.file_servers.delete(record.internal["uuid"])
    return ended


def _file_server_ended(svc: Services, file_server_id: str, state: str, **properties) -> dict:
    def update(r):
        if r.properties.get("provisioningState") != "creating":
            return None  # being deleted
        r.properties.update(properties, provisioningState=state, provisioningStateTransitionTime=utcnow())
        return r

    return {"state": state if svc.store.mutate(file_server_id, update) is not None else "gone"}


def _descendants(svc: Services, record):
    if record.type == "sweeps":  # its trials are jobs of its experiment
        for trial in record.internal.get("trials", []):
            job = svc.store.get(sweep_runs.trial_job_id(record, trial["number"]))
            if job is not None:
                yield job
        return
    # a job's children: an array's tasks
    kinds = {"workspaces": ["clusters", "fileServers", "experiments"], "experiments": ["jobs", "sweeps"], "jobs": ["jobs"]}
    for kind in kinds.get(record.type, []):
        for child in svc.store.children(record.id, kind):
            yield child
            yield from _descendants(svc, child)


def _fail_jobs_of(svc: Services, cluster_id: str) -> None:
    for job in svc.store.jobs(states=ACTIVE, cluster=cluster_id):
        stop_tasks(svc, job)
        ended = svc.store.mutate(job.id, job_state.change(job_state.fail_cluster_deleted, now=utcnow()))
        if ended is not None:
            arrays.tell_ended(svc, ended)
