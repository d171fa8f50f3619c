"""Workspaces and experiments: the containers of a team's clusters and jobs."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from batchai import ids, render
from batchai.api import openapi
from batchai.api.arm import JSONResponse, json_body, page_records
from batchai.api.deletion import begin_delete, workspace_location
from batchai.api.deps import RG, WS, require, services, visible_only, workspace_path
from batchai.errors import ApiError
from batchai.model import WorkspaceCreateParameters, WorkspaceUpdateParameters, parse, validate_name
from batchai.ports import Conflict, Mutation, Record
from batchai.records import new_record
from batchai.services import Services

router = APIRouter()


@router.put(WS, openapi_extra=openapi.body(WorkspaceCreateParameters))
async def create_workspace(request: Request, sub: str, rg: str, ws: str):
    rid = workspace_path(sub, rg, ws)
    params = parse(WorkspaceCreateParameters, await json_body(request))
    return await run_in_threadpool(_create_workspace, services(request), rid, sub, rg, ws, params)


def _create_workspace(svc: Services, rid: str, sub: str, rg: str, ws: str, params: WorkspaceCreateParameters) -> JSONResponse:
    record = new_record(rid, "workspaces", ws, ids.resource_group_id(sub, rg), {}, location=params.location, tags=params.tags or {})
    try:
        record = svc.store.create(record)
    except Conflict:

        def retag(r):
            r.body["tags"] = params.tags or {}
            return r

        record = _mutate_workspace(svc, rid, retag)
    return JSONResponse(render.workspace(record))


@router.patch(WS, openapi_extra=openapi.body(WorkspaceUpdateParameters))
async def update_workspace(request: Request, sub: str, rg: str, ws: str):
    rid = workspace_path(sub, rg, ws)
    params = parse(WorkspaceUpdateParameters, await json_body(request))
    return await run_in_threadpool(_update_workspace, services(request), rid, params)


def _update_workspace(svc: Services, rid: str, params: WorkspaceUpdateParameters) -> JSONResponse:
    require(svc, rid, "workspace")

    def retag(r):
        if params.tags is not None:
            r.body["tags"] = params.tags
        return r

    return JSONResponse(render.workspace(_mutate_workspace(svc, rid, retag)))


def _mutate_workspace(svc: Services, rid: str, change: Mutation) -> Record:
    record = svc.store.mutate(rid, change)
    if record is None:  # deleted in the meantime
        raise ApiError.not_found(f"The workspace '{rid.rsplit('/', 1)[-1]}' was not found.")
    return record


@router.get(WS)
def get_workspace(request: Request, sub: str, rg: str, ws: str):
    return render.workspace(require(services(request), workspace_path(sub, rg, ws), "workspace"))


@router.delete(WS)
def delete_workspace(request: Request, sub: str, rg: str, ws: str):
    record = require(services(request), workspace_path(sub, rg, ws), "workspace")
    return begin_delete(request, record, record.body["location"])


@router.get(RG + "/workspaces")
def list_workspaces_by_group(request: Request, sub: str, rg: str):
    store = services(request).store
    prefix = ids.resource_group_id(sub, rg) + "/providers/Microsoft.BatchAI/workspaces"
    return page_records(
        request, visible_only(request, lambda after, n: store.workspaces(prefix, after_seq=after, limit=n)), render.workspace
    )


@router.get("/subscriptions/{sub}/providers/Microsoft.BatchAI/workspaces")
def list_workspaces(request: Request, sub: str):
    store = services(request).store
    fetch = visible_only(request, lambda after, n: store.workspaces(f"/subscriptions/{sub}", after_seq=after, limit=n))
    return page_records(request, fetch, render.workspace)


EXPERIMENT = WS + "/experiments/{exp}"


def experiment_path(sub: str, rg: str, ws: str, exp: str) -> str:
    validate_name("experiment", exp, "experimentName")
    return ids.child_id(workspace_path(sub, rg, ws), "experiments", exp)


@router.put(EXPERIMENT)
def create_experiment(request: Request, sub: str, rg: str, ws: str, exp: str):
    rid = experiment_path(sub, rg, ws, exp)
    svc = services(request)
    workspace = require(svc, ids.workspace_id(sub, rg, ws), "workspace")
    try:
        record = svc.store.create(new_record(rid, "experiments", exp, workspace.id, {}))
    except Conflict:
        record = require(svc, rid, "experiment")
    return render.experiment(record)


@router.get(EXPERIMENT)
def get_experiment(request: Request, sub: str, rg: str, ws: str, exp: str):
    return render.experiment(require(services(request), experiment_path(sub, rg, ws, exp), "experiment"))


@router.delete(EXPERIMENT)
def delete_experiment(request: Request, sub: str, rg: str, ws: str, exp: str):
    svc = services(request)
    record = require(svc, experiment_path(sub, rg, ws, exp), "experiment")
    return begin_delete(request, record, workspace_location(svc, ids.workspace_id(sub, rg, ws)))


@router.get(WS + "/experiments")
def list_experiments(request: Request, sub: str, rg: str, ws: str):
    store = services(request).store
    rid = workspace_path(sub, rg, ws)
    require(services(request), rid, "workspace")
    return page_records(request, lambda after, n: store.children(rid, "experiments", after_seq=after, limit=n), render.experiment)
