"""Sweeps in the store: the sweep record, its trials (ordinary jobs of the experiment), and what the
sweep's orchestration (orchestrations/sweep.py) does through its activities.

The sweep record keeps its specification (`batchai.model.sweep`) and, per trial made, the sampler's
answer: `{"number", "raw", "sys", "params"}`. A trial is recorded before its job is submitted, and
the record is appended to only at the next number (compare-and-set): so after any crash the next
pass finds every trial asked for, submits the job of one whose submission was lost (under an
idempotency key: never twice), and never asks past `max_total_trials`. Trial n is the job
`{sweep}-{n}`, tagged with its sweep and parameters, which reach it as `AZ_BATCHAI_PARAM_<NAME>` and
as `{name}` (or Azure ML's `${{search_space.name}}`) in its strings.
"""

from __future__ import annotations

import copy
import time
import uuid
from typing import TYPE_CHECKING

from batchai import ids, jobs, sweeps
from batchai.errors import ApiError
from batchai.job_state import EARLY_TERMINATED, TERMINATED, JobState, state_of
from batchai.lifecycle import parse_time, sweep_instance, utcnow
from batchai.model import load_job_file
from batchai.model.sweep import MAX_SWEEP_NAME, check_sweep
from batchai.ports import Conflict, Record
from batchai.records import new_record
from batchai.submission import check_cluster, submit_job
from batchai.wake import wake_sweep

if TYPE_CHECKING:
    from batchai.services import Services

ACTIVE_RECHECK_SECONDS = 30.0  # the timer behind the wakes (trials' metrics and ends), or the sweep's timeout if sooner
ENDING_RECHECK_SECONDS = 2.0  # while stopped trials end
SPEC_FIELDS = ("search_space", "objective", "sampling_algorithm", "early_termination", "limits", "trial")
RUNNING, SUCCEEDED, FAILED, CANCELED = "running", "succeeded", "failed", "canceled"


def trial_job_id(sweep: Record, number: int) -> str:
    return ids.child_id(sweep.parent or "", "jobs", f"{sweep.name}-{number}")


def _format(value) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _substitute(node, params: dict[str, str]):
    if isinstance(node, str):
        for name, text in params.items():
            node = node.replace("${{search_space." + name + "}}", text).replace("{" + name + "}", text)
        return node
    if isinstance(node, list):
        return [_substitute(v, params) for v in node]
    if isinstance(node, dict):
        return {k: _substitute(v, params) for k, v in node.items()}
    return node


def trial_job(spec: dict, sweep_name: str, number: int, params: dict):
    """The trial's job: the sweep's trial body with the parameters in its strings and environment."""
    trial = spec["trial"]
    props = copy.deepcopy(trial["properties"] if isinstance(trial.get("properties"), dict) else trial)
    texts = {name: _format(v) for name, v in params.items()}
    props = _substitute(props, texts)
    env = props.get("environmentVariables")
    if env is not None and not isinstance(env, list):
        raise ApiError.bad_request("properties.trial.environmentVariables must be a list.", target="properties.trial.environmentVariables")
    props["environmentVariables"] = [
        *(env or []),
        {"name": "AZ_BATCHAI_SWEEP_NAME", "value": sweep_name},
        {"name": "AZ_BATCHAI_TRIAL_NUMBER", "value": str(number)},
        *({"name": f"AZ_BATCHAI_PARAM_{name.upper()}", "value": text} for name, text in texts.items()),
    ]
    if spec["limits"].get("trial_timeout"):
        props.setdefault("constraints", {})["maxWallClockTime"] = f"PT{spec['limits']['trial_timeout']}S"
    return load_job_file({"properties": props}, require_cluster=True)


def _in_trial(exc: ApiError, trial: dict) -> ApiError:
    """A job path's error about the trial body (a job body, or its bare properties), its field named as in the sweep's body."""
    field = (exc.target or "").removeprefix("properties.").removeprefix("properties")
    prefix = "properties.trial.properties" if isinstance(trial.get("properties"), dict) else "properties.trial"
    return ApiError(exc.status, exc.code, exc.message, f"{prefix}.{field}" if field else prefix)


def _example(dist: dict):
    """A value of the distribution, to check the trial body with before anything is stored."""
    return {"choice": lambda: dist["values"][0], "randint": lambda: 0}.get(dist["type"], lambda: sweeps.value(dist, 0.5))()


