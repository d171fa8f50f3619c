"""One eternal orchestration per cluster: nodes, scaling and scheduling, in one place.

It sleeps until something happens (a "wake" event: job queued or ended, node joined, scale
request, pause/resume) or until the time the last pass asked for (a node may have gone silent,
an idle node may be due to leave), then runs one `control_cluster` pass. The store is the truth,
so a lost or duplicated wake only delays or repeats a pass. Continue-as-new keeps the history
of this never-ending orchestration small.

It never ends on a failing pass: nothing would start it again before the host restarts. A pass
that fails all its retries (the store or the compute down) is written to the cluster's errors,
and the next one comes after a growing pause; the first pass that succeeds clears the error.
"""

from __future__ import annotations

from datetime import timedelta

from batchai.flow import FlowTaskFailed, Retry

PASS_RETRY = Retry(first_interval=timedelta(seconds=1), max_attempts=5, backoff=2.0)
ERROR_RETRY = Retry(first_interval=timedelta(seconds=1), max_attempts=3, backoff=2.0)
PASSES_PER_EPISODE = 50
MAX_BACKOFF_SECONDS = 300.0


def failed_pass_backoff(failures: int) -> float:
    """Seconds before the next pass after `failures` failed ones in a row: 2, 4, 8, ... up to five minutes."""
    return min(MAX_BACKOFF_SECONDS, 2.0**failures)


def cluster_controller(flow, cluster: dict):
    failures = cluster.get("failedPasses", 0)
    for _ in range(PASSES_PER_EPISODE):
        try:
            result = yield flow.activity("control_cluster", {"clusterId": cluster["clusterId"]}, retry=PASS_RETRY)
        except FlowTaskFailed as exc:
            failures += 1
            failure = {"clusterId": cluster["clusterId"], "message": str(exc), "failedPasses": failures}
            try:
                yield flow.activity("record_pass_failure", failure, retry=ERROR_RETRY)
            except FlowTaskFailed:
                pass  # the store is down too: the error shows once it is back, or the next pass succeeds
            wait = failed_pass_backoff(failures)
        else:
            failures = 0
            if result["state"] == "gone":
                return result
            flow.status(result)
            wait = result["wait"]
        yield flow.any([flow.event("wake"), flow.timer(timedelta(seconds=wait))])
    flow.restart({**cluster, "failedPasses": failures})
