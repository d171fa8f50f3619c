"""A controller pass that died half-way, or a job deleted under its lifecycle, leaves nothing stuck.

A pass claims a job's nodes, then starts the job; a control plane killed between the two (CI
caught it: kill -9 during 200 jobs) left a queued job holding a node, and with it the head of
the queue, forever. The next pass frees such claims. A queued job's lifecycle re-checks only
every ten minutes, so whoever changes a job must wake it: the pass that tried to start it (even
one that then failed), and the deletion. In-process: simulated nodes, real controller,
lifecycles, engine and SQLite store.
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from activities import jobs as activities_jobs
from activities import scheduling
from batchai import ids
from batchai.adapters.simulated_compute import SimulatedCompute
from batchai.lifecycle import job_instance, lifecycle_input
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


CLUSTER = f"{BASE}/clusters/c"


def job_id(name: str) -> str:
    return ids.child_id(ids.child_id(ids.workspace_id(SUB, RG, WS), "experiments", EXP), "jobs", name)


def paused_cluster(host) -> TestClient:
    http = TestClient(host.app, headers={"Authorization": f"Bearer {host.token}"})
    http.put(BASE, params=V, json={"location": "local"}).raise_for_status()
    http.put(CLUSTER, params=V, json={"properties": {
        "vmSize": "STANDARD_D1", "userAccountSettings": {"adminUserName": "u"},
        "scaleSettings": {"manual": {"targetNodeCount": 2}}}}).raise_for_status()
    http.put(f"{BASE}/experiments/{EXP}", params=V).raise_for_status()
    until(lambda: http.get(CLUSTER, params=V).json()["properties"]["nodeStateCounts"]["idleNodeCount"] == 2)
    http.post(f"{CLUSTER}/pause", params=V).raise_for_status()
    return http


def submit(host, name: str, node_count: int = 2, command: str = "sleep 0.1") -> None:
    submit_job(host.services, job_id(name), JobCreateParameters.model_validate({"properties": {
        "cluster": {"id": CLUSTER}, "nodeCount": node_count, "stdOutErrPathPrefix": "/sim",
        "customToolkitSettings": {"commandLine": command}}}))


def test_a_queued_job_holding_a_node_is_freed_and_runs(host):
    http = paused_cluster(host)
    cluster_id = CLUSTER
    job_ids = [job_id("a"), job_id("b")]
    for name in ("a", "b"):
        submit(host, name)
    # what a pass that died after claiming, before starting, leaves: "a" queued and holding a node
    node = host.store.nodes(cluster_id)[0]
    assert host.store.claim_nodes(cluster_id, job_ids[0], [node.id])

    http.post(f"{cluster_id}/resume", params=V).raise_for_status()
    for each in job_ids:
        assert until(lambda each=each: host.store.get(each).properties["executionState"] in ("succeeded", "failed"))
        assert host.store.get(each).properties["executionState"] == "succeeded"
    assert all(n.job is None and n.state == "idle" for n in host.store.nodes(cluster_id))


def test_a_pass_that_fails_half_way_still_wakes_the_jobs_it_tried(host, monkeypatch):
    paused_cluster(host)
    submit(host, "first", node_count=1)
    submit(host, "second", node_count=1)
    real_launch, woken = scheduling.launch, []

    def launch_then_fail(svc, record, nodes):
        if record.name == "second":
            raise RuntimeError("the store went away mid-pass")
        return real_launch(svc, record, nodes)

    real_raise = host.engine.raise_event
    monkeypatch.setattr(scheduling, "launch", launch_then_fail)
    monkeypatch.setattr(host.engine, "raise_event", lambda instance, name, data=None: woken.append(instance) or real_raise(instance, name, data))
    with pytest.raises(RuntimeError, match="mid-pass"):
        scheduling.run_pass(host.services, CLUSTER)
    assert set(woken) >= {job_instance(host.store.get(job_id(n))) for n in ("first", "second")}
    assert host.store.get(job_id("first")).properties["executionState"] == "running"


def test_a_deleted_queued_job_ends_its_lifecycle_and_a_new_job_of_its_name_is_not_driven_by_it(host):
    http = paused_cluster(host)
    submit(host, "again")
    old = host.store.get(job_id("again"))
    http.delete(f"{BASE}/experiments/{EXP}/jobs/again", params=V).raise_for_status()
    until(lambda: host.store.get(job_id("again")) is None)
    until(lambda: (host.engine.status(job_instance(old)) or {}).get("runtimeStatus") == "COMPLETED", timeout=30)

    submit(host, "again")
    new = host.store.get(job_id("again"))
    assert host.services.engine.status(job_instance(new)) is not None
    view = activities_jobs.observe_job(host.services, lifecycle_input(old))
    assert view["state"] == "gone"  # the old lifecycle, had it lived, would see no job of its own
    assert activities_jobs.observe_job(host.services, lifecycle_input(new))["state"] == "queued"
