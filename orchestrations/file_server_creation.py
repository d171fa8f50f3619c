"""Make a file server's NFS VM (minutes): the API stored it `creating`; the activity records the outcome."""

from __future__ import annotations

from datetime import timedelta

from batchai.flow import Retry


def file_server_creation(flow, request: dict):
    result = yield flow.activity(
        "provision_file_server",
        request,
        retry=Retry(first_interval=timedelta(seconds=5), max_attempts=3),
    )
    return result
