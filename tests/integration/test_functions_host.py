"""The Functions app driven as the host drives it, against a stand-in of the Durable extension's HTTP API.

Every trigger runs on one worker event loop (as in the Python worker) and gets its durable client
binding as the host passes it (JSON naming the extension's `rpcBaseUrl`); the real
`DurableOrchestrationClient` and the app's `DurableFunctionsEngine` call the stand-in over loopback
HTTP. The HTTP trigger goes through the real `AsgiMiddleware`. Resources are in SQLite.
"""

from __future__ import annotations

import importlib
import json

import azure.functions as func
import pytest
from azure.functions.servicebus import ServiceBusMessage

from batchai.adapters.durable_functions_flow import DurableFunctionsEngine
from batchai.lifecycle import controller_instance, job_instance
from batchai.wake import wake_flag
from tests.support.durable_extension import durable_extension
from tests.support.function_app import FunctionsHost

pytestmark = pytest.mark.timeout(120)
SUB, RG, WS, EXP = "00000000-0000-0000-0000-000000000000", "default", "fws", "fexp"
BASE = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.BatchAI/workspaces/{WS}"
CLUSTER = {
    "properties": {
        "vmSize": "STANDARD_D1",
        "userAccountSettings": {"adminUserName": "u", "adminUserPassword": "p"},
        "scaleSettings": {"manual": {"targetNodeCount": 1}},
    }
}
JOB = {
    "properties": {
        "cluster": {"id": f"{BASE}/clusters/c"},
        "nodeCount": 1,
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        "customToolkitSettings": {"commandLine": "true"},
    }
}
ATTACHED = {
    "properties": {
        "vmSize": "STANDARD_D1",
        "userAccountSettings": {"adminUserName": "u", "adminUserPassword": "p"},
        "scaleSettings": {"manual": {"targetNodeCount": 0}},
        "attached": True,
    }
}
NODES = "/internal/v1/nodes"
APP_SETTINGS = (
    "BATCHAI_COSMOS_ENDPOINT",
    "BATCHAI_COSMOS_KEY",
    "BATCHAI_BLOB_CONTAINER",
    "BATCHAI_DROP_CONTAINER",
    "BATCHAI_VMSS_SUBSCRIPTION_ID",
)


@pytest.fixture
def host(tmp_path, monkeypatch, worker_loop):
    monkeypatch.setenv("BATCHAI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BATCHAI_TOKEN", "t")
    for name in APP_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    module = importlib.import_module("function_app.function_app")
    monkeypatch.setattr(module, "engine", DurableFunctionsEngine())  # no client left by another test
    with durable_extension() as extension:
        h = FunctionsHost(module, extension, worker_loop)
        h.clear_caches()
        yield h
        h.clear_caches()


def create_workspace_and_cluster(host: FunctionsHost, cluster: dict = CLUSTER) -> None:
    for method, path, body in (("PUT", BASE, {"location": "westeurope"}), ("PUT", f"{BASE}/experiments/{EXP}", None)):
        status, answer = host.http(method, path, body)
        assert 200 <= status < 300, answer
    status, answer = host.http("PUT", f"{BASE}/clusters/c", cluster)
    assert status == 200, answer


def test_the_http_api_creates_a_cluster_and_jobs_through_the_extension(host):
    create_workspace_and_cluster(host)
    svc = host.module.services()
    cluster = svc.store.get(f"{BASE}/clusters/c")
    assert host.extension.starts == [("cluster_controller", controller_instance(cluster))]
    for name in ("j1", "j2", "j3"):
        status, answer = host.http("PUT", f"{BASE}/experiments/{EXP}/jobs/{name}", JOB)
        assert status == 200 and answer["properties"]["executionState"] == "queued", answer
        svc.store.clear_flag(wake_flag(cluster))  # as the controller's pass does: the next job asks for another
    # queued jobs get their lifecycles when the controller launches them: each asked it for a pass
    assert host.extension.events == [(controller_instance(cluster), "wake")] * 3
    assert host.extension.started("job_lifecycle") == []
    status, answer = host.http("GET", f"{BASE}/experiments/{EXP}/jobs")
    assert status == 200 and [j["name"] for j in answer["value"]] == ["j1", "j2", "j3"]
    assert host.module.node_waker().loop is host.loop.loop  # no lifespan here: the trigger gave the waker its loop


