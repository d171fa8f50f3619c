"""Bring a cluster's nodes up (and replace dead ones) through the compute port."""

from __future__ import annotations

from datetime import timedelta

from batchai.flow import Retry


def cluster_provision(flow, cluster: dict):
    result = yield flow.activity(
        "provision_cluster", {"clusterId": cluster["clusterId"]},
        retry=Retry(first_interval=timedelta(seconds=1), max_attempts=3),
    )
    return result
