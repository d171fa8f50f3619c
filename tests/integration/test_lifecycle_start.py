"""A launched job's lifecycle starts `lifecycle_start_delay_seconds` after its launch, and only if the
job still runs then: a job that ends sooner costs the engine nothing; one that runs on is watched."""

from __future__ import annotations

import pytest

from batchai.lifecycle import job_instance
from tests.integration.test_stale_claims import V, cluster, job_id, paused_cluster, submit
from tests.support.paused_host import simulated_host
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def host(tmp_path, unique_name):
    with simulated_host(tmp_path, lifecycle_start_delay_seconds=10.0) as host:  # the short job ends well within it
        host.workspace = unique_name("lifecycle")
        yield host


def test_a_job_that_ends_before_its_lifecycle_would_start_costs_the_engine_nothing(host):
    http = paused_cluster(host)
    submit(host, "short", node_count=1, command="sleep 0.01")
    submit(host, "long", node_count=1, command="sleep 60")
    http.post(f"{cluster(host)}/resume", params=V).raise_for_status()  # one pass launches both

    short, long = job_id(host, "short"), job_id(host, "long")
    until(lambda: host.store.get(short).properties["executionState"] == "succeeded", 30, "the short job to succeed")
    until(lambda: host.engine.status(job_instance(host.store.get(long))) is not None, 30, "the long job's lifecycle to start")
    # the short job's start was due first and was looked at first (one thread, in order): it had ended
    assert host.engine.status(job_instance(host.store.get(short))) is None
    assert host.store.get(long).properties["executionState"] == "running"
    # a job given a lifecycle is marked so, and its end (here a terminate) ends the lifecycle too
    assert host.store.get(long).internal["watched"] and not host.store.get(short).internal.get("watched")
    http.post(f"{long}/terminate", params=V).raise_for_status()
    until(lambda: host.store.get(long).properties["executionState"] == "failed", 60, "the long job to end")
    instance = job_instance(host.store.get(long))
    until(lambda: host.engine.status(instance)["runtimeStatus"] == "COMPLETED", 30, "its lifecycle to end")
