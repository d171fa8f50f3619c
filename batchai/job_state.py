"""The job state machine: its states and every transition between them, in one place.

    queued ──start──> running ──finish──> succeeded | failed
      │                  ├──requeue (a node lost or evicted)──> queued (next attempt) | failed (retry budget spent)
      │                  ├──retry (an array's task failed, retries left)──> queued (next attempt)
      │                  └──request_terminate (user, timeout, scale-down, a sweep's early termination)──> terminating ──finish──> failed
      ├──request_terminate──> failed (nothing ran: nothing to stop)
      └──fail_unlaunchable──> failed
    queued | running | terminating ──fail_cluster_deleted──> failed

Each transition is a pure change for the store's compare-and-set (`store.mutate(job_id, change)`):
it returns None, changing nothing, unless the job is in a state the transition leaves from, so a
repeated or raced call is harmless and exactly one caller wins. Each appends one event
`{"time", "event", "attempt", ...}` to the job's history (`properties.events` on the wire), and
every terminal state is entered with exactly one event named after it.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from functools import partial

from batchai.ports import Record


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    TERMINATING = "terminating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    def is_terminal(self) -> bool:
        return self in TERMINAL

    def is_active(self) -> bool:
        return not self.is_terminal()


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED})
ACTIVE = (JobState.QUEUED, JobState.RUNNING, JobState.TERMINATING)
LAUNCHED = (JobState.RUNNING, JobState.TERMINATING)  # states in which the job holds nodes and has a lifecycle

# Why a job failed, as `executionInfo.errors` gives it.
TERMINATED = {"code": "JobTerminated", "message": "The job was terminated by the user."}
TIMED_OUT = {"code": "JobTimedOut", "message": "The job exceeded its maxWallClockTime and was terminated."}
DEALLOCATED = {"code": "NodeDeallocated", "message": "The job's node was removed by a scale-down (nodeDeallocationOption: terminate)."}
EARLY_TERMINATED = {"code": "JobEarlyTerminated", "message": "The sweep's early termination policy stopped the trial."}
CLUSTER_DELETED = {"code": "ClusterDeleted", "message": "The job's cluster was deleted."}
# A sweep's early-terminated trial ends failed like any stopped job (the 2018-05-01 executionState has no
# other end); its error code, its events and its sweep tell it apart.
END_REASONS = {"terminate": TERMINATED, "timeout": TIMED_OUT, "deallocated": DEALLOCATED, "early_terminated": EARLY_TERMINATED}

Change = Callable[[Record], "Record | None"]


def state_of(record: Record) -> JobState:
    return JobState(record.properties["executionState"])


def attempt_of(record: Record) -> int:
    return record.internal.get("attempt", 1)


def record_event(record: Record, now: str, event: str, **details) -> Record:
    """The one event format: when, what, which attempt, and what else the event names."""
    record.internal.setdefault("events", []).append({"time": now, "event": event, "attempt": attempt_of(record), **details})
    return record


def _enter(record: Record, state: JobState, now: str, event: str | None = None, **details) -> Record:
    props = record.properties
    props["executionState"] = state.value
    props["executionStateTransitionTime"] = now
    return record_event(record, now, event or state.value, **details)


def _end(record: Record, state: JobState, now: str, *, exit_code: int | None = None, error: dict | None = None) -> Record:
    info = record.properties.setdefault("executionInfo", {"startTime": now})
    info["endTime"] = now
    if exit_code is not None:
        info["exitCode"] = exit_code
    if error is not None:
        info["errors"] = [error]
    return _enter(record, state, now, **({"error": error["code"]} if error else {}))


def _from(*states: JobState):
    """A transition that leaves only from `states`: anything else is refused (None)."""

    def guard(fn):
        def change(record: Record, *args, **kwargs) -> Record | None:
            if state_of(record) not in states:
                return None
            return fn(record, *args, **kwargs)

        change.__name__, change.__doc__ = fn.__name__, fn.__doc__
        return change

    return guard


def new_job(record: Record, now: str, *, uuid: str, idempotency_key: str | None = None) -> Record:
    """A job as submitted: queued, first attempt."""
    record.internal = {"uuid": uuid, "attempt": 1, **({"idempotencyKey": idempotency_key} if idempotency_key else {})}
    return _enter(record, JobState.QUEUED, now)


@_from(JobState.QUEUED)
def start(record: Record, now: str, *, nodes: list[tuple[str, str]], paths: dict) -> Record:
    """Placed on `nodes` ((id, name) pairs) with its files at `paths`: running."""
    record.properties["executionInfo"] = {"startTime": now}
    record.internal["paths"] = paths
    record.internal["nodes"] = [node_id for node_id, _ in nodes]
    record.internal["nodeNames"] = dict(nodes)  # the nodes may be gone when the job's events name them
    record.internal.pop("killRequestedAt", None)
    return _enter(record, JobState.RUNNING, now, "started", nodes=[name for _, name in nodes])


@_from(*ACTIVE)
def request_terminate(record: Record, now: str, *, reason: str, at: float) -> Record | None:
    """End the job for `reason` ("terminate", "timeout", "deallocated", "early_terminated"). A queued job ends at once (nothing
    runs); a running one is terminating until its processes are stopped; a terminating one keeps its reason."""
    state = state_of(record)
    if state is JobState.QUEUED:
        record.properties["executionInfo"] = {"startTime": now}
        return _end(record, JobState.FAILED, now, error=END_REASONS[reason])
    if state is JobState.TERMINATING and record.internal.get("killRequestedAt") is not None:
        return None
    record.internal.setdefault("endReason", reason)
    record.internal["killRequestedAt"] = at
    if state is JobState.RUNNING:
        _enter(record, JobState.TERMINATING, now, "terminate requested", reason=reason)
    return record


@_from(*LAUNCHED)
def finish(record: Record, now: str, *, outcome: dict) -> Record:
    """The attempt is decided (`outcome`: exitCode, error) or, terminating, its processes are stopped."""
    code = outcome.get("exitCode")
    if state_of(record) is JobState.TERMINATING:
        return _end(
            record, JobState.FAILED, now, exit_code=code, error=END_REASONS.get(record.internal.get("endReason", "terminate"), TERMINATED)
        )
    if code == 0:
        return _end(record, JobState.SUCCEEDED, now, exit_code=0)
    error = {"code": "JobFailed", "message": outcome["error"]} if outcome.get("error") else None
    return _end(record, JobState.FAILED, now, exit_code=code, error=error)


@_from(JobState.RUNNING)
def requeue(record: Record, now: str, *, attempt: int, nodes: list[str], evicted: bool, max_attempts: int) -> Record | None:
    """Attempt `attempt` lost `nodes` (or had them evicted): queue the job again, unless node failures
    (not evictions: a low-priority job expects them) have used up its `max_attempts`."""
    if attempt_of(record) != attempt:
        return None
    record.internal["evictions"] = record.internal.get("evictions", 0) + (1 if evicted else 0)
    record_event(record, now, "node evicted" if evicted else "node lost", nodes=nodes)
    failures = attempt - record.internal["evictions"]
    if failures >= max_attempts:
        return _end(
            record,
            JobState.FAILED,
            now,
            error={"code": "NodeFailure", "message": f"The job's nodes failed {failures} times; the retry budget is exhausted."},
        )
    record.internal["attempt"] = attempt + 1
    record.internal.pop("killRequestedAt", None)
    return _enter(record, JobState.QUEUED, now)


@_from(JobState.RUNNING)
def retry(record: Record, now: str, *, outcome: dict) -> Record:
    """An array's task failed (`outcome`: exitCode, error) with retries left: queued again, alone."""
    details = {"exitCode": outcome.get("exitCode"), **({"error": outcome["error"]} if outcome.get("error") else {})}
    record_event(record, now, "failed, retrying", **details)
    record.internal["attempt"] = attempt_of(record) + 1
    record.internal["retries"] = record.internal.get("retries", 0) + 1
    record.internal.pop("killRequestedAt", None)
    return _enter(record, JobState.QUEUED, now)


@_from(JobState.QUEUED)
def fail_unlaunchable(record: Record, now: str, *, code: str, message: str) -> Record:
    """The job cannot run at all (an unsupported toolkit, volumes that do not mount)."""
    record.properties["executionInfo"] = {"startTime": now}
    return _end(record, JobState.FAILED, now, error={"code": code, "message": message})


@_from(*ACTIVE)
def fail_cluster_deleted(record: Record, now: str) -> Record:
    return _end(record, JobState.FAILED, now, error=CLUSTER_DELETED)


def note_warnings(record: Record, now: str, *, node: str, warnings: list[str]) -> Record | None:
    """What a node warned about while running the job (no container runtime, ...); no state change."""
    if not warnings:
        return None
    for w in warnings:
        record_event(record, now, "warning", node=node, message=str(w))
    return record


def change(transition: Callable[..., Record | None], *args, **kwargs) -> Change:
    """`transition` with its arguments bound: the change to hand to `store.mutate`."""
    return partial(transition, *args, **kwargs)
