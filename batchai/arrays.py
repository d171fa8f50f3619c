"""Job arrays (`arraySettings`, an addition to 2018-05-01): one job of `count` tasks of the same spec.

The array is a job record, and each task a job record under it (`{array}/tasks/{index}`, its
parent the array), queued on the array's cluster like any job. So the scheduler, the node
reports and the job state machine run a task as they run a job. What differs, and why:

- A task has no lifecycle of its own: a lost node requeues it at once (a store change), and the
  array's one lifecycle watches the deadline (`maxWallClockTime` bounds the whole array) and a
  terminate. A task costs the engine nothing; an array, one lifecycle.
- A task that fails is queued again alone, up to `maxTaskRetries` (`job_state.retry`).
- The array is not queued itself (the store indexes no cluster for it): it is running from its
  first task's launch and ends when its last task ends, succeeded if every task did.
- At most `maxParallel` of its tasks run at once: a pass holds the others back.
"""

from __future__ import annotations

import copy
import uuid
from collections import Counter
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING

from batchai import ids, job_state
from batchai.job_state import ACTIVE, JobState, state_of
from batchai.lifecycle import settled_view, utcnow
from batchai.ports import JobSummary, Record, Store
from batchai.wake import start_lifecycle, wake_ended_job, wake_job

if TYPE_CHECKING:
    from batchai.services import Services

INDEX_VARIABLES = ("AZ_BATCHAI_TASK_INDEX", "AZ_BATCHAI_TASK_COUNT")


def is_array(record: Record) -> bool:
    return "arraySettings" in record.properties


def array_of(record: Record) -> str | None:
    """The id of the array the job is a task of (None: not a task)."""
    task = record.internal.get("arrayTask")
    return task["array"] if task else None


def task_id(array_id: str, index: int) -> str:
    return f"{array_id}/tasks/{index}"


def is_task_parent(parent_key: str) -> bool:
    """Whether a job's parent (its stored key) is an array (else an experiment)."""
    return "/jobs/" in parent_key


def new_tasks(array: Record) -> list[Record]:
    """The array's tasks as submitted: queued, each the array's spec told its index, its outputs under the
    array's (`.../tasks/{index}`), its own job directory."""
    props = array.properties
    settings = props["arraySettings"]
    count = settings["count"]
    spec = {k: v for k, v in props.items() if k not in ("arraySettings", "executionState", "executionStateTransitionTime")}
    env = [e for e in spec.get("environmentVariables") or [] if e["name"] not in INDEX_VARIABLES]
    now = props["creationTime"]
    tasks = []
    for index in range(count):
        task_props = copy.deepcopy(spec)
        task_props["environmentVariables"] = [
            *env,
            {"name": "AZ_BATCHAI_TASK_INDEX", "value": str(index)},
            {"name": "AZ_BATCHAI_TASK_COUNT", "value": str(count)},
        ]
        task_props["jobOutputDirectoryPathSegment"] = f"{props['jobOutputDirectoryPathSegment']}/tasks/{index}"
        task = Record(task_id(array.id, index), "jobs", str(index), array.id, {"type": ids.TYPES["jobs"], "properties": task_props})
        job_state.new_job(task, now, uuid=uuid.uuid4().hex)
        task.internal["arrayTask"] = {"array": array.id, "index": index, "maxRetries": settings.get("maxTaskRetries", 0)}
        tasks.append(task)
    return tasks


def retries_left(task: Record, outcome: dict) -> bool:
    """Whether the task's failed attempt (`outcome`) is retried: it is an array's task with retries to spare."""
    spec = task.internal.get("arrayTask")
    return spec is not None and outcome.get("exitCode") != 0 and task.internal.get("retries", 0) < spec["maxRetries"]


def counts(store: Store, array_id: str) -> dict:
    """`arrayInfo` on the wire: the tasks per state."""
    by_state = store.job_counts(array_id)
    return {"taskCount": sum(by_state.values()), **{f"{s.value}TaskCount": by_state.get(s.value, 0) for s in JobState}}


def outcome(by_state: dict[str, int]) -> dict | None:
    """The array's result once no task is active (None before)."""
    if any(by_state.get(s.value, 0) for s in ACTIVE):
        return None
    failed = by_state.get(JobState.FAILED.value, 0)
    if not failed:
        return {"exitCode": 0}
    return {"error": f"{failed} of {sum(by_state.values())} tasks failed."}


def tasks_started(svc: Services, array_ids: Iterable[str]) -> None:
    """Tasks of these arrays were launched: an array still queued is running from now, with its lifecycle."""
    for array_id in array_ids:
        array = svc.store.get(array_id)
        if array is not None and state_of(array) is JobState.QUEUED:
            started = svc.store.mutate(array_id, job_state.change(job_state.start, now=utcnow(), nodes=[], paths={}))
            if started is not None:
                start_lifecycle(svc, started)


def task_ended(svc: Services, task: Record) -> None:
    """A task ended for good: when it was its array's last active one, the array ends.

    Each ending task counts after its own end is stored, so the last one to end sees no other active."""
    array_id = array_of(task)
    if array_id is not None:
        end_if_done(svc, array_id)


def end_if_done(svc: Services, array_id: str) -> Record | None:
    """End the array if no task of it is active; returns the array as stored after."""
    result = outcome(svc.store.job_counts(array_id))
    if result is None:
        return svc.store.get(array_id)
    now = utcnow()
    # launched tasks whose array is still queued: the launch that would have started it was cut short
    svc.store.mutate(array_id, job_state.change(job_state.start, now=now, nodes=[], paths={}))
    ended = svc.store.mutate(array_id, job_state.change(job_state.finish, now=now, outcome=result))
    if ended is None:
        return svc.store.get(array_id)
    svc.defer(partial(wake_ended_job, svc, ended))
    return ended


def tell_ended(svc: Services, job: Record) -> None:
    """A job was just ended by a transition other than its settling (a terminate of a queued job, an
    unlaunchable one, its cluster deleted): its array, for a task; else its lifecycle, if it waits on it."""
    if array_of(job) is not None:
        task_ended(svc, job)
    else:
        wake_job(svc, job, settled_view(job))


def within_parallel_limits(store: Store, queued: list[JobSummary]) -> list[JobSummary]:
    """The queued jobs without the tasks that would take their arrays past `maxParallel` running."""
    parents = {q.parent for q in queued if is_task_parent(q.parent)}
    limits: dict[str, int] = {}
    running: Counter[str] = Counter()
    for parent in parents:
        array = store.get(parent)
        limit = (array.properties.get("arraySettings") or {}).get("maxParallel") if array is not None else None
        if limit:
            limits[parent] = limit
            counts = store.job_counts(parent)
            running[parent] = counts.get("running", 0) + counts.get("terminating", 0)
    if not limits:
        return queued
    return hold_back(queued, limits, running)


def hold_back(queued: list[JobSummary], limits: dict[str, int], running: Counter) -> list[JobSummary]:
    """Pure: keep, in queue order, only as many of each limited array's tasks as it may still start."""
    kept = []
    for q in queued:
        if q.parent in limits:
            if running[q.parent] >= limits[q.parent]:
                continue
            running[q.parent] += 1
        kept.append(q)
    return kept
