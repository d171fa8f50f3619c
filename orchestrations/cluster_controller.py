"""One eternal orchestration per cluster: nodes, scaling and scheduling, in one place.

It sleeps until something happens (a "wake" event: job queued or ended, node joined, scale
request, pause/resume) or until the time the last pass asked for (a node may have gone silent,
an idle node may be due to leave), then runs one `control_cluster` pass. The store is the truth,
so a lost or duplicated wake only delays or repeats a pass. Continue-as-new keeps the history
of this never-ending orchestration small.
"""

from __future__ import annotations

from datetime import timedelta

from batchai.flow import Retry

PASS_RETRY = Retry(first_interval=timedelta(seconds=1), max_attempts=5, backoff=2.0)
PASSES_PER_EPISODE = 50


def cluster_controller(flow, cluster: dict):
    for _ in range(PASSES_PER_EPISODE):
        result = yield flow.activity("control_cluster", {"clusterId": cluster["clusterId"]}, retry=PASS_RETRY)
        if result["state"] == "gone":
            return result
        flow.status(result)
        yield flow.any([flow.event("wake"), flow.timer(timedelta(seconds=result["wait"]))])
    flow.restart(cluster)
