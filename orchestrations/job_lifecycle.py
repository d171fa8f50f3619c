"""A job from queued to running to exactly one of succeeded / failed.

The store holds the truth; events ("wake") are only hints to look again, and a timer looks
again anyway, so a lost event or a restarted control plane delays a step but never skips one.
Each step is an activity that returns a fresh view; `batchai.lifecycle.next_step` (pure) picks
what to do with it.
"""

from __future__ import annotations

from datetime import timedelta

from batchai.flow import Retry
from batchai.lifecycle import next_step

STEP_RETRY = Retry(first_interval=timedelta(seconds=1), max_attempts=5, backoff=2.0)
STEPS_PER_EPISODE = 100  # then continue-as-new, to keep the history small on long jobs


def job_lifecycle(flow, job: dict):
    job_id = job["jobId"]
    view = yield flow.activity("observe_job", job, retry=STEP_RETRY)
    for _ in range(STEPS_PER_EPISODE):
        flow.status({"state": view["state"], "attempt": view.get("attempt")})
        step = next_step(view)
        if step == "done":
            return view
        if step == "wait":
            yield flow.any([flow.event("wake"), flow.timer(timedelta(seconds=view["wait"]))])
            view = yield flow.activity("observe_job", job, retry=STEP_RETRY)
        elif step == "kill":
            reason = "timeout" if view["state"] == "running" else "terminate"
            view = yield flow.activity("kill_job", {"jobId": job_id, "reason": reason}, retry=STEP_RETRY)
        elif step == "requeue":
            view = yield flow.activity("requeue_job", {"jobId": job_id, "outcome": view["outcome"]}, retry=STEP_RETRY)
        else:
            view = yield flow.activity("complete_job", {"jobId": job_id}, retry=STEP_RETRY)
    flow.restart(job)
