"""orchestrations.cluster_controller through Durable Functions' replay (its clock is fake: the pass
retries and the pauses after a failed pass take no time here, where the real engine's would)."""

from __future__ import annotations

from orchestrations.cluster_controller import PASS_RETRY, cluster_controller, failed_pass_backoff
from tests.support.engines import run_on


def test_a_pass_that_fails_all_its_retries_is_recorded_and_the_controller_goes_on():
    calls: list[str] = []
    failures: list[dict] = []
    answers = iter(["fail"] * PASS_RETRY.max_attempts * 2 + ["ok", "gone"])

    def control_cluster(payload):
        calls.append("pass")
        answer = next(answers)
        if answer == "fail":
            raise RuntimeError("the store is unreachable")
        return {"state": answer, "wait": 1.0}

    def record_pass_failure(payload):
        failures.append(payload)

    outcome = run_on(
        "durable-functions",
        cluster_controller,
        {"control_cluster": control_cluster, "record_pass_failure": record_pass_failure},
        {"clusterId": "C"},
    )
    assert outcome.error is None and outcome.output == {"state": "gone", "wait": 1.0}
    assert len(calls) == PASS_RETRY.max_attempts * 2 + 2
    assert [(f["clusterId"], f["failedPasses"]) for f in failures] == [("C", 1), ("C", 2)]
    assert "the store is unreachable" in failures[0]["message"]


def test_the_pause_after_failed_passes_grows_to_a_bound():
    assert [failed_pass_backoff(n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert failed_pass_backoff(50) == 300.0
