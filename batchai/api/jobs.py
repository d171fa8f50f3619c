"""Jobs: create (queued and handed to a durable lifecycle), read, terminate, delete, outputs, metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from batchai import arrays, ids, jobs, metrics, render
from batchai.api import openapi
from batchai.api.arm import JSONResponse, accepted, json_body, new_operation_id, page_records, paged
from batchai.api.clusters import ExecSessionParameters, exec_grant, exec_session, remote_login
from batchai.api.deletion import begin_delete, workspace_location
from batchai.api.deps import WS, require, services
from batchai.api.files import list_output_files
from batchai.api.workspaces import experiment_path
from batchai.errors import ApiError
from batchai.model import JobCreateParameters, parse, validate_name
from batchai.services import Services
from batchai.submission import submit_job

router = APIRouter()
JOBS = WS + "/experiments/{exp}/jobs"
JOB = JOBS + "/{job}"
TASKS = JOB + "/tasks"  # an array job's tasks (an addition to 2018-05-01, README)
TASK = TASKS + "/{index}"


def job_path(sub, rg, ws, exp, job) -> str:
    validate_name("job", job, "jobName")
    return ids.child_id(experiment_path(sub, rg, ws, exp), "jobs", job)


@router.put(JOB, openapi_extra=openapi.body(JobCreateParameters))
async def create_job(request: Request, sub: str, rg: str, ws: str, exp: str, job: str):
    rid = job_path(sub, rg, ws, exp, job)
    params = parse(JobCreateParameters, await json_body(request))
    svc = services(request)
    return JSONResponse(await run_in_threadpool(lambda: with_array_info(svc, submit_job(svc, rid, params))))


def with_array_info(svc: Services, body: dict) -> dict:
    """An array job's tasks per state, as `properties.arrayInfo`."""
    if "arraySettings" in body["properties"]:
        body["properties"]["arrayInfo"] = arrays.counts(svc.store, body["id"])
    return body


@router.get(JOB)
def get_job(request: Request, sub: str, rg: str, ws: str, exp: str, job: str):
    svc = services(request)
    return with_array_info(svc, render.job(require(svc, job_path(sub, rg, ws, exp, job), "job")))


@router.delete(JOB)
def delete_job(request: Request, sub: str, rg: str, ws: str, exp: str, job: str):
    svc = services(request)
    record = require(svc, job_path(sub, rg, ws, exp, job), "job")
    return begin_delete(request, record, workspace_location(svc, ids.workspace_id(sub, rg, ws)))


@router.get(JOBS)
def list_jobs(request: Request, sub: str, rg: str, ws: str, exp: str):
    svc = services(request)
    rid = experiment_path(sub, rg, ws, exp)
    require(svc, rid, "experiment")
    return page_records(
        request, lambda after, n: svc.store.children(rid, "jobs", after_seq=after, limit=n), lambda r: with_array_info(svc, render.job(r))
    )


def task_path(sub, rg, ws, exp, job, index: str) -> str:
    if not index.isdecimal() or len(index) > 6:
        raise ApiError.not_found(f"The array job '{job}' has no task '{index}'.")
    return arrays.task_id(job_path(sub, rg, ws, exp, job), int(index))


@router.get(TASKS)
def list_tasks(request: Request, sub: str, rg: str, ws: str, exp: str, job: str):
    """An array job's tasks in index order; a job that is no array has none."""
    svc = services(request)
    rid = job_path(sub, rg, ws, exp, job)
    require(svc, rid, "job")
    return page_records(request, lambda after, n: svc.store.children(rid, "jobs", after_seq=after, limit=n), render.task)


@router.get(TASK)
def get_task(request: Request, sub: str, rg: str, ws: str, exp: str, job: str, index: str):
    return render.task(require(services(request), task_path(sub, rg, ws, exp, job, index), "task"))


@router.api_route(TASK + "/listOutputFiles", methods=["POST", "GET"])
def task_output_files(request: Request, sub: str, rg: str, ws: str, exp: str, job: str, index: str):
    """A task's own stdouterr and output directories, as listOutputFiles lists a job's."""
    return list_output_files(request, require(services(request), task_path(sub, rg, ws, exp, job, index), "task"))


@router.post(JOB + "/terminate")
def terminate_job(request: Request, sub: str, rg: str, ws: str, exp: str, job: str):
    svc = services(request)
    rid = job_path(sub, rg, ws, exp, job)
    require(svc, rid, "job")
    jobs.terminate(svc, rid)
    op_id = new_operation_id()
    svc.store.create_operation(op_id, "terminate", rid)
    return accepted(request, sub, workspace_location(svc, ids.workspace_id(sub, rg, ws)), op_id)


@router.get(JOB + "/metrics")
def job_metrics(request: Request, sub: str, rg: str, ws: str, exp: str, job: str):
    """What the job reported to $AZ_BATCHAI_METRICS_FILE (an addition to 2018-05-01, README)."""
    return metrics.of(require(services(request), job_path(sub, rg, ws, exp, job), "job"))


@router.post(JOB + "/listOutputFiles")
@router.get(JOB + "/listOutputFiles")
def output_files(request: Request, sub: str, rg: str, ws: str, exp: str, job: str):
    record = require(services(request), job_path(sub, rg, ws, exp, job), "job")
    return list_output_files(request, record)


@router.post(JOB + "/listRemoteLoginInformation")
@router.get(JOB + "/listRemoteLoginInformation")
def job_remote_login(request: Request, sub: str, rg: str, ws: str, exp: str, job: str):
    svc = services(request)
    return paged(request, remote_login(_job_nodes(svc, require(svc, job_path(sub, rg, ws, exp, job), "job"))), None)


def _job_nodes(svc, record) -> list:
    node_ids = record.internal.get("nodes", []) if record.properties["executionState"] in ("running", "terminating") else []
    return [n for n in (svc.store.get_node(i) for i in node_ids) if n is not None]


@router.post(JOB + "/nodes/{node}/execSession", openapi_extra=openapi.body(ExecSessionParameters, required=False))
async def job_exec_session(request: Request, sub: str, rg: str, ws: str, exp: str, job: str, node: str):
    """Ours: as the cluster's execSession, for a node the job runs on; a command runs inside the job's
    task there (its environment, directory and container), a forward reaches what the job serves."""
    rid = job_path(sub, rg, ws, exp, job)
    grant = exec_grant(await json_body(request, required=False))
    svc = services(request)

    def session():
        record = require(svc, rid, "job")
        nodes = _job_nodes(svc, record)
        if not nodes:
            raise ApiError.conflict("The job is not running: it has no nodes to log in to.", target="executionState")
        if grant["kind"] == "exec":
            if grant["command"] is None:
                raise ApiError.bad_request("A job's node runs a command (a shell is the cluster's: cluster node exec).", "command")
            grant["job"] = rid
        return exec_session(svc, nodes, node, grant)

    return await run_in_threadpool(session)
