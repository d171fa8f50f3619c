"""Delete a resource and its children as one long-running operation."""

from __future__ import annotations

from datetime import timedelta

from batchai.flow import Retry


def resource_deletion(flow, request: dict):
    result = yield flow.activity(
        "delete_resource",
        request,
        retry=Retry(first_interval=timedelta(seconds=1), max_attempts=3),
    )
    return result
