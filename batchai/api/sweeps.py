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
from batchai.api import openapi
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


SWEEP_BODY = {
    "type": "object",
    "required": ["properties"],
    "properties": {
        "properties": {
            "type": "object",
            "description": "An Azure ML sweep job's fields (README, Sweeps); checked by batchai.sweep_runs.",
            "required": ["search_space", "objective", "trial"],
            "properties": {
                "search_space": {"type": "object", "additionalProperties": {"type": "object"}},
                "objective": {
                    "type": "object",
                    "properties": {"goal": {"enum": ["minimize", "maximize"]}, "primary_metric": {"type": "string"}},
                },
                "sampling_algorithm": {
                    "oneOf": [
                        {"enum": ["grid", "random", "sobol", "bayesian"]},
                        {
                            "type": "object",
                            "properties": {"type": {"enum": ["grid", "random", "sobol", "bayesian"]}, "seed": {"type": "integer"}},
                        },
                    ],
                    "default": "random",
                },
                "early_termination": {"type": "object", "description": "bandit, median_stopping, truncation_selection or asha."},
                "limits": {
                    "type": "object",
                    "properties": {
                        k: {"type": "integer", "minimum": 0}
                        for k in ("max_total_trials", "max_concurrent_trials", "max_failed_trials", "timeout", "trial_timeout")
                    },
                },
                "trial": {"type": "object", "description": "A Batch AI job body or an original job file."},
            },
        }
    },
}


@router.put(SWEEP, openapi_extra=openapi.body_schema("SweepCreateParameters", SWEEP_BODY))
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