def create(svc: Services, sweep_id: str, body: dict) -> Record:
    """Check and store a sweep, and start its orchestration. 400 naming the field, and nothing stored, for bad input."""
    experiment_id, _, name = sweep_id.rpartition("/sweeps/")
    if len(name) > MAX_SWEEP_NAME:
        raise ApiError.bad_request(f"A sweep name has at most {MAX_SWEEP_NAME} characters (its trials are jobs '{{sweep}}-{{n}}').")
    experiment = svc.store.get(experiment_id)
    if experiment is None:
        raise ApiError.not_found(f"The experiment '{experiment_id.rsplit('/', 1)[-1]}' was not found.")
    spec = check_sweep(body.get("properties"))
    parsed = ids.parse(ids.child_id(experiment_id, "jobs", f"{name}-0"))
    assert parsed is not None
    try:
        example = trial_job(spec, name, 0, {n: _example(d) for n, d in spec["search_space"].items()})
        if example.properties.cluster is None:
            raise ApiError.bad_request("The trial needs properties.cluster.", target="properties.cluster")
        check_cluster(svc, example.properties, parsed.workspace_id)
    except ApiError as exc:
        raise _in_trial(exc, spec["trial"]) from None
    record = new_record(sweep_id, "sweeps", name, experiment.id, {**spec, "executionState": RUNNING})
    record.internal = {"uuid": uuid.uuid4().hex, "trials": [], "studyAttrs": {}}
    try:
        record = svc.store.create(record)
    except Conflict:
        raise ApiError.conflict(f"The sweep '{name}' already exists.") from None
    svc.engine.schedule("sweep", ref(record), sweep_instance(record.internal["uuid"]))
    return record


def ref(record: Record) -> dict:
    return {"sweepId": record.id, "uuid": record.internal["uuid"]}


def current(svc: Services, inp: dict) -> Record | None:
    record = svc.store.get(inp["sweepId"])
    return record if record is not None and record.internal.get("uuid") == inp["uuid"] else None


def spec_of(record: Record) -> dict:
    return {k: record.properties.get(k) for k in SPEC_FIELDS}


def trial_state(job: Record | None) -> str:
    if job is None:
        return sweeps.RUNNING  # recorded, its job not submitted yet: the next pass submits it
    state = state_of(job)
    if state.is_active():
        return sweeps.RUNNING
    if state is JobState.SUCCEEDED:
        return sweeps.SUCCEEDED
    code = ((job.properties.get("executionInfo") or {}).get("errors") or [{}])[0].get("code")
    return {EARLY_TERMINATED["code"]: sweeps.EARLY_TERMINATED, TERMINATED["code"]: sweeps.CANCELED}.get(code, sweeps.FAILED)


def trials(svc: Services, record: Record) -> list[dict]:
    """Every trial made, with its job's state and the primary metric's values by step."""
    metric = record.properties["objective"]["primary_metric"]
    views = []
    for t in record.internal["trials"]:
        job = svc.store.get(trial_job_id(record, t["number"]))
        values = sweeps.series(job.internal.get("metrics", []), metric) if job is not None else {}
        views.append({**t, "job": job, "state": trial_state(job), "values": values, "objective": sweeps.objective(values)})
    return views


def _submit(svc: Services, record: Record, trial: dict) -> None:
    spec = spec_of(record)
    params = trial_job(spec, record.name, trial["number"], trial["params"])
    tags = {"sweep": record.name, "trial": str(trial["number"]), **{f"param.{k}": _format(v) for k, v in trial["params"].items()}}
    submit_job(
        svc,
        trial_job_id(record, trial["number"]),
        params,
        idempotency_key=f"sweep-{record.internal['uuid']}-{trial['number']}",
        sweep={"id": record.id, "uuid": record.internal["uuid"], "trial": trial["number"]},
        tags=tags,
    )


def _submit_or_fail(svc: Services, record: Record, trial: dict) -> bool:
    """Submit the trial's job; a job the job path refuses now (its cluster deleted, say) fails the sweep."""
    try:
        _submit(svc, record, trial)
        return True
    except ApiError as exc:
        _end(svc, record, FAILED, "trial refused", error={"code": exc.code, "message": f"trial {trial['number']}: {exc.message}"})
        return False


def _end(svc: Services, record: Record, state: str, reason: str, error: dict | None = None) -> None:
    def end(r: Record) -> Record | None:
        if r.properties["executionState"] != RUNNING:
            return None
        r.properties.update(executionState=state, endTime=utcnow(), endReason=reason, **({"errors": [error]} if error else {}))
        return r

    svc.store.mutate(record.id, end)


def _time_left(record: Record) -> float | None:
    timeout = record.properties["limits"].get("timeout")
    return None if not timeout else timeout - (time.time() - parse_time(record.properties["creationTime"]).timestamp())


def _ending(record: Record, views: list[dict]) -> str | None:
    """Why the sweep stops asking for trials and stops those running, if it does."""
    if record.internal.get("cancelRequested"):
        return CANCELED
    limits = record.properties["limits"]
    left = _time_left(record)
    if left is not None and left <= 0:
        return "timeout"
    if sum(v["state"] == sweeps.FAILED for v in views) > limits["max_failed_trials"]:
        return FAILED
    return None


