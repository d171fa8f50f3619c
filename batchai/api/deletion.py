"""DELETE as a long-running operation: 202 + Location, the work done by an orchestration."""

from __future__ import annotations

from fastapi import Request

from batchai.api.arm import accepted, new_operation_id
from batchai.api.deps import require, services
from batchai.lifecycle import utcnow
from batchai.ports import Record
from batchai.services import Services


def begin_delete(request: Request, record: Record, location: str):
    svc = services(request)
    op_id = new_operation_id()
    svc.store.create_operation(op_id, "delete", record.id)
    svc.store.mutate(record.id, _deleting)
    svc.engine.schedule("resource_deletion", {"resourceId": record.id, "operationId": op_id}, f"delete-{op_id}")
    subscription = record.id.split("/")[2]  # /subscriptions/{sub}/...
    return accepted(request, subscription, location, op_id)


def workspace_location(svc: Services, workspace_id: str) -> str:
    """The location of a workspace, which its clusters, file servers, experiments and jobs share."""
    return require(svc, workspace_id, "workspace").body["location"]


def _deleting(record: Record) -> Record:
    record.properties["provisioningState"] = "deleting"
    record.properties["provisioningStateTransitionTime"] = utcnow()
    return record
