"""A launched job, from running to exactly one of succeeded / failed:

    running ──(its tasks report)──────────────────────────> succeeded | failed   [done]
       ├──(deadline)──> kill ──> terminating ──> complete ──> failed
       ├──(terminate: the API)──> terminating ──> complete ──> failed
       └──(a node lost or evicted)──> requeue ──> queued ──(launched again)──> running ...

The scheduling pass starts it as it launches the job, handing it the view it just stored; the
node report that ends the job wakes it with the terminal state. So a job's hot path costs the
engine two work items: this first episode (which only sets a timer) and the last one.
Everything else (kill, requeue, complete) happens only when a timer or a wake finds something
to do, each step an activity that returns a fresh view; `batchai.lifecycle.next_step` (pure)
picks what to do with it. The store holds the truth; a wake without a terminal state is only a
hint to look again, and the timer looks again anyway, so a lost event delays a step but never
skips one.
"""

from __future__ import annotations

from datetime import timedelta

from batchai.flow import Retry
from batchai.lifecycle import is_settled, next_step

STEP_RETRY = Retry(first_interval=timedelta(seconds=1), max_attempts=5, backoff=2.0)
STEPS_PER_EPISODE = 100  # then continue-as-new, to keep the history small on long jobs


def job_lifecycle(flow, job: dict):
    ref = {"jobId": job["jobId"], "uuid": job.get("uuid")}
    view = job.get("view")
    if view is None:
        view = yield flow.activity("observe_job", ref, retry=STEP_RETRY)
    for _ in range(STEPS_PER_EPISODE):
        flow.status({"state": view["state"], "attempt": view.get("attempt")})
        step = next_step(view)
        if step == "done":
            return view
        if step == "wait":
            _, told = yield flow.any([flow.event("wake"), flow.timer(timedelta(seconds=view["wait"]))])
            view = told if is_settled(told) else (yield flow.activity("observe_job", ref, retry=STEP_RETRY))
        elif step == "kill":
            reason = "timeout" if view["state"] == "running" else "terminate"
            view = yield flow.activity("kill_job", {**ref, "reason": reason}, retry=STEP_RETRY)
        elif step == "requeue":
            view = yield flow.activity("requeue_job", {**ref, "outcome": view["outcome"]}, retry=STEP_RETRY)
        else:
            view = yield flow.activity("complete_job", ref, retry=STEP_RETRY)
    flow.restart(ref)  # the next episode looks first