def observe(svc: Services, inp: dict) -> dict:
    """The sweep as stored now, for its orchestration: how many trials are made and active, which to stop."""
    svc.store.clear_flag(f"sweep:{inp['uuid']}")  # what woke this pass is seen by it
    record = current(svc, inp)
    if record is None:
        return {"state": "gone"}
    if record.properties["executionState"] != RUNNING:
        return {"state": "done"}
    views = trials(svc, record)
    for v in views:
        if v["job"] is None and not _submit_or_fail(svc, record, v):  # recorded, then the control plane stopped before the submission
            return {"state": "done"}
    active = [v["number"] for v in views if v["state"] == sweeps.RUNNING]
    reason = _ending(record, views)
    stop = active if reason else sweeps.to_stop(spec_of(record), views)
    limits = record.properties["limits"]
    return {
        "state": RUNNING,
        "made": len(views),
        "active": len(active),
        "stop": stop,
        "reason": reason,
        "budget": limits["max_total_trials"],
        "concurrency": limits["max_concurrent_trials"],
        "wait": ENDING_RECHECK_SECONDS
        if reason or stop
        else min(ACTIVE_RECHECK_SECONDS, max(0.1, _time_left(record) or ACTIVE_RECHECK_SECONDS)),
    }


def stop(svc: Services, inp: dict) -> int:
    """Stop trials: early terminated by the policy, or (`reason`: the sweep ends) terminated."""
    record = current(svc, inp)
    if record is None:
        return 0
    why = "early_terminated" if inp.get("reason") is None else "terminate"
    for number in inp["trials"]:
        jobs.terminate(svc, trial_job_id(record, number), why)
    return len(inp["trials"])


def start(svc: Services, inp: dict) -> int:
    """Make trials `first` .. `first + count - 1` (those not made yet): ask the sampler, record, submit."""
    record = current(svc, inp)
    if record is None:
        return 0
    spec = spec_of(record)
    views = trials(svc, record)
    made = 0
    for number in range(inp["first"], min(inp["first"] + inp["count"], spec["limits"]["max_total_trials"])):
        if number < len(views):
            continue  # made by an earlier try of this step
        if number > len(views):
            break
        answer = sweeps.ask(spec, views, record.internal["studyAttrs"])
        trial = {"number": number, "raw": answer["raw"], "sys": answer["sys"], "params": sweeps.parameters(spec, answer["raw"])}

        def append(r: Record, trial=trial, attrs=answer["studyAttrs"]) -> Record | None:
            if len(r.internal["trials"]) != trial["number"]:
                return None
            r.internal["trials"].append(trial)
            r.internal["studyAttrs"] = attrs
            return r

        updated = svc.store.mutate(record.id, append)
        if updated is None:
            break  # someone else recorded it: the next pass sees it
        record = updated
        if not _submit_or_fail(svc, record, trial):
            break
        views.append({**trial, "job": None, "state": sweeps.RUNNING, "values": {}, "objective": None})
        made += 1
    return made


def finish(svc: Services, inp: dict) -> dict:
    """The sweep's end: its state, and its best trial."""
    record = current(svc, inp)
    if record is None:
        return {"state": "gone"}
    views = trials(svc, record)
    top = sweeps.best(spec_of(record), views)
    reason = inp.get("reason")
    state = CANCELED if reason == CANCELED else FAILED if reason == FAILED or top is None else SUCCEEDED
    _end(svc, record, state, reason or "completed")
    return {"state": state, "best": top["number"] if top else None}


def cancel(svc: Services, record: Record) -> None:
    """Stop the sweep: its orchestration stops every trial, then ends it canceled."""

    def flag(r: Record) -> Record | None:
        if r.internal.get("cancelRequested") or r.properties["executionState"] != RUNNING:
            return None
        r.internal["cancelRequested"] = True
        return r

    if svc.store.mutate(record.id, flag) is not None:
        wake_sweep(svc, record.internal["uuid"])


def _trial_body(sweep: Record, v: dict) -> dict:
    return {
        "number": v["number"],
        "name": f"{sweep.name}-{v['number']}",
        "parameters": v["params"],
        "state": v["state"],
        "objective": v["objective"],
        "lastStep": max(v["values"]) if v["values"] else None,
    }


def render(svc: Services, record: Record) -> dict:
    """The sweep as the API answers it: its specification and state, every trial, and the best one."""
    views = trials(svc, record)
    props = copy.deepcopy(record.properties)
    props["trials"] = [_trial_body(record, v) for v in views]
    top = sweeps.best(spec_of(record), views)
    props["bestTrial"] = _trial_body(record, top) if top else None
    counts = {s: 0 for s in sweeps.TRIAL_STATES}
    for v in views:
        counts[v["state"]] += 1
    props["trialStateCounts"] = counts
    return {"id": record.id, "name": record.name, "type": record.body.get("type"), "properties": props}
