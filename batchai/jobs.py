"""The job path below the API: each transition of `batchai.job_state` with what must follow it in
the world (tasks stopped, nodes freed, volumes unmounted, the controller and the lifecycle woken).

The node protocol, the scheduling pass, the API and the lifecycle's activities all end, terminate
and requeue jobs through these functions, so a job ends the same way whoever notices first, and
exactly once: the transitions are compare-and-set, and the follow-ups are idempotent.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

from batchai import arrays, job_state, scheduling_pass
from batchai.job_state import JobState, state_of
from batchai.lifecycle import EVICTED, NODE_LOST, NODE_SILENT, holds_only, task_outcome, utcnow
from batchai.ports import REPORTABLE, Record, TaskRecord
from batchai.wake import start_lifecycle, wake_cluster, wake_ended_job, wake_trial_sweep

if TYPE_CHECKING:
    from batchai.services import Services


def attempt_tasks(svc: Services, record: Record) -> list[TaskRecord]:
    attempt = job_state.attempt_of(record)
    return [t for t in svc.store.tasks(job=record.id) if t.attempt == attempt]


def stop_tasks(svc: Services, record: Record, tasks: list[TaskRecord] | None = None) -> None:
    """The attempt's pending tasks never start; running ones are killed by their node agents (`tasks`:
    the attempt's, as just read)."""
    woken = set()
    for t in attempt_tasks(svc, record) if tasks is None else tasks:
        if t.state == "pending" and svc.store.update_task(
            t.id, only_if_state=["pending"], state="finished", error="terminated", end_time=utcnow()
        ):
            continue
        if t.state in ("pending", "running") and svc.store.update_task(t.id, only_if_state=["running"], state="killing"):
            woken.add(t.node)
    if woken:
        svc.wake_nodes(sorted(woken))


def settle(svc: Services, job_id: str, *, force: bool = False) -> Record | None:
    """End the job if its attempt is decided (or, with `force`, a terminating job whose processes will
    not report): one terminal state, its nodes freed, its controller and lifecycle told. A lost node
    is not an end: the lifecycle is woken to requeue the job. Returns the job as stored after."""
    record = svc.store.get(job_id)
    if record is not None and arrays.is_array(record):
        return _settle_array(svc, record, force=force)
    if record is None or state_of(record) not in job_state.LAUNCHED:
        if record is not None and state_of(record).is_terminal() and svc.store.release_nodes(record.id):
            nodes_freed(svc, record)  # a completion retried after a crash between the two
        return record
    tasks = attempt_tasks(svc, record)
    outcome = task_outcome(tasks)
    if state_of(record) is JobState.RUNNING:
        if outcome is None:
            return record
        if outcome.get("nodeLost"):
            if arrays.array_of(record):  # a task has no lifecycle to do it
                return requeue(svc, record.id, outcome)
            start_lifecycle(svc, record)  # it requeues the job
            return record
        if arrays.retries_left(record, outcome):
            return _retry(svc, record, tasks, outcome)
    elif outcome is None and not force and not all(t.state == "finished" for t in tasks):
        return record
    ended = _end(svc, record, tasks, outcome)
    return ended if ended is not None else svc.store.get(record.id)  # None: someone else ended it first


def finish_task(svc: Services, task: TaskRecord, result: dict) -> None:
    """Its node reported the task finished (`result`: the task's fields as reported): the result is stored and
    the job settles. A result that decides its running job is stored with the job's end, in one transaction
    (a job's end waits for the write lock once, not twice); any other is stored first, then the job settles,
    reading its tasks again: another of them that finished meanwhile may decide it with this one."""
    record = svc.store.get(task.job)
    if record is not None and state_of(record) is JobState.RUNNING and task.attempt == job_state.attempt_of(record):
        tasks = [replace(t, **result) if t.id == task.id else t for t in attempt_tasks(svc, record)]
        outcome = task_outcome(tasks)
        if outcome is not None and not outcome.get("nodeLost") and not arrays.retries_left(record, outcome):
            if _end(svc, record, tasks, outcome, finished=(task.id, result)) is not None:
                return
    svc.store.update_task(task.id, only_if_state=REPORTABLE, **result)
    settle(svc, task.job)


