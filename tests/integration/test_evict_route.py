"""`POST .../clusters/{c}/nodes/{n}/evict` on simulated nodes: the node goes, the controller drops it and
starts another; where the compute cannot evict (`Unsupported`), a 409 in ARM's error format. In process:
simulated nodes, real controller, engine and SQLite store."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from batchai.ports import Unsupported
from tests.support.paused_host import simulated_host
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(60)
SUB, RG, WS = "00000000-0000-0000-0000-000000000000", "rg", "ws"
V = {"api-version": "2018-05-01"}
BASE = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.BatchAI/workspaces/{WS}"
CLUSTER = f"{BASE}/clusters/spot"


@pytest.fixture
def host(tmp_path):
    with simulated_host(tmp_path) as host:
        yield host


def spot_cluster(host) -> TestClient:
    http = TestClient(host.app, headers={"Authorization": f"Bearer {host.token}"})
    http.put(BASE, params=V, json={"location": "local"}).raise_for_status()
    http.put(
        CLUSTER,
        params=V,
        json={
            "properties": {
                "vmSize": "STANDARD_D1",
                "vmPriority": "lowpriority",
                "userAccountSettings": {"adminUserName": "u"},
                "scaleSettings": {"manual": {"targetNodeCount": 1}},
            }
        },
    ).raise_for_status()
    until(lambda: http.get(CLUSTER, params=V).json()["properties"]["nodeStateCounts"]["idleNodeCount"] == 1, 30, "one idle node")
    return http


def test_an_evicted_simulated_node_is_dropped_and_replaced(host):
    http = spot_cluster(host)
    [before] = host.store.nodes(CLUSTER)
    answer = http.post(f"{CLUSTER}/nodes/{before.name}/evict", params=V)
    assert answer.status_code == 202 and answer.json() == {"node": before.name, "evicted": True}
    until(lambda: any(n.state == "idle" and n.id != before.id for n in host.store.nodes(CLUSTER)), 30, "another node to be idle")
    assert host.store.get_node(before.id) is None and not host.compute.is_alive(before.handle())


def test_a_compute_that_cannot_evict_answers_409(host, monkeypatch):
    http = spot_cluster(host)
    [node] = host.store.nodes(CLUSTER)

    def cannot(handle):
        raise Unsupported("these machines have no low priority")

    monkeypatch.setattr(host.compute, "evict", cannot)
    answer = http.post(f"{CLUSTER}/nodes/{node.name}/evict", params=V)
    assert answer.status_code == 409
    error = answer.json()["error"]
    assert error["code"] == "Conflict" and "these machines have no low priority" in error["message"] and error["target"] == "node"
    assert host.compute.is_alive(node.handle())
