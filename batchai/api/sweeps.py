"""Sweeps: an addition to the 2018-05-01 API (README, "Additions"), under an experiment beside its jobs.

PUT  .../experiments/{e}/sweeps/{s}          create (body: {"properties": an Azure ML sweep job's fields})
GET  .../experiments/{e}/sweeps[/{s}]        list / show: the trials, their state, parameters and result, the best
POST .../experiments/{e}/sweeps/{s}/cancel   stop every trial; the sweep ends canceled
DELETE .../experiments/{e}/sweeps/{s}        stop every trial, then delete the sweep and its trials' jobs (202, as ARM deletes)
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from batchai import ids, sweep_runs
from batchai.api.arm import JSONResponse, json_body, page_records
from batchai.api.deletion import begin_delete, workspace_location
from batchai.api.deps import WS, require, services
from batchai.api.workspaces import experiment_path
from batchai.model import validate_name

router = APIRouter()
SWEEPS = WS + "/experiments/{exp}/sweeps"
SWEEP = SWEEPS + "/{sweep}"


def sweep_path(sub, rg, ws, exp, sweep) -> str:
    validate_name("sweep", sweep, "sweepName")
    return ids.child_id(experiment_path(sub, rg, ws, exp), "sweeps", sweep)


@router.put(SWEEP)
async def create_sweep(request: Request, sub: str, rg: str, ws: str, exp: str, sweep: str):
    rid = sweep_path(sub, rg, ws, exp, sweep)
    body = await json_body(request)
    svc = services(request)
    record = await run_in_threadpool(sweep_runs.create, svc, rid, body)
    return JSONResponse(await run_in_threadpool(sweep_runs.render, svc, record))


@router.get(SWEEP)
def get_sweep(request: Request, sub: str, rg: str, ws: str, exp: str, sweep: str):
    svc = services(request)
    return sweep_runs.render(svc, require(svc, sweep_path(sub, rg, ws, exp, sweep), "sweep"))


@router.get(SWEEPS)
def list_sweeps(request: Request, sub: str, rg: str, ws: str, exp: str):
    svc = services(request)
    rid = experiment_path(sub, rg, ws, exp)
    require(svc, rid, "experiment")
    return page_records(
        request, lambda after, n: svc.store.children(rid, "sweeps", after_seq=after, limit=n), lambda r: sweep_runs.render(svc, r)
    )


@router.delete(SWEEP)
def delete_sweep(request: Request, sub: str, rg: str, ws: str, exp: str, sweep: str):
    svc = services(request)
    record = require(svc, sweep_path(sub, rg, ws, exp, sweep), "sweep")
    return begin_delete(request, record, workspace_location(svc, ids.workspace_id(sub, rg, ws)))


@router.post(SWEEP + "/cancel")
def cancel_sweep(request: Request, sub: str, rg: str, ws: str, exp: str, sweep: str):
    svc = services(request)
    record = require(svc, sweep_path(sub, rg, ws, exp, sweep), "sweep")
    sweep_runs.cancel(svc, record)
    return sweep_runs.render(svc, svc.store.get(record.id) or record)
