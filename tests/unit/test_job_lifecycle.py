"""orchestrations.job_lifecycle on both engines, with scripted activities standing in for the store.

Each fake activity returns the next view from its script, as the real ones return a fresh view
of the stored job; the orchestration must pick the right next step from each.
"""

from __future__ import annotations

import threading

import pytest

from orchestrations.job_lifecycle import STEPS_PER_EPISODE, job_lifecycle
from tests.support.engines import ENGINES, run_on

pytestmark = pytest.mark.timeout(120)
WAIT = 0.05  # seconds: views tell the orchestration how long to wait before looking again
# the Durable Task Scheduler adapter too, on a durabletask sidecar: the job's path from queue to end
WITH_SCHEDULER = [*ENGINES, "durable-task-scheduler"]


class Script:
    """Scripted activity answers; records every call in order."""

    def __init__(self, **answers: list[dict]):
        self.answers = {name: list(views) for name, views in answers.items()}
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def activities(self):
        def make(name):
            def activity(payload):
                with self._lock:
                    self.calls.append(name)
                    assert payload == {"jobId": "J"} or payload.get("jobId") == "J", payload
                    return self.answers[name].pop(0)

            return activity

        return {name: make(name) for name in ("observe_job", "kill_job", "complete_job", "requeue_job")}


def queued():
    return {"state": "queued", "wait": WAIT}


def running(outcome=None):
    return {"state": "running", "attempt": 1, "outcome": outcome, "wait": WAIT}


@pytest.mark.parametrize("engine", WITH_SCHEDULER)
def test_queued_running_succeeded(engine):
    script = Script(
        observe_job=[queued(), queued(), running(), running({"exitCode": 0})],
        complete_job=[{"state": "succeeded", "attempt": 1}],
    )
    outcome = run_on(engine, job_lifecycle, script.activities(), {"jobId": "J"})
    assert outcome.error is None and outcome.output["state"] == "succeeded"
    assert script.calls == ["observe_job"] * 4 + ["complete_job"]


@pytest.mark.parametrize("engine", ENGINES)
def test_terminate_goes_through_terminating_and_ends_failed(engine):
    script = Script(
        observe_job=[
            running(),
            {"state": "terminating", "wait": WAIT},
            {"state": "terminating", "killRequested": True, "tasksDone": True, "wait": WAIT},
        ],
        kill_job=[{"state": "terminating", "killRequested": True, "wait": WAIT}],
        complete_job=[{"state": "failed", "attempt": 1}],
    )
    outcome = run_on(engine, job_lifecycle, script.activities(), {"jobId": "J"})
    assert outcome.output["state"] == "failed"
    assert script.calls == ["observe_job", "observe_job", "kill_job", "observe_job", "complete_job"]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_wall_clock_timeout_kills_then_completes(engine):
    script = Script(
        observe_job=[dict(running(), deadlineExceeded=True)],
        kill_job=[{"state": "terminating", "killRequested": True, "killExpired": True, "wait": WAIT}],
        complete_job=[{"state": "failed", "attempt": 1}],
    )
    run_on(engine, job_lifecycle, script.activities(), {"jobId": "J"})
    assert script.calls == ["observe_job", "kill_job", "complete_job"]


@pytest.mark.parametrize("engine", WITH_SCHEDULER)
def test_a_lost_node_requeues_and_the_next_attempt_succeeds(engine):
    script = Script(
        observe_job=[running({"nodeLost": True, "node": "n1"}), queued(), running({"exitCode": 0})],
        requeue_job=[queued()],
        complete_job=[{"state": "succeeded", "attempt": 2}],
    )
    outcome = run_on(engine, job_lifecycle, script.activities(), {"jobId": "J"})
    assert outcome.output == {"state": "succeeded", "attempt": 2}
    assert script.calls == ["observe_job", "requeue_job", "observe_job", "observe_job", "complete_job"]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_wake_event_looks_again_before_the_timer(engine):
    script = Script(
        observe_job=[{"state": "queued", "wait": 3600}, running({"exitCode": 0})],
        complete_job=[{"state": "succeeded", "attempt": 1}],
    )
    outcome = run_on(engine, job_lifecycle, script.activities(), {"jobId": "J"}, events=[("wake", None)], timeout=30)
    assert outcome.output["state"] == "succeeded"


def test_a_long_wait_continues_as_new_to_keep_the_history_small():
    steps = STEPS_PER_EPISODE + 5
    script = Script(
        observe_job=[queued() for _ in range(steps)] + [running({"exitCode": 0}), running({"exitCode": 0})],
        complete_job=[{"state": "succeeded", "attempt": 1}],
    )
    outcome = run_on("durable-functions", job_lifecycle, script.activities(), {"jobId": "J"})
    assert outcome.restarts == 1 and outcome.output["state"] == "succeeded"


@pytest.mark.parametrize("engine", WITH_SCHEDULER)
def test_the_hot_path_runs_no_activity_a_launch_then_a_terminal_wake(engine):
    script = Script()
    launched = {"jobId": "J", "uuid": "U", "view": dict(running(), wait=3600)}
    outcome = run_on(
        engine, job_lifecycle, script.activities(), launched, events=[("wake", {"state": "succeeded", "attempt": 1})], timeout=30
    )
    assert outcome.output == {"state": "succeeded", "attempt": 1}
    assert script.calls == []


@pytest.mark.parametrize("engine", ENGINES)
def test_a_wake_with_a_state_that_is_not_terminal_is_only_a_hint_to_look(engine):
    script = Script(observe_job=[running({"exitCode": 0})], complete_job=[{"state": "succeeded", "attempt": 1}])
    launched = {"jobId": "J", "view": dict(running(), wait=3600)}
    outcome = run_on(engine, job_lifecycle, script.activities(), launched, events=[("wake", {"state": "queued"})], timeout=30)
    assert outcome.output["state"] == "succeeded"
    assert script.calls == ["observe_job", "complete_job"]
