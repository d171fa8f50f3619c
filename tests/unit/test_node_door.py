"""The node side door (batchai/api/nodes.py) over HTTP: each node's own credential, and malformed
requests answered 4xx in the ARM error shape, never a 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from batchai.api.nodes import PeerWakes
from batchai.node_identity import node_credential, node_key
from function_app.embedded import EmbeddedHost
from tests.support.waiting import until


@pytest.fixture
def door(tmp_path):
    host = EmbeddedHost(tmp_path, simulated_nodes={"heartbeat_seconds": 5.0})
    host.build()
    yield TestClient(host.app), {"Authorization": f"Bearer {node_credential(node_key(host.store), 'n')}"}
    host.compute.close()


def test_a_node_of_no_cluster_is_refused(door):
    http, auth = door
    for action in ("register", "heartbeat", "files"):
        answer = http.post(f"/internal/v1/nodes/n/{action}", headers=auth, json={"bootId": "b", "running": ["t1"]})
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "AuthorizationFailed"


def test_the_node_credential_is_required(door):
    http, _ = door
    answer = http.post("/internal/v1/nodes/n/heartbeat", json={})
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "AuthenticationFailed"
    for headers in ({"Authorization": "Bearer wrong"}, {"Authorization": "Bearer \u00e9t\u00e9".encode()}):
        answer = http.post("/internal/v1/nodes/n/heartbeat", headers=headers, json={})
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "AuthorizationFailed"


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"a string"', b""])
def test_malformed_requests_are_400(door, body):
    http, auth = door
    answer = http.post("/internal/v1/nodes/n/register", headers={**auth, "content-type": "application/json"}, content=body)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "InvalidRequestContent"


def test_unknown_operations_are_404(door):
    http, auth = door
    assert http.post("/internal/v1/nodes/n/reboot", headers=auth, json={}).status_code == 404
    assert http.get("/internal/v1/nodes/n/heartbeat", headers=auth).status_code == 404


def test_an_agent_restarted_during_its_node_setup_registers_again(tmp_path):
    """Its setup task (whose "job" is the cluster) is void; the new boot runs setup again."""
    from batchai import node_protocol
    from batchai.lifecycle import NODE_LOST
    from batchai.ports import NodeRecord, Record, TaskRecord

    host = EmbeddedHost(tmp_path, simulated_nodes={"heartbeat_seconds": 5.0})
    host.build()
    host.engine.start()
    try:
        cluster = "/subscriptions/s/resourcegroups/r/providers/microsoft.batchai/workspaces/w/clusters/c"
        host.store.create(Record(id=cluster, type="clusters", name="c", parent="/w", body={"properties": {}}, internal={"uuid": "u"}))
        host.store.put_node(NodeRecord("n1", cluster, "node-0", "preparing", boot_id="old"))
        host.store.put_tasks([TaskRecord("setup-n1", cluster, "n1", 0, {}, state="running", boot_id="old")])
        assert node_protocol.register(host.services, "n1", {"bootId": "new"}) == {"heartbeatSeconds": host.settings.heartbeat_seconds}
        task = host.store.get_task("setup-n1")
        assert (task.state, task.error) == ("finished", NODE_LOST)
        assert host.store.get_node("n1").boot_id == "new"
    finally:
        host.engine.stop()
        host.compute.close()


class Recorder:
    """A NodeWaker's `wake`, recorded."""

    def __init__(self):
        self.woken: list[str] = []

    def wake(self, node_ids):
        self.woken += node_ids


def test_peer_wakes_reach_the_other_processes_and_forget_a_dead_one(tmp_path):
    here, there = Recorder(), Recorder()
    a, b = PeerWakes(tmp_path, here, name="a"), PeerWakes(tmp_path, there, name="b")
    a.start()
    b.start()
    (tmp_path / "gone.sock").touch()  # a process killed -9 leaves its socket's name behind
    try:
        many = [f"node-{i:05d}" for i in range(5000)]  # more than one datagram holds
        a.wake(["n1", *many])
        until(lambda: len(there.woken) == 5001, 10, "the other process to be woken")
        assert here.woken == ["n1", *many] and there.woken == ["n1", *many]
        assert not (tmp_path / "gone.sock").exists()
    finally:
        a.close()
        b.close()
    assert list(tmp_path.iterdir()) == []
