"""A sweep, from its first trial to its end:

    observe ──> stop the trials the early-termination policy stops
       │   ──> make trials while fewer than max_concurrent_trials run and max_total_trials are not made
       │   ──> wait for a wake (a trial's metrics or end) or the timer ──> observe ...
       └── (every trial made and ended, or the sweep canceled / timed out / failed too often,
            its running trials stopped and ended) ──> finish: the sweep's state and best trial

The sampler, the policy and the store are behind the activities (batchai/sweep_runs.py): the trials
are recorded in the sweep's record before their jobs are submitted, and each step reads what is
stored, so a replayed, retried or restarted orchestration makes exactly max_total_trials trials.
Continue-as-new keeps the history of a long sweep small.
"""

from __future__ import annotations

from datetime import timedelta

from batchai.flow import Retry

STEP_RETRY = Retry(first_interval=timedelta(seconds=1), max_attempts=5, backoff=2.0)
PASSES_PER_EPISODE = 50


def trials_to_start(view: dict) -> int:
    """How many trials to make now: never more than max_concurrent_trials at once, nor max_total_trials in all."""
    if view["reason"]:
        return 0
    return max(0, min(view["concurrency"] - view["active"], view["budget"] - view["made"]))


def sweep(flow, sweep: dict):
    for _ in range(PASSES_PER_EPISODE):
        view = yield flow.activity("observe_sweep", sweep, retry=STEP_RETRY)
        if view["state"] in ("gone", "done"):
            return view
        if view["stop"]:
            yield flow.activity("stop_trials", {**sweep, "trials": view["stop"], "reason": view["reason"]}, retry=STEP_RETRY)
        count = trials_to_start(view)
        if count:
            yield flow.activity("start_trials", {**sweep, "first": view["made"], "count": count}, retry=STEP_RETRY)
            continue  # observe again: they count as running from now
        if view["active"] == 0 and (view["reason"] or view["made"] >= view["budget"]):
            return (yield flow.activity("finish_sweep", {**sweep, "reason": view["reason"]}, retry=STEP_RETRY))
        flow.status({"made": view["made"], "active": view["active"], "reason": view["reason"]})
        yield flow.any([flow.event("wake"), flow.timer(timedelta(seconds=view["wait"]))])
    flow.restart(sweep)
