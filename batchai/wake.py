"""Waking a job's lifecycle (starting it when a launched job has none), and a cluster's controller
(debounced through the store).

A job's lifecycle exists from its launch: the scheduling pass starts it, handing it what it
just stored, and it sleeps until woken or until its timer (the job's deadline, or a safety-net
recheck). Whoever changes a launched job wakes it: the node report that ends it (handing it the
terminal state, so it ends without looking again), the API that terminates it, the pass that
finds its node silent, the deletion that removes it. A queued job has no lifecycle of its own
to feed: the cluster's controller owns the queue.

A sweep's orchestration is woken the same debounced way by its trials' metrics and ends.

Every queued job, freed node, joined node and scale request asks the controller for a pass.
A burst of them (a sweep of thousands of submissions) must not become thousands of passes, each
reading the whole queue: the first request raises a flag and sends the event; later ones see
the flag up and send nothing, since the pass that event starts will see their changes too. The
pass lowers the flag as it begins. A lost event cannot silence the cluster: the controller's own
timer runs a pass (and lowers the flag) within its maximum wait anyway.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from batchai.job_state import LAUNCHED, state_of
from batchai.lifecycle import controller_instance, job_instance, lifecycle_input, settled_view, sweep_instance
from batchai.ports import Record

if TYPE_CHECKING:
    from batchai.services import Services

log = logging.getLogger("batchai.wake")


def start_lifecycle(svc: Services, job: Record, view: dict | None = None) -> None:
    """Start the launched `job`'s lifecycle with `view` (what the caller just stored; None: it looks
    first), or wake the one it has. Idempotent: one lifecycle per job, whoever starts it first. An array's
    task has none (`batchai.arrays`: its array's lifecycle watches it).

    The job is marked `watched` first, in the store: whoever ends it then knows that a lifecycle
    may wait to be told (`wake_ended_job`). One the end got to first is not started."""
    if "arrayTask" in job.internal:
        return
    # `watched` is never taken back: a job read as watched needs no second write
    if state_of(job) in LAUNCHED and (job.internal.get("watched") or svc.store.mutate(job.id, _watch) is not None):
        if svc.engine.schedule("job_lifecycle", {**lifecycle_input(job), "view": view}, job_instance(job)):
            return
    wake_job(svc, job, view)


def _watch(record: Record) -> Record | None:
    if state_of(record) not in LAUNCHED:
        return None
    record.internal["watched"] = True
    return record


def wake_ended_job(svc: Services, job: Record) -> None:
    """Tell the lifecycle of the job just ended (as stored by its end), if it was ever given one: a job that
    ended before its lifecycle was due has none, and asking the engine about it costs more than the job did."""
    if job.internal.get("watched"):
        wake_job(svc, job, settled_view(job))


def wake_job(svc: Services, job: Record, view: dict | None = None) -> None:
    """A hint to the job's lifecycle, if it has one, to look at its job again (`view`: a terminal state
    just stored, which it may take as is). A lost hint only delays: its timer looks again."""
    try:
        svc.engine.raise_event(job_instance(job), "wake", view)
    except Exception:  # noqa: BLE001 - a hint lost, never a step
        log.exception("waking the lifecycle of %s failed", job.id)


def wake_flag(cluster: Record) -> str:
    return f"wake:{cluster.internal['uuid']}"


def wake_cluster(svc: Services, cluster: Record | None) -> None:
    """Ask for a pass. A failed event is a lost hint, not a failed request: what asked for it is stored
    (a job created and then reported failed would be created again, a conflict), and the controller's
    timer runs a pass anyway. The flag goes down again, so that the next change asks once more."""
    if cluster is None or not svc.store.set_flag(wake_flag(cluster)):
        return
    try:
        svc.engine.raise_event(controller_instance(cluster), "wake")
    except Exception:  # noqa: BLE001 - a hint lost, never a step
        log.exception("waking the controller of %s failed", cluster.id)
        svc.store.clear_flag(wake_flag(cluster))


def wake_sweep(svc: Services, sweep_uuid: str) -> None:
    """A hint to a sweep's orchestration to look at its trials (debounced like a controller's wake: its
    pass lowers the flag as it begins; its timer looks anyway; a failed event lowers it again)."""
    flag = f"sweep:{sweep_uuid}"
    if not svc.store.set_flag(flag):
        return
    try:
        svc.engine.raise_event(sweep_instance(sweep_uuid), "wake")
    except Exception:  # noqa: BLE001 - a hint lost, never a step
        log.exception("waking sweep %s failed", sweep_uuid)
        svc.store.clear_flag(flag)


def wake_trial_sweep(svc: Services, job: Record) -> None:
    """The job is a sweep's trial and changed (a metric, its end): its sweep looks."""
    sweep = job.internal.get("sweep")
    if sweep:
        wake_sweep(svc, sweep["uuid"])
