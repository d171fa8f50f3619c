"""A cluster whose nodes cannot be allocated: the controller says why in the cluster's errors, keeps
trying with a growing pause, and runs the queued job once the compute gives nodes again."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from batchai.lifecycle import controller_instance
from batchai.services import Settings
from function_app.embedded import EmbeddedHost
from tests.support.paused_host import V, workspace_path
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(120)


class QuotaExceeded(Exception):
    pass


@pytest.fixture
def host(tmp_path):
    host = EmbeddedHost(tmp_path, settings=Settings(data_dir=tmp_path), simulated_nodes={"heartbeat_seconds": 0.5})
    host.build()
    start_node = host.compute.start_node
    host.refusing = True

    def refusing_start_node(**kwargs):
        if host.refusing:
            raise QuotaExceeded("Operation could not be completed as it results in exceeding approved standardNCFamily Cores quota")
        return start_node(**kwargs)

    host.compute.start_node = refusing_start_node
    host.engine.start()
    host.http = TestClient(host.app, headers={"Authorization": f"Bearer {host.token}"})
    try:
        yield host
    finally:
        host.engine.stop()
        host.compute.close()


def failed_passes(cluster: dict) -> int:
    errors = [e for e in cluster["properties"].get("errors", []) if e["code"] == "AllocationFailed"]
    return int(next(d["value"] for d in errors[0]["details"] if d["name"] == "failedPasses")) if errors else 0


def test_nodes_that_cannot_be_allocated_show_in_errors_and_the_job_runs_when_they_can(host):
    base = workspace_path("alloc")
    http = host.http
    http.put(base, params=V, json={"location": "local"}).raise_for_status()
    cluster_body = {
        "properties": {
            "vmSize": "STANDARD_NC6",
            "userAccountSettings": {"adminUserName": "u"},
            "scaleSettings": {"manual": {"targetNodeCount": 1}},
        }
    }
    http.put(f"{base}/clusters/c", params=V, json=cluster_body).raise_for_status()
    http.put(f"{base}/experiments/e", params=V).raise_for_status()
    job = {
        "properties": {
            "cluster": {"id": f"{base}/clusters/c"},
            "nodeCount": 1,
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
            "customToolkitSettings": {"commandLine": "sleep 0.1"},
        }
    }
    http.put(f"{base}/experiments/e/jobs/j", params=V, json=job).raise_for_status()

    def cluster() -> dict:
        return http.get(f"{base}/clusters/c", params=V).json()

    until(lambda: failed_passes(cluster()) >= 2, 60, "the allocation to fail on two passes in a row")
    (error,) = [e for e in cluster()["properties"]["errors"] if e["code"] == "AllocationFailed"]
    assert "0 of 1 nodes" in error["message"] and "QuotaExceeded" in error["message"] and "quota" in error["message"]
    record = host.store.get(f"{base}/clusters/c")
    assert host.engine.status(controller_instance(record))["runtimeStatus"] == "RUNNING"
    assert http.get(f"{base}/experiments/e/jobs/j", params=V).json()["properties"]["executionState"] == "queued"

    host.refusing = False  # the quota is raised
    until(
        lambda: http.get(f"{base}/experiments/e/jobs/j", params=V).json()["properties"]["executionState"] == "succeeded",
        60,
        "the job to run on the node allocated at last",
    )
    assert "errors" not in cluster()["properties"]