def _end(
    svc: Services, record: Record, tasks: list[TaskRecord], outcome: dict | None, finished: tuple[str, dict] | None = None
) -> Record | None:
    """The job ends with `outcome` (its attempt's `tasks` as read; `finished`: a task's reported result stored
    with the end, see `Store.end_job`): the job as ended, or None if that was refused."""
    svc.sync_job_files(record)  # before the job shows as ended: then all it wrote is in storage
    # its tasks stop with it: what never started and what only held its node end now; processes still running
    # are killed by their nodes (which take new tasks beside them meanwhile), as any task no longer theirs is
    ending = [t for t in tasks if t.state == "pending" or (t.state == "running" and holds_only(t))]
    killing = [t for t in tasks if t.state == "running" and not holds_only(t)]
    ended, freed = svc.store.end_job(
        record.id,
        job_state.change(job_state.finish, now=utcnow(), outcome=outcome or {}),
        ending=[t.id for t in ending],
        killing=[t.id for t in killing],
        finished=finished,
    )
    if ended is None:
        return None
    if woken := sorted({t.node for t in ending if t.state == "running"} | {t.node for t in killing}):
        svc.wake_nodes(woken)
    unmount_job_volumes(svc, ended)
    svc.defer(partial(wake_ended_job, svc, ended))
    svc.defer(partial(wake_trial_sweep, svc, ended))
    if freed:
        nodes_freed(svc, ended)
    arrays.task_ended(svc, ended)
    return ended


def _retry(svc: Services, record: Record, tasks: list[TaskRecord], outcome: dict) -> Record | None:
    """An array's task failed with retries left: its attempt's files kept, it is queued again alone."""
    svc.sync_job_files(record)
    retried = svc.store.mutate(record.id, job_state.change(job_state.retry, now=utcnow(), outcome=outcome))
    if retried is None:
        return svc.store.get(record.id)
    stop_tasks(svc, record, tasks)
    if svc.store.release_nodes(record.id):
        nodes_freed(svc, record)
    return retried


def _settle_array(svc: Services, array: Record, *, force: bool) -> Record | None:
    """End the array once no task of it is active; with `force`, its terminating tasks are ended first
    (their processes will not report)."""
    if state_of(array).is_terminal():
        return array
    if force:
        for task in svc.store.children(array.id, "jobs"):
            if state_of(task) is JobState.TERMINATING:
                settle(svc, task.id, force=True)
    return arrays.end_if_done(svc, array.id)


def terminate(svc: Services, job_id: str, reason: str = "terminate") -> Record | None:
    """Begin ending the job for `reason`: a queued one is failed at once; a running one is terminating,
    its processes told to stop, and its lifecycle ends it once they have (or their grace runs out).
    An array's tasks are all told to; the array ends with the last of them."""
    updated = svc.store.mutate(job_id, _request_terminate(reason))
    if updated is None:
        return svc.store.get(job_id)
    if arrays.is_array(updated):
        _terminate_tasks(svc, updated, reason)
        if state_of(updated) is JobState.TERMINATING:
            ended = arrays.end_if_done(svc, updated.id)
            if ended is not None and state_of(ended).is_terminal():
                return ended  # no task was running: it ended now, and its end told its lifecycle
    if state_of(updated).is_terminal():
        arrays.tell_ended(svc, updated)  # a requeued job may have a lifecycle waiting
        wake_trial_sweep(svc, updated)
        return updated
    stop_tasks(svc, updated)
    start_lifecycle(svc, updated)
    return updated


def _request_terminate(reason: str):
    return job_state.change(job_state.request_terminate, now=utcnow(), reason=reason, at=time.time())


