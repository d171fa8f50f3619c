"""The job state machine (batchai.job_state): every transition leaves only from its states, and
every one writes the one event format; terminal states are entered with exactly one event."""

from __future__ import annotations

import pytest

from batchai import job_state as js
from batchai.job_state import JobState
from batchai.ports import Record

NOW = "2026-12-01T00:00:00.000Z"


def queued() -> Record:
    record = Record(id="/j", type="jobs", name="j", parent="/e", body={"properties": {}})
    return js.new_job(record, NOW, uuid="u1", idempotency_key="k")


def running() -> Record:
    return js.start(queued(), NOW, nodes=[("n1", "node-0")], paths={"stdouterr": "/x"})


def states(record: Record | None) -> str | None:
    return None if record is None else record.properties["executionState"]


def events(record: Record) -> list[str]:
    return [e["event"] for e in record.internal["events"]]


def test_states_know_terminal_and_active():
    assert [s for s in JobState if s.is_terminal()] == [JobState.SUCCEEDED, JobState.FAILED]
    assert all(s.is_active() for s in js.ACTIVE)
    assert JobState("running") is JobState.RUNNING and JobState.RUNNING == "running"


def test_a_new_job_is_queued_with_one_event():
    record = queued()
    assert states(record) == "queued" and record.internal["attempt"] == 1 and record.internal["idempotencyKey"] == "k"
    assert record.internal["events"] == [{"time": NOW, "event": "queued", "attempt": 1}]


def test_start_then_finish_succeeds_once():
    record = running()
    assert states(record) == "running" and record.internal["nodeNames"] == {"n1": "node-0"}
    assert record.internal["events"][-1] == {"time": NOW, "event": "started", "attempt": 1, "nodes": ["node-0"]}
    assert js.start(record, NOW, nodes=[], paths={}) is None  # not queued any more
    ended = js.finish(record, NOW, outcome={"exitCode": 0})
    assert states(ended) == "succeeded" and ended.properties["executionInfo"]["exitCode"] == 0
    assert js.finish(ended, NOW, outcome={"exitCode": 1}) is None
    assert events(ended).count("succeeded") == 1


def test_a_failing_exit_code_fails_with_its_error():
    ended = js.finish(running(), NOW, outcome={"exitCode": 3, "error": "boom"})
    assert states(ended) == "failed"
    assert ended.properties["executionInfo"]["errors"] == [{"code": "JobFailed", "message": "boom"}]


def test_terminating_a_queued_job_fails_it_at_once():
    ended = js.request_terminate(queued(), NOW, reason="terminate", at=1.0)
    assert states(ended) == "failed" and ended.properties["executionInfo"]["errors"] == [js.TERMINATED]
    assert js.request_terminate(ended, NOW, reason="terminate", at=2.0) is None


def test_terminating_a_running_job_waits_for_its_processes_and_keeps_the_first_reason():
    record = js.request_terminate(running(), NOW, reason="timeout", at=1.0)
    assert states(record) == "terminating" and record.internal["killRequestedAt"] == 1.0
    assert js.request_terminate(record, NOW, reason="terminate", at=2.0) is None  # already asked
    ended = js.finish(record, NOW, outcome={"exitCode": 137})
    assert states(ended) == "failed" and ended.properties["executionInfo"]["errors"] == [js.TIMED_OUT]


@pytest.mark.parametrize("evicted, expected_attempt", [(False, 2), (True, 2)])
def test_requeue_starts_the_next_attempt(evicted, expected_attempt):
    record = js.requeue(running(), NOW, attempt=1, nodes=["node-0"], evicted=evicted, max_attempts=3)
    assert states(record) == "queued" and record.internal["attempt"] == expected_attempt
    assert ("node evicted" if evicted else "node lost") in events(record)
    assert js.requeue(record, NOW, attempt=1, nodes=[], evicted=False, max_attempts=3) is None  # not running


def test_requeue_of_a_stale_attempt_is_refused_and_node_failures_spend_the_budget():
    record = running()
    assert js.requeue(record, NOW, attempt=2, nodes=[], evicted=False, max_attempts=3) is None
    ended = js.requeue(record, NOW, attempt=1, nodes=["node-0"], evicted=False, max_attempts=1)
    assert states(ended) == "failed" and ended.properties["executionInfo"]["errors"][0]["code"] == "NodeFailure"
    assert events(ended)[-2:] == ["node lost", "failed"]


def test_evictions_do_not_spend_the_retry_budget():
    record = running()
    for attempt in (1, 2, 3):
        record = js.requeue(record, NOW, attempt=attempt, nodes=["node-0"], evicted=True, max_attempts=1)
        assert states(record) == "queued"
        record = js.start(record, NOW, nodes=[("n1", "node-0")], paths={})


def test_unlaunchable_and_cluster_deleted_fail_with_their_codes():
    assert js.fail_unlaunchable(running(), NOW, code="X", message="m") is None
    ended = js.fail_unlaunchable(queued(), NOW, code="UnsupportedToolkit", message="m")
    assert ended.properties["executionInfo"]["errors"] == [{"code": "UnsupportedToolkit", "message": "m"}]
    gone = js.fail_cluster_deleted(running(), NOW)
    assert gone.properties["executionInfo"]["errors"] == [js.CLUSTER_DELETED]
    assert js.fail_cluster_deleted(gone, NOW) is None


def test_warnings_are_events_without_a_state_change():
    record = js.note_warnings(running(), NOW, node="node-0", warnings=["no docker"])
    assert states(record) == "running"
    assert record.internal["events"][-1] == {"time": NOW, "event": "warning", "attempt": 1, "node": "node-0", "message": "no docker"}
    assert js.note_warnings(record, NOW, node="node-0", warnings=[]) is None


def test_retry_queues_a_failed_task_again_as_its_next_attempt():
    retried = js.retry(running(), NOW, outcome={"exitCode": 3, "error": "boom"})
    assert states(retried) == "queued" and retried.internal["attempt"] == 2 and retried.internal["retries"] == 1
    assert retried.internal["events"][-2] == {"time": NOW, "event": "failed, retrying", "attempt": 1, "exitCode": 3, "error": "boom"}
    assert js.retry(retried, NOW, outcome={"exitCode": 3}) is None  # only a running attempt is retried
    terminating = js.request_terminate(running(), NOW, reason="terminate", at=1.0)
    assert js.retry(terminating, NOW, outcome={"exitCode": 137}) is None  # a stopped task is not retried