def test_jobs_submitted_through_the_http_api_get_their_lifecycles_from_the_controllers_pass(host):
    """Issue 12's acceptance end to end: a job's lifecycle starts when the controller's pass launches it, not at
    submission; machines join an attached cluster through the node door (no compute adapter here)."""
    create_workspace_and_cluster(host, ATTACHED)
    for name in ("j1", "j2", "j3"):
        status, answer = host.http("PUT", f"{BASE}/experiments/{EXP}/jobs/{name}", JOB)
        assert status == 200 and answer["properties"]["executionState"] == "queued", answer
    status, answer = host.http("POST", f"{BASE}/clusters/c/enrollmentToken")
    assert status == 200, answer
    enroll_token, nodes = answer["token"], {}
    for name in ("m1", "m2", "m3"):  # what `batchai node join` sends: enroll, then register with the node's credential
        status, joined = host.http("POST", f"{NODES}/_enroll", {"name": name}, token=enroll_token)
        assert status == 200, joined
        node, credential = joined["nodeId"], joined["credential"]
        status, answer = host.http(
            "POST", f"{NODES}/{node}/register", {"bootId": f"boot-{name}", "root": f"/nodes/{name}"}, token=credential
        )
        assert status == 200, answer
        nodes[node] = credential
    status, answer = host.http("GET", f"{BASE}/clusters/c")
    assert status == 200 and answer["properties"]["nodeStateCounts"]["idleNodeCount"] == 3, answer
    svc = host.module.services()
    cluster = svc.store.get(f"{BASE}/clusters/c")
    assert host.extension.started("job_lifecycle") == []  # queued: the controller owns them

    result = host.trigger("control_cluster", {"clusterId": cluster.id})  # the payload cluster_controller passes

    assert result["state"] == "ok" and result["started"] == 3, result
    jobs = {name: svc.store.get(f"{BASE}/experiments/{EXP}/jobs/{name}") for name in ("j1", "j2", "j3")}
    assert sorted(host.extension.started("job_lifecycle")) == sorted(job_instance(job) for job in jobs.values())
    assert host.extension.started("cluster_controller") == [controller_instance(cluster)]
    assert len(host.extension.starts) == 4
    for name in jobs:
        status, answer = host.http("GET", f"{BASE}/experiments/{EXP}/jobs/{name}")
        assert status == 200 and answer["properties"]["executionState"] == "running", answer
    placed = {}
    for node, credential in nodes.items():  # each machine's next heartbeat carries its job's task
        beat = {"bootId": f"boot-{svc.store.get_node(node).name}", "running": [], "finished": [], "waitSeconds": 0}
        status, answer = host.http("POST", f"{NODES}/{node}/heartbeat", beat, token=credential)
        assert status == 200 and [task["node_id"] for task in answer["start"]] == [node], answer
        placed[node] = answer["start"][0]["job_id"]
    assert sorted(placed.values()) == sorted(job.id for job in jobs.values())  # one job per machine


def test_the_http_api_checks_roles_and_audits_as_batchai_serve_does(host):
    create_workspace_and_cluster(host)
    status, made = host.http("POST", "/providers/Microsoft.BatchAI/tokens", {"role": "Reader", "scope": BASE})
    assert status == 201, made
    assert host.http("GET", BASE, token=made["token"])[0] == 200
    status, denied = host.http("PUT", f"{BASE}/experiments/other", token=made["token"])
    assert status == 403 and denied["error"]["code"] == "AuthorizationFailed"
    assert host.http("GET", BASE, token="wrong")[0] == 401
    status, log = host.http("GET", "/providers/Microsoft.BatchAI/auditLog")
    actions = [(e["action"], e["result"]) for e in log["value"]]
    assert ("Microsoft.BatchAI/workspaces/clusters/write", 200) in actions and ("authenticate", 401) in actions
    assert ("Microsoft.BatchAI/workspaces/experiments/write", 403) in actions


