"""A controller pass that died half-way leaves nothing stuck.

A pass claims a job's nodes, then starts the job; a control plane killed between the two (CI
caught it: kill -9 during 200 jobs) left a queued job holding a node, and with it the head of
the queue, forever. The next pass frees such claims. In-process: simulated nodes, real
controller, lifecycles, engine and SQLite store.
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from batchai import ids
from batchai.adapters.simulated_compute import SimulatedCompute
from batchai.model import JobCreateParameters
from batchai.services import Settings
from batchai.submission import submit_job
from function_app.embedded import EmbeddedHost

pytestmark = pytest.mark.timeout(120)
SUB, RG, WS, EXP = "00000000-0000-0000-0000-000000000000", "rg", "ws", "exp"
V = {"api-version": "2018-05-01"}
BASE = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.BatchAI/workspaces/{WS}"


@pytest.fixture
def host(tmp_path):
    host = EmbeddedHost(tmp_path, settings=Settings(data_dir=tmp_path), compute=SimulatedCompute(heartbeat_seconds=0.5))
    host.build()
    host.engine.start()
    yield host
    host.compute.stop()
    host.engine.stop()


def until(predicate, timeout=60.0):
    deadline = time.time() + timeout
    while not (value := predicate()):
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)
    return value


def test_a_queued_job_holding_a_node_is_freed_and_runs(host):
    http = TestClient(host.app, headers={"Authorization": f"Bearer {host.token}"})
    cluster_id = f"{BASE}/clusters/c"
    http.put(BASE, params=V, json={"location": "local"}).raise_for_status()
    http.put(cluster_id, params=V, json={"properties": {
        "vmSize": "STANDARD_D1", "userAccountSettings": {"adminUserName": "u"},
        "scaleSettings": {"manual": {"targetNodeCount": 2}}}}).raise_for_status()
    http.put(f"{BASE}/experiments/{EXP}", params=V).raise_for_status()
    until(lambda: http.get(cluster_id, params=V).json()["properties"]["nodeStateCounts"]["idleNodeCount"] == 2)
    http.post(f"{cluster_id}/pause", params=V).raise_for_status()
    job_ids = [ids.child_id(ids.child_id(ids.workspace_id(SUB, RG, WS), "experiments", EXP), "jobs", n) for n in ("a", "b")]
    for job_id in job_ids:
        submit_job(host.services, job_id, JobCreateParameters.model_validate({"properties": {
            "cluster": {"id": cluster_id}, "nodeCount": 2, "stdOutErrPathPrefix": "/sim",
            "customToolkitSettings": {"commandLine": "sleep 0.1"}}}))
    # what a pass that died after claiming, before starting, leaves: "a" queued and holding a node
    node = host.store.nodes(cluster_id)[0]
    assert host.store.claim_nodes(cluster_id, job_ids[0], [node.id])

    http.post(f"{cluster_id}/resume", params=V).raise_for_status()
    for job_id in job_ids:
        assert until(lambda: host.store.get(job_id).properties["executionState"] in ("succeeded", "failed"))
        assert host.store.get(job_id).properties["executionState"] == "succeeded"
    assert all(n.job is None and n.state == "idle" for n in host.store.nodes(cluster_id))
