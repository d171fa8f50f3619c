"""Operation results (the `Location` of 202s) and the provider's metadata lists."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from batchai import access
from batchai.api.arm import POLL_SECONDS, JSONResponse, operation_url, paged
from batchai.api.deps import services
from batchai.errors import ApiError
from batchai.job_state import TERMINAL
from batchai.services import Services

router = APIRouter()


def _done(svc: Services, op: dict) -> bool:
    if op["kind"] == "terminate":
        job = svc.store.get(op["resource"])
        return job is None or job.properties["executionState"] in TERMINAL
    return op["status"] != "InProgress"


@router.get("/subscriptions/{sub}/providers/Microsoft.BatchAI/locations/{location}/operationresults/{op_id}")
def operation_result(request: Request, sub: str, location: str, op_id: str):
    svc = services(request)
    op = svc.store.get_operation(op_id)
    if op is None or not access.visible(request.state.principal, op["resource"]):
        raise ApiError.not_found(f"The operation '{op_id}' was not found.")
    if not _done(svc, op):
        return Response(status_code=202, headers={"Location": operation_url(request, sub, location, op_id), "Retry-After": POLL_SECONDS})
    if op["status"] == "Failed":
        return JSONResponse({"error": {"code": "OperationFailed", "message": op["error"] or "The operation failed."}}, status_code=500)
    return Response(status_code=204)


OPERATIONS = [
    ("workspaces", "read", "List or get workspaces"),
    ("workspaces", "write", "Create or update a workspace"),
    ("workspaces", "delete", "Delete a workspace"),
    ("workspaces/clusters", "read", "List or get clusters"),
    ("workspaces/clusters", "write", "Create or update a cluster"),
    ("workspaces/clusters", "delete", "Delete a cluster"),
    ("workspaces/experiments", "read", "List or get experiments"),
    ("workspaces/experiments", "write", "Create an experiment"),
    ("workspaces/experiments", "delete", "Delete an experiment"),
    ("workspaces/experiments/jobs", "read", "List or get jobs"),
    ("workspaces/experiments/jobs", "write", "Create a job"),
    ("workspaces/experiments/jobs", "delete", "Delete a job"),
    ("workspaces/experiments/jobs", "terminate/action", "Terminate a job"),
    ("workspaces/fileservers", "read", "List or get file servers"),
    ("workspaces/fileservers", "write", "Create a file server"),
]


@router.get("/providers/Microsoft.BatchAI/operations")
def list_operations(request: Request):
    return paged(
        request,
        [
            {
                "name": f"Microsoft.BatchAI/{res}/{verb}",
                "origin": "user,system",
                "display": {"provider": "Microsoft Batch AI", "resource": res, "operation": verb, "description": text},
            }
            for res, verb, text in OPERATIONS
        ],
        None,
    )


@router.get("/subscriptions/{sub}/providers/Microsoft.BatchAI/locations/{location}/usages")
def list_usages(request: Request, sub: str, location: str):
    svc = services(request)
    workspaces = [w for w in svc.store.workspaces(f"/subscriptions/{sub}") if w.body.get("location", "").lower() == location.lower()]
    clusters = sum(len(svc.store.children(w.id, "clusters")) for w in workspaces)
    return paged(
        request,
        [
            {
                "unit": "Count",
                "currentValue": len(workspaces),
                "limit": 800,
                "name": {"value": "Workspaces", "localizedValue": "Workspaces"},
            },
            {"unit": "Count", "currentValue": clusters, "limit": 800, "name": {"value": "Clusters", "localizedValue": "Clusters"}},
        ],
        None,
    )
