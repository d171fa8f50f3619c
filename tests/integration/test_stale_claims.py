"""A controller pass that died half-way, or a job deleted under its lifecycle, leaves nothing stuck.

A pass claims a job's nodes, then starts the job; a control plane killed between the two (CI
caught it: kill -9 during 200 jobs) left a queued job holding a node, and with it the head of
the queue, forever. The next pass frees such claims. A launched job's lifecycle starts with the
pass that launched it, even one that then failed; a deleted job's lifecycle ends. In-process:
simulated nodes, real controller, lifecycles, engine and SQLite store.
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from activities import jobs as activities_jobs
from batchai import ids
from batchai import scheduling_pass as scheduling
from batchai.lifecycle import job_instance, lifecycle_input
from batchai.model import JobCreateParameters
from batchai.submission import submit_job
from tests.support.paused_host import simulated_host, simulated_job
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(120)
SUB, RG, EXP = "00000000-0000-0000-0000-000000000000", "rg", "exp"
V = {"api-version": "2018-05-01"}


@pytest.fixture
def host(tmp_path, unique_name):
    # launched jobs' lifecycles due a second after launch, not 30 s: the tests' 30 s waits for them raced that
    with simulated_host(tmp_path, lifecycle_start_delay_seconds=1.0) as host:
        host.workspace = unique_name("claims")
        yield host


def base(host) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.BatchAI/workspaces/{host.workspace}"


def cluster(host) -> str:
    return f"{base(host)}/clusters/c"


def job_id(host, name: str) -> str:
    return ids.child_id(ids.child_id(ids.workspace_id(SUB, RG, host.workspace), "experiments", EXP), "jobs", name)


def paused_cluster(host) -> TestClient:
    http = TestClient(host.app, headers={"Authorization": f"Bearer {host.token}"})
    http.put(base(host), params=V, json={"location": "local"}).raise_for_status()
    http.put(
        cluster(host),
        params=V,
        json={
            "properties": {
                "vmSize": "STANDARD_D1",
                "userAccountSettings": {"adminUserName": "u"},
                "scaleSettings": {"manual": {"targetNodeCount": 2}},
            }
        },
    ).raise_for_status()
    http.put(f"{base(host)}/experiments/{EXP}", params=V).raise_for_status()
    until(lambda: http.get(cluster(host), params=V).json()["properties"]["nodeStateCounts"]["idleNodeCount"] == 2, 60, "2 idle nodes")
    http.post(f"{cluster(host)}/pause", params=V).raise_for_status()
    return http


def submit(host, name: str, node_count: int = 2, command: str = "sleep 0.1", **properties) -> None:
    submit_job(
        host.services,
        job_id(host, name),
        JobCreateParameters.model_validate(simulated_job(cluster(host), command, node_count, **properties)),
    )


def head_behind_a_running_job(host) -> str:
    """One node runs a long job; queued behind it: a 2-node head that waits for it (one node is free), a job
    that would delay the head, and one that ends before the head can start. The cluster's id (paused)."""
    http = paused_cluster(host)
    cluster_id = cluster(host)
    submit(host, "running", node_count=1, command="sleep 600")
    http.post(f"{cluster_id}/resume", params=V).raise_for_status()
    until(lambda: host.store.get(job_id(host, "running")).properties["executionState"] == "running", 60, "a job on one node")
    http.post(f"{cluster_id}/pause", params=V).raise_for_status()
    submit(host, "head", node_count=2, schedulingPriority="high")
    submit(host, "long", node_count=1)
    submit(host, "short", node_count=1, constraints={"maxWallClockTime": "00:01:00"})
    return cluster_id


def test_a_node_reports_quick_pass_decides_as_a_thorough_one_when_the_head_needs_a_reservation(host):
    """The quick pass sees only free nodes; behind a head that cannot start yet it must still protect the head's
    reservation (only a job short enough is backfilled), as the controller's pass does."""
    cluster_id = head_behind_a_running_job(host)
    free = [n.id for n in host.store.nodes(cluster_id) if n.job is None]
    timeout = host.services.settings.node_timeout_seconds
    now = time.time()
    quick = scheduling.decide(host.store, cluster_id, now, timeout, thorough=False)
    thorough = scheduling.decide(host.store, cluster_id, now, timeout)
    assert [(j, [n.id for n in nodes]) for j, nodes, _ in quick] == [(job_id(host, "short"), free)]
    assert [(j, [n.id for n in nodes]) for j, nodes, _ in thorough] == [(job_id(host, "short"), free)]


