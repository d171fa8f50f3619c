"""The one create-job path: HTTP, queue messages and blob drops all end here, so they behave alike."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from batchai import arrays, ids, job_state, render
from batchai.audit import JOB_WRITE, audit
from batchai.errors import ApiError
from batchai.model import JobCreateParameters, load_job_file, validate_name, validate_resource_group
from batchai.model.names import validate_subscription
from batchai.ports import Conflict
from batchai.records import new_record
from batchai.scheduling_pass import attached
from batchai.wake import wake_cluster

if TYPE_CHECKING:
    from batchai.services import Services


def cluster_capacity(cluster) -> int:
    scale = cluster.properties.get("scaleSettings") or {}
    if "autoScale" in scale:
        return scale["autoScale"]["maximumNodeCount"]
    return scale.get("manual", {}).get("targetNodeCount", 0)


def check_cluster(svc: Services, props, workspace_id: str):
    cluster_id = props.cluster.id
    parsed = ids.parse(cluster_id)
    if parsed is None or parsed.kind != "clusters" or ids.key(parsed.workspace_id) != ids.key(workspace_id):
        raise ApiError.bad_request(
            "properties.cluster.id must be the id of a cluster in the job's workspace.", target="properties.cluster.id"
        )
    cluster = svc.store.get(cluster_id)
    if cluster is None:
        raise ApiError.bad_request(f"The cluster '{parsed.name}' does not exist.", target="properties.cluster.id")
    capacity = cluster_capacity(cluster)
    if props.node_count > capacity and not attached(cluster):  # machines may join an attached one at any time
        raise ApiError.bad_request(
            f"properties.nodeCount ({props.node_count}) exceeds the {capacity} node(s) cluster '{parsed.name}' can have.",
            target="properties.nodeCount",
        )
    return cluster


def submit_job(
    svc: Services,
    job_id: str,
    params: JobCreateParameters,
    *,
    idempotency_key: str | None = None,
    sweep: dict | None = None,
    tags: dict[str, str] | None = None,
) -> dict:
    """The one create-job path: validate against the cluster, store it queued, ask the cluster's
    controller for a pass (debounced: a burst of submissions is one pass). The job gets its durable
    lifecycle when the controller launches it; until then the stored queue is all there is to it.

    With an `idempotency_key`, submitting again what was already stored under the same key
    returns the stored job instead of a conflict: a redelivered queue message is harmless.
    A sweep's trial carries `sweep` ({"id", "uuid", "trial"}: its ends and metrics wake the sweep) and `tags`.
    An array job (`arraySettings`) is stored with all its tasks, or not at all.
    """
    parsed = ids.parse(job_id)
    if parsed is None or parsed.experiment is None:
        raise ApiError.bad_request(f"'{job_id}' is not the id of a job.")
    experiment = svc.store.get(ids.child_id(parsed.workspace_id, "experiments", parsed.experiment))
    if experiment is None:
        raise ApiError.not_found(f"The experiment '{parsed.experiment}' was not found.")
    props = params.properties
    if props.cluster is None:
        raise ApiError.bad_request("The job needs properties.cluster.", target="properties.cluster")
    cluster = check_cluster(svc, props, parsed.workspace_id)
    if sweep is not None and props.array_settings is not None:
        raise ApiError.bad_request("A sweep's trial cannot be an array job.", target="properties.trial.properties.arraySettings")
    props.cluster.id = cluster.id
    job_uuid = uuid.uuid4().hex
    wire = props.to_wire()
    wire["toolType"] = props.tool_type
    wire["jobOutputDirectoryPathSegment"] = ids.output_segment(job_id, job_uuid)
    record = new_record(job_id, "jobs", parsed.name, experiment.id, wire, **({"tags": tags} if tags else {}))
    job_state.new_job(record, record.properties["creationTime"], uuid=job_uuid, idempotency_key=idempotency_key)
    if sweep is not None:
        record.internal["sweep"] = sweep
    try:
        record = svc.store.create_many([record, *arrays.new_tasks(record)] if arrays.is_array(record) else [record])[0]
    except Conflict:
        existing = svc.store.get(job_id)
        if idempotency_key and existing is not None and existing.internal.get("idempotencyKey") == idempotency_key:
            return render.job(existing)
        raise ApiError.conflict(f"The job '{parsed.name}' already exists in experiment '{parsed.experiment}'.") from None
    wake_cluster(svc, cluster)
    return render.job(record)


DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
DEFAULT_RESOURCE_GROUP = "default"


def submit_message(svc: Services, message: dict, *, via: str, idempotency_key: str | None = None) -> dict:
    """A submission message (queue body or blob drop) through the same create-job path.

    The message: `{"workspace", "experiment", "jobName", "job"}` where `job` is a job resource
    body as the REST API takes it or an original Batch AI job file; optional `"cluster"` (a
    name in the workspace, when the job names none), `"placeholders"` (`<NAME>` values),
    `"resourceGroup"`, `"subscription"` and `"idempotencyKey"`. Raises ApiError (400 naming
    the field, 404 for a missing workspace or experiment). The audit log records it as done by the
    channel `via` (`queue`, `drop`), with its result.
    """
    target = "/".join(str(message.get(k, "?")) for k in ("workspace", "experiment", "jobName")) if isinstance(message, dict) else "?"
    try:
        job = _submit_message(svc, message, idempotency_key)
    except ApiError as exc:
        audit(svc.store, via, via, JOB_WRITE, target[:300], exc.status, exc.code)
        raise
    audit(svc.store, via, via, JOB_WRITE, job["id"], 200)
    return job


def _submit_message(svc: Services, message: dict, idempotency_key: str | None) -> dict:
    if not isinstance(message, dict):
        raise ApiError.bad_request("A submission message must be a JSON object.")
    for field in ("workspace", "experiment", "jobName", "job"):
        if not message.get(field):
            raise ApiError.bad_request(f"The submission message needs '{field}'.", target=field)
    subscription = validate_subscription(message.get("subscription") or DEFAULT_SUBSCRIPTION)
    group = validate_resource_group(message.get("resourceGroup") or DEFAULT_RESOURCE_GROUP)
    workspace_id = ids.workspace_id(subscription, group, validate_name("workspace", message["workspace"], "workspace"))
    validate_name("experiment", message["experiment"], "experiment")
    if svc.store.get(workspace_id) is None:
        raise ApiError.not_found(f"The workspace '{message['workspace']}' was not found.", target="workspace")
    cluster_id = ids.child_id(workspace_id, "clusters", message["cluster"]) if message.get("cluster") else None
    params = load_job_file(message["job"], cluster_id=cluster_id, placeholders=message.get("placeholders"), require_cluster=True)
    job_id = ids.child_id(ids.child_id(workspace_id, "experiments", message["experiment"]), "jobs", message["jobName"])
    validate_name("job", message["jobName"], "jobName")
    return submit_job(svc, job_id, params, idempotency_key=idempotency_key or message.get("idempotencyKey"))
