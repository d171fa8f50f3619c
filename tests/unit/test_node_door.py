"""The node side door (batchai/api/nodes.py) over HTTP: the node token, and malformed requests
answered 4xx in the ARM error shape, never a 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from function_app.embedded import EmbeddedHost


@pytest.fixture
def door(tmp_path):
    host = EmbeddedHost(tmp_path, simulated_nodes={"heartbeat_seconds": 5.0})
    host.build()
    node_token = host.store.setting("node_token", lambda: "unused")
    yield TestClient(host.app), {"Authorization": f"Bearer {node_token}"}
    host.compute.close()


def test_a_node_of_no_cluster_is_told_to_shut_down(door):
    http, auth = door
    answer = http.post("/internal/v1/nodes/ghost/heartbeat", headers=auth, json={"bootId": "b", "running": ["t1"]})
    assert answer.status_code == 200 and answer.json() == {"start": [], "kill": ["t1"], "ack": [], "action": "shutdown"}


def test_the_node_token_is_required(door):
    http, _ = door
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer \u00e9t\u00e9".encode()}):
        answer = http.post("/internal/v1/nodes/n/heartbeat", headers=headers, json={})
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "AuthenticationFailed"


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"a string"', b""])
def test_malformed_requests_are_400(door, body):
    http, auth = door
    answer = http.post("/internal/v1/nodes/n/register", headers={**auth, "content-type": "application/json"}, content=body)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "InvalidRequestContent"


def test_unknown_operations_are_404(door):
    http, auth = door
    assert http.post("/internal/v1/nodes/n/reboot", headers=auth, json={}).status_code == 404
    assert http.get("/internal/v1/nodes/n/heartbeat", headers=auth).status_code == 404