def test_a_quick_pass_soon_after_a_thorough_one_reuses_when_its_busy_nodes_free_up(host, monkeypatch):
    """Behind a head that needs a reservation, a quick pass within ENDS_REUSE_SECONDS of a thorough one decides
    as it did without reading every node again; later, it reads them (a thorough pass after all)."""
    cluster_id = head_behind_a_running_job(host)
    timeout = host.services.settings.node_timeout_seconds
    now = time.time()  # the quick pass comes "within ENDS_REUSE_SECONDS" by its clock, however slow the machine
    thorough = scheduling.decide(host.store, cluster_id, now, timeout)
    assert [j for j, _, _ in thorough] == [job_id(host, "short")]

    def every_node(*args, **kwargs):
        raise AssertionError("a quick pass read every node")

    monkeypatch.setattr(host.store, "nodes", every_node)
    assert scheduling.decide(host.store, cluster_id, now, timeout, thorough=False) == thorough
    monkeypatch.setattr(scheduling, "ENDS_REUSE_SECONDS", 0.0)
    with pytest.raises(AssertionError, match="read every node"):
        scheduling.decide(host.store, cluster_id, time.time(), timeout, thorough=False)


def test_a_queued_job_holding_a_node_is_freed_and_runs(host):
    http = paused_cluster(host)
    cluster_id = cluster(host)
    job_ids = [job_id(host, "a"), job_id(host, "b")]
    for name in ("a", "b"):
        submit(host, name)
    # what a pass that died after claiming, before starting, leaves: "a" queued and holding a node
    node = host.store.nodes(cluster_id)[0]
    assert host.store.claim_nodes(cluster_id, job_ids[0], [node.id])

    http.post(f"{cluster_id}/resume", params=V).raise_for_status()
    for each in job_ids:
        assert until(lambda: host.store.get(each).properties["executionState"] in ("succeeded", "failed"), 60, f"{each} to end")
        assert host.store.get(each).properties["executionState"] == "succeeded"
    assert all(n.job is None and n.state == "idle" for n in host.store.nodes(cluster_id))


def test_a_job_whose_preparation_breaks_stays_queued_and_the_others_start(host, monkeypatch):
    paused_cluster(host)
    submit(host, "first", node_count=1, command="sleep 60")  # still running when its lifecycle is due
    submit(host, "second", node_count=1)
    real_prepare = scheduling.prepare

    def prepare_or_break(svc, record, nodes, cluster, gpus):
        if record.name == "second":
            raise RuntimeError("the store went away mid-pass")
        return real_prepare(svc, record, nodes, cluster, gpus)

    monkeypatch.setattr(scheduling, "prepare", prepare_or_break)
    assert scheduling.run_pass(host.services, host.store.get(cluster(host))) == [job_id(host, "first")]
    first, second = host.store.get(job_id(host, "first")), host.store.get(job_id(host, "second"))
    assert first.properties["executionState"] == "running"
    until(lambda: host.engine.status(job_instance(first)) is not None, 30, "the first job's lifecycle to start")
    assert second.properties["executionState"] == "queued" and host.engine.status(job_instance(second)) is None
    assert [n.job for n in host.store.nodes(cluster(host)) if n.job] == [first.id.lower()]


def test_a_deleted_job_ends_its_lifecycle_and_a_new_job_of_its_name_is_not_driven_by_it(host):
    http = paused_cluster(host)
    submit(host, "again", node_count=1, command="sleep 600")
    http.post(f"{cluster(host)}/resume", params=V).raise_for_status()
    old = until(
        lambda: (r := host.store.get(job_id(host, "again"))).properties["executionState"] == "running" and r, 60, "the job to start"
    )
    until(lambda: host.engine.status(job_instance(old)) is not None, 30, "its lifecycle to start")
    http.delete(f"{base(host)}/experiments/{EXP}/jobs/again", params=V).raise_for_status()
    until(lambda: host.store.get(job_id(host, "again")) is None, 60, "the job to be deleted")
    until(lambda: (host.engine.status(job_instance(old)) or {}).get("runtimeStatus") == "COMPLETED", 60, "the old lifecycle to end")

    http.post(f"{cluster(host)}/pause", params=V).raise_for_status()
    submit(host, "again")
    new = host.store.get(job_id(host, "again"))
    view = activities_jobs.observe_job(host.services, lifecycle_input(old))
    assert view["state"] == "gone"  # the old lifecycle, had it lived, would see no job of its own
    assert activities_jobs.observe_job(host.services, lifecycle_input(new))["state"] == "queued"
