"""Job lifecycle activities. Each one reads the store (the source of truth), changes it through the
job path (`batchai.jobs`), and reports a fresh view of the job for the orchestration to decide on."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from batchai import arrays, jobs
from batchai.job_state import JobState, attempt_of, state_of
from batchai.lifecycle import (
    QUEUED_RECHECK_SECONDS,
    RUNNING_RECHECK_SECONDS,
    TERMINATING_RECHECK_SECONDS,
    node_is_lost,
    parse_time,
    seconds_left,
    task_outcome,
)
from batchai.ports import Record

if TYPE_CHECKING:
    from batchai.services import Services

LAUNCH_GRACE_SECONDS = 30.0  # running without tasks for this long: the launch was interrupted


def _view(svc: Services, record: Record | None) -> dict:
    if record is None:
        return {"state": "gone"}
    state = state_of(record)
    view: dict = {"state": state.value, "attempt": attempt_of(record), "wait": QUEUED_RECHECK_SECONDS}
    if state.is_terminal() or state is JobState.QUEUED:
        return view
    now = time.time()
    if arrays.is_array(record):
        outcome = arrays.outcome(svc.store.job_counts(record.id))
        done = outcome is not None
    else:
        outcome, done = _attempt_outcome(svc, record, now)
    view["outcome"] = outcome
    if state is JobState.RUNNING:
        remaining = seconds_left(record, now)
        view["deadlineExceeded"] = remaining <= 0
        view["wait"] = max(0.1, min(RUNNING_RECHECK_SECONDS, remaining))
    else:
        requested = record.internal.get("killRequestedAt")
        view["killRequested"] = requested is not None
        view["killExpired"] = requested is not None and now - requested > svc.settings.kill_grace_seconds
        view["tasksDone"] = done
        view["wait"] = TERMINATING_RECHECK_SECONDS
    return view


def _attempt_outcome(svc: Services, record: Record, now: float) -> tuple[dict | None, bool]:
    """The attempt's outcome (a lost node decides it too), and whether all its tasks finished."""
    tasks = jobs.attempt_tasks(svc, record)
    outcome = task_outcome(tasks)
    if outcome is None:
        for t in tasks:
            if t.state != "finished" and node_is_lost(svc.store.get_node(t.node), t, now, svc.settings.node_timeout_seconds):
                outcome = {"nodeLost": True, "node": t.node}
                break
    since = parse_time(record.properties["executionStateTransitionTime"]).timestamp()
    if outcome is None and not tasks and now - since > LAUNCH_GRACE_SECONDS:
        outcome = {"nodeLost": True, "node": None}
    return outcome, all(t.state == "finished" for t in tasks)


def _current(svc: Services, inp: dict) -> Record | None:
    """The job, unless it was deleted, also when a new job has taken its name since."""
    record = svc.store.get(inp["jobId"])
    if record is not None and inp.get("uuid") and record.internal.get("uuid") != inp["uuid"]:
        return None
    return record


def observe_job(svc: Services, inp: dict) -> dict:
    """The job as stored now; "gone" when it was deleted."""
    return _view(svc, _current(svc, inp))


def kill_job(svc: Services, inp: dict) -> dict:
    """Begin ending a running job: `reason` is "terminate" (the user asked) or "timeout"."""
    if _current(svc, inp) is None:
        return {"state": "gone"}
    return _view(svc, jobs.terminate(svc, inp["jobId"], inp.get("reason", "terminate")))


def complete_job(svc: Services, inp: dict) -> dict:
    """Move the job to its one terminal state, free its nodes, and start what waits for them."""
    if _current(svc, inp) is None:
        return {"state": "gone"}
    return _view(svc, jobs.settle(svc, inp["jobId"], force=True))


def requeue_job(svc: Services, inp: dict) -> dict:
    """A node of the job was lost or evicted: void the attempt and queue the job again."""
    if _current(svc, inp) is None:
        return {"state": "gone"}
    return _view(svc, jobs.requeue(svc, inp["jobId"], inp.get("outcome") or {}))