def test_the_http_trigger_serves_the_dashboard_and_a_stream_answers_one_snapshot(host, monkeypatch):
    """The trigger buffers whole responses: behind it a stream ends after its first events (the page reconnects)."""
    monkeypatch.setenv("FUNCTIONS_WORKER_RUNTIME", "python")
    page = host.request("GET", "/dashboard/")
    assert page.status_code == 200 and b'src="/dashboard/app.js"' in page.get_body()
    assert host.request("GET", "/dashboard/app.js").status_code == 200
    create_workspace_and_cluster(host)
    stream = host.request("GET", f"{BASE}/clusters/c/stream")
    assert stream.status_code == 200 and stream.mimetype.startswith("text/event-stream")
    events = [line for line in stream.get_body().decode().splitlines() if line.startswith("event:")]
    assert events == ["event: cluster"]


def test_the_service_bus_and_blob_triggers_submit_through_their_durable_clients(host, tmp_path):
    create_workspace_and_cluster(host)
    svc = host.module.services()
    cluster = svc.store.get(f"{BASE}/clusters/c")
    message = {"workspace": WS, "experiment": EXP, "jobName": "from-queue", "cluster": "c", "job": JOB}
    host.trigger(
        "submissions_high",
        ServiceBusMessage(
            body=json.dumps(message).encode(), message_id="m1", delivery_count=1, application_properties={}, user_properties={}
        ),
    )
    svc.store.clear_flag(wake_flag(cluster))
    drop = tmp_path / "drops" / "inbox" / WS / EXP / "from-blob.json"
    drop.parent.mkdir(parents=True)
    drop.write_text(json.dumps(JOB))
    host.trigger("job_drops", func.blob.InputStream(data=drop.read_bytes(), name=f"drops/inbox/{WS}/{EXP}/from-blob.json"))
    for name in ("from-queue", "from-blob"):
        job = svc.store.get(f"{BASE}/experiments/{EXP}/jobs/{name}")
        assert job is not None and job.properties["executionState"] == "queued"
    assert host.extension.events == [(controller_instance(cluster), "wake")] * 2
    assert host.extension.started("cluster_controller") == [controller_instance(cluster)]


def test_a_cluster_whose_controller_cannot_start_is_not_kept_and_the_retry_creates_it_once(host):
    for method, path, body in (("PUT", BASE, {"location": "westeurope"}),):
        assert host.http(method, path, body)[0] == 200
    host.extension.refuse_starts = 1
    status, answer = host.http("PUT", f"{BASE}/clusters/c", CLUSTER)
    assert status == 503 and answer["error"]["code"] == "ServiceUnavailable", answer
    assert host.http("GET", f"{BASE}/clusters/c")[0] == 404  # no cluster without its controller
    status, answer = host.http("PUT", f"{BASE}/clusters/c", CLUSTER)  # the client's retry
    assert status == 200, answer
    status, answer = host.http("GET", f"{BASE}/clusters")
    assert [c["name"] for c in answer["value"]] == ["c"]
    cluster = host.module.services().store.get(f"{BASE}/clusters/c")
    assert host.extension.starts == [("cluster_controller", controller_instance(cluster))]


def test_a_job_whose_wake_cannot_be_delivered_is_created_and_the_next_one_asks_again(host):
    create_workspace_and_cluster(host)
    cluster = host.module.services().store.get(f"{BASE}/clusters/c")
    host.extension.refuse_events = 1
    status, answer = host.http("PUT", f"{BASE}/experiments/{EXP}/jobs/j1", JOB)
    assert status == 200, answer  # stored: a retry would be a conflict; the controller's timer passes anyway
    assert host.extension.events == []
    status, answer = host.http("PUT", f"{BASE}/experiments/{EXP}/jobs/j2", JOB)
    assert status == 200, answer
    assert host.extension.events == [(controller_instance(cluster), "wake")]  # the lost hint did not silence the cluster