def _terminate_tasks(svc: Services, array: Record, reason: str) -> None:
    """Each active task of the array ends (queued) or is terminating, its processes told to stop; the array's
    lifecycle watches them (a task has none), and the array is told once, by the caller, not by each task."""
    for task in svc.store.children(array.id, "jobs"):
        if state_of(task).is_active():
            updated = svc.store.mutate(task.id, _request_terminate(reason))
            if updated is not None and state_of(updated) is JobState.TERMINATING:
                stop_tasks(svc, updated)


def requeue(svc: Services, job_id: str, outcome: dict) -> Record | None:
    """A node of the job was lost or evicted: void the attempt and queue the job again.

    Lost nodes count against the job's retry budget (`max_attempts`); evictions do not, since a
    low-priority job is expected to be evicted and to resume from its checkpoints.
    """
    record = svc.store.get(job_id)
    if record is None:
        return None
    tasks = attempt_tasks(svc, record)
    lost_nodes = {t.node for t in tasks if t.error == NODE_LOST}
    evicted_nodes = {t.node for t in tasks if t.error == EVICTED}
    if outcome.get("node") and not outcome.get("evicted"):
        lost_nodes.add(outcome["node"])
    for node_id in lost_nodes - evicted_nodes:
        node = svc.store.get_node(node_id)
        if node is not None and node.state != "leaving":
            svc.store.update_node(node_id, state="unusable", job=None, error=NODE_SILENT)
    stop_tasks(svc, record)
    names = sorted(record.internal.get("nodeNames", {}).get(i, i) for i in lost_nodes | evicted_nodes)
    evicted = bool(evicted_nodes) and not (lost_nodes - evicted_nodes)
    updated = svc.store.mutate(
        record.id,
        job_state.change(
            job_state.requeue,
            now=utcnow(),
            attempt=job_state.attempt_of(record),
            nodes=names,
            evicted=evicted,
            max_attempts=svc.settings.max_attempts,
        ),
    )
    svc.store.release_nodes(record.id)
    nodes_freed(svc, record)
    if updated is not None and state_of(updated).is_terminal():
        unmount_job_volumes(svc, updated)
        arrays.task_ended(svc, updated)
    return updated or svc.store.get(record.id)


def fail_tasks_of_node(svc: Services, node_id: str, error: str, states: tuple[str, ...] = ("pending", "running", "killing")) -> None:
    """The node is gone (silent, evicted, deallocated; `states`: its tasks that went with it)."""
    lose_tasks(svc, svc.store.tasks(node=node_id, states=states), error, states)


def lose_tasks(svc: Services, tasks: list[TaskRecord], error: str, states: tuple[str, ...]) -> None:
    """The tasks (as read, in one of `states`) went with their node or its boot: they are void, and their jobs'
    lifecycles look (a node setup task's "job" is its cluster: nothing to look)."""
    for t in tasks:
        if svc.store.update_task(t.id, only_if_state=states, state="finished", error=error, end_time=utcnow()):
            job = svc.store.get(t.job)
            if job is not None and job.type == "jobs":
                if arrays.array_of(job):  # a task has no lifecycle: look now (a lost node requeues it)
                    settle(svc, job.id)
                else:
                    start_lifecycle(svc, job)


def nodes_freed(svc: Services, job: Record) -> None:
    """The job's nodes are free: start what fits on them now (`batchai.scheduling_pass`), or, where passes
    must come from the controller alone (several control-plane instances), wake it."""
    cluster_id = job.properties["cluster"]["id"]
    if svc.settings.inline_scheduling:
        scheduling_pass.schedule(svc, cluster_id, thorough=False)
    else:
        wake_cluster(svc, svc.store.get(cluster_id))


def unmount_job_volumes(svc: Services, record: Record) -> None:
    """Job-level volumes are mounted for the job only (its files stay in the volumes)."""
    volumes = record.properties.get("mountVolumes")
    if volumes:
        svc.compute.unmount(f"{svc.settings.job_dir(record.internal['uuid'])}/mounts", volumes)
