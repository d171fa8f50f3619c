"""The Functions app's composition root on the Azure stand-ins, driven through its own triggers.

With the Cosmos and blob app settings pointing at cosmosdb-server and Azurite, the app keeps its
resources in Cosmos DB, and a job file dropped as a blob (uploaded with the storage SDK, as a user
would) fires the `job_drops` trigger's code: the job is stored in Cosmos, its lifecycle is started
through the durable client the trigger was given, and the drop moves to `processed/`. The durable
engine is the one thing not real here: it records what it is asked to start.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import uuid
from pathlib import Path

import azure.functions as func
import pytest
from azure.storage.blob import BlobServiceClient
from fastapi.testclient import TestClient

from batchai.adapters.azure_blob_store import AzureBlobStore
from batchai.adapters.cosmos_store import CosmosStore
from batchai.api.app import create_app
from batchai.wake import wake_flag
from tests.support.cosmos_server import KEY, cosmos_server
from tests.support.function_app import call_client_trigger, registered_functions

pytestmark = pytest.mark.timeout(120)
SUB, RG, EXP = "00000000-0000-0000-0000-000000000000", "default", "fexp"
V = {"api-version": "2018-05-01"}
RECIPE = Path(__file__).resolve().parents[1] / "fixtures" / "recipes" / "TensorFlow-GPU-Distributed" / "job.json"


class RecordingEngine:
    """The Engine port with no orchestrations behind it: remembers what it was asked to start."""

    def __init__(self):
        self.started, self.clients, self.raised = {}, [], []

    def use_client(self, client) -> None:
        self.clients.append(client)

    def schedule(self, name: str, input: dict, instance_id: str) -> bool:
        self.started[instance_id] = (name, input)
        return True

    def raise_event(self, instance_id: str, name: str, data=None) -> bool:
        self.raised.append((instance_id, name))
        return False

    def status(self, instance_id: str) -> dict | None:
        return None


@pytest.fixture(scope="module")
def stand_ins(azurite_connection):
    with cosmos_server() as cosmos:
        yield azurite_connection, cosmos


@pytest.fixture
def app_module(stand_ins, tmp_path, monkeypatch):
    storage, cosmos = stand_ins
    unique = uuid.uuid4().hex[:12]
    settings = {
        "BATCHAI_DATA_DIR": str(tmp_path),
        "BATCHAI_COSMOS_ENDPOINT": cosmos,
        "BATCHAI_COSMOS_KEY": KEY,
        "BATCHAI_COSMOS_DATABASE": f"db-{unique}",
        "BATCHAI_BLOB_CONNECTION_STRING": storage,
        "BATCHAI_BLOB_CONTAINER": f"outputs-{unique}",
        "BATCHAI_DROP_CONTAINER": f"drops-{unique}",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    module = importlib.import_module("function_app.function_app")
    monkeypatch.setattr(module, "engine", RecordingEngine())
    module.services.cache_clear()
    module.drop_box.cache_clear()
    yield module
    module.services.cache_clear()
    module.drop_box.cache_clear()


def trigger(name: str, argument) -> None:
    asyncio.run(call_client_trigger(registered_functions()[name], argument))


def test_a_blob_dropped_into_the_container_becomes_a_job_in_cosmos(app_module, stand_ins, unique_name):
    ws = unique_name("f")
    base = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.BatchAI/workspaces/{ws}"
    svc = app_module.services()
    assert isinstance(svc.store, CosmosStore) and isinstance(svc.blobs, AzureBlobStore)
    http = TestClient(create_app(svc, token="t", node_token="n", signing_key=b"k"), headers={"Authorization": "Bearer t"})
    http.put(base, params=V, json={"location": "westeurope"}).raise_for_status()
    http.put(
        f"{base}/clusters/c",
        params=V,
        json={
            "properties": {
                "vmSize": "STANDARD_NC6",
                "userAccountSettings": {"adminUserName": "u", "adminUserPassword": "p"},
                "scaleSettings": {"manual": {"targetNodeCount": 2}},
            }
        },
    ).raise_for_status()
    http.put(f"{base}/experiments/{EXP}", params=V).raise_for_status()

    container = BlobServiceClient.from_connection_string(stand_ins[0]).get_container_client(os.environ["BATCHAI_DROP_CONTAINER"])
    container.create_container()  # the deployment creates it (infra/main.bicep)
    drops = {
        f"inbox/{ws}/{EXP}/tf.params.json": json.dumps({"cluster": "c", "placeholders": {"AZURE_BATCHAI_STORAGE_ACCOUNT": "acct"}}),
        f"inbox/{ws}/{EXP}/tf.json": RECIPE.read_text(),
        f"inbox/{ws}/{EXP}/broken.json": '{"properties": {}}',
    }
    for name, content in drops.items():
        container.upload_blob(name, content)
        trigger("job_drops", func.blob.InputStream(data=content.encode(), name=f"{container.container_name}/{name}"))
    assert [c._orchestration_bindings.task_hub_name for c in app_module.engine.clients] == ["BatchAI"] * 3

    names = {b.name for b in container.list_blobs()}
    assert names == {
        f"inbox/{ws}/{EXP}/tf.status.json",
        f"inbox/{ws}/{EXP}/broken.status.json",
        f"processed/{ws}/{EXP}/tf.json",
        f"processed/{ws}/{EXP}/tf.params.json",
        f"rejected/{ws}/{EXP}/broken.json",
    }
    status = json.loads(container.download_blob(f"inbox/{ws}/{EXP}/tf.status.json").readall())
    assert status["status"] == "accepted"
    job = svc.store.get(status["jobId"])
    assert job is not None and job.properties["executionState"] == "queued" and job.properties["toolType"] == "tensorflow"
    # a queued job has no lifecycle yet (its cluster's controller launches it, then starts one): a pass is asked for
    assert [v for v in app_module.engine.started.values() if v[0] == "job_lifecycle"] == []
    cluster = svc.store.get(job.properties["cluster"]["id"])
    assert (f"controller-{cluster.internal['uuid']}", "wake") in app_module.engine.raised
    assert not svc.store.set_flag(wake_flag(cluster))  # still up: no pass has run since
    rejected = json.loads(container.download_blob(f"inbox/{ws}/{EXP}/broken.status.json").readall())
    assert rejected["status"] == "rejected" and rejected["error"]["target"]

    # the trigger fires again for the status files it wrote, and for a drop already taken: nothing more happens
    trigger("job_drops", func.blob.InputStream(data=b"{}", name=f"{container.container_name}/inbox/{ws}/{EXP}/tf.status.json"))
    trigger("job_drops", func.blob.InputStream(data=b"{}", name=f"{container.container_name}/inbox/{ws}/{EXP}/tf.json"))
    listed = http.get(f"{base}/experiments/{EXP}/jobs", params=V).json()["value"]
    assert [j["name"] for j in listed] == ["tf"]
