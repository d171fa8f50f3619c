"""A control plane away for longer than the node timeout, while its nodes run jobs: on its return nothing is
declared dead. In process: simulated nodes (which outlive the control plane here, as VMs do), the real
controller, engine and SQLite store; the second host reads the first one's data dir, as a restart does."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from activities.clusters import control_cluster
from batchai.adapters.simulated_compute import SimulatedCompute
from batchai.services import Settings
from function_app.embedded import EmbeddedHost
from tests.support.paused_host import V, simulated_job, workspace_path
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(90)
NODE_TIMEOUT = 5.0  # the nodes reach the restarted host within it, on a loaded machine too


class Down(ConnectionError):
    """What a node's call meets while the control plane is away."""


def start(data_dir, compute) -> EmbeddedHost:
    host = EmbeddedHost(
        data_dir, settings=Settings(data_dir=data_dir, node_timeout_seconds=NODE_TIMEOUT, heartbeat_seconds=0.2), compute=compute
    )
    host.build()
    host.engine.start()
    return host


def stop(host: EmbeddedHost) -> None:
    """As a crash: the engine and the API go, the machines (here: the simulated nodes) stay."""
    host.consumer.stop()
    host.inbox.stop()
    host.deferred.stop()
    host.engine.stop()


def test_a_restart_longer_than_the_node_timeout_fails_no_job_and_deletes_no_node(tmp_path, unique_name):
    current: dict = {}

    def control_plane():
        if "services" not in current:
            raise Down("the control plane is down")
        return current["services"]

    compute = SimulatedCompute(control_plane, heartbeat_seconds=0.2)
    first = start(tmp_path, compute)
    current["services"] = first.services
    try:
        ws = workspace_path(unique_name("ws"))
        exp = f"{ws}/experiments/e"
        http = TestClient(first.app, headers={"Authorization": f"Bearer {first.token}"})
        http.put(ws, params=V, json={"location": "local"}).raise_for_status()
        cluster = f"{ws}/clusters/c"
        http.put(
            cluster,
            params=V,
            json={
                "properties": {
                    "vmSize": "STANDARD_D1",
                    "userAccountSettings": {"adminUserName": "u"},
                    "scaleSettings": {"manual": {"targetNodeCount": 2}},
                }
            },
        ).raise_for_status()
        http.put(exp, params=V).raise_for_status()
        for name in ("j1", "j2"):
            http.put(f"{exp}/jobs/{name}", params=V, json=simulated_job(cluster, "sleep 600")).raise_for_status()
        store = first.store
        jobs = until(lambda: (js := store.jobs(states=["running"])) and len(js) == 2 and js, 30, "both jobs to run, one on each node")
        before = {n.id: n.name for n in store.nodes()}
        attempts = {j.id: j.internal["attempt"] for j in jobs}
        assert len(before) == 2

        # the control plane goes away; the nodes keep running their jobs and their calls fail
        current.clear()
        stop(first)
        until(
            lambda: all(time.time() - n.last_seen > NODE_TIMEOUT * 1.5 for n in store.nodes()),
            30,
            "every node to be silent for longer than the node timeout",
        )

        # it comes back on the same data dir: the first pass runs before any node has called again
        second = start(tmp_path, compute)
        try:
            second.reconcile()
            cluster_id = store.get(cluster).id
            assert control_cluster(second.services, {"clusterId": cluster_id})["lost"] == []
            current["services"] = second.services  # the nodes reach it again
            restarted = time.time()
            until(lambda: all(n.last_seen >= restarted for n in second.store.nodes()), 30, "every node to heartbeat the new host")
            control_cluster(second.services, {"clusterId": cluster_id})

            nodes = second.store.nodes()
            assert {n.id: n.name for n in nodes} == before  # no node deleted or replaced
            assert all(n.state == "running" and n.error is None for n in nodes)
            after = {j: second.store.get(j) for j in attempts}
            assert {j: r.properties["executionState"] for j, r in after.items()} == {j: "running" for j in attempts}
            assert {j: r.internal["attempt"] for j, r in after.items()} == attempts  # not requeued either
            assert not [e for r in after.values() for e in r.properties.get("events") or [] if "lost" in str(e).lower()]
        finally:
            stop(second)
    finally:
        compute.close()
