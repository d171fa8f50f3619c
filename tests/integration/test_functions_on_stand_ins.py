"""The Functions app's composition root on the Azure stand-ins, driven through its own triggers.

With the Cosmos and blob app settings pointing at cosmosdb-server and Azurite, the app keeps its
resources in Cosmos DB, and a job file dropped as a blob (uploaded with the storage SDK, as a user
would) fires the `job_drops` trigger's code: the job is stored in Cosmos, its cluster's controller is
asked for a pass through the durable client the trigger was given, and the drop moves to `processed/`. The durable
engine is the app's own, its client calling a stand-in of the Durable extension's HTTP API.
"""

from __future__ import annotations

import importlib
import json
import os
import uuid
from pathlib import Path

import azure.functions as func
import pytest
from azure.storage.blob import BlobServiceClient

from batchai.adapters.azure_blob_store import AzureBlobStore
from batchai.adapters.cosmos_store import CosmosStore
from batchai.adapters.durable_functions_flow import DurableFunctionsEngine
from batchai.lifecycle import controller_instance
from batchai.wake import wake_flag
from tests.support.cosmos_server import KEY, cosmos_server
from tests.support.durable_extension import durable_extension
from tests.support.function_app import FunctionsHost

pytestmark = pytest.mark.timeout(120)
SUB, RG, EXP = "00000000-0000-0000-0000-000000000000", "default", "fexp"
RECIPE = Path(__file__).resolve().parents[1] / "fixtures" / "recipes" / "TensorFlow-GPU-Distributed" / "job.json"


@pytest.fixture(scope="module")
def stand_ins(azurite_connection):
    with cosmos_server() as cosmos:
        yield azurite_connection, cosmos


@pytest.fixture
def app(stand_ins, tmp_path, monkeypatch, worker_loop):
    storage, cosmos = stand_ins
    unique = uuid.uuid4().hex[:12]
    settings = {
        "BATCHAI_DATA_DIR": str(tmp_path),
        "BATCHAI_TOKEN": "t",
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
    monkeypatch.setattr(module, "engine", DurableFunctionsEngine())
    with durable_extension() as extension:
        host = FunctionsHost(module, extension, worker_loop)
        host.clear_caches()
        yield host
        host.clear_caches()


def test_a_blob_dropped_into_the_container_becomes_a_job_in_cosmos(app, stand_ins, unique_name):
    ws = unique_name("f")
    base = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.BatchAI/workspaces/{ws}"
    svc = app.module.services()
    assert isinstance(svc.store, CosmosStore) and isinstance(svc.blobs, AzureBlobStore)
    cluster_body = {
        "properties": {
            "vmSize": "STANDARD_NC6",
            "userAccountSettings": {"adminUserName": "u", "adminUserPassword": "p"},
            "scaleSettings": {"manual": {"targetNodeCount": 2}},
        }
    }
    for path, body in ((base, {"location": "westeurope"}), (f"{base}/clusters/c", cluster_body), (f"{base}/experiments/{EXP}", None)):
        status, answer = app.http("PUT", path, body)
        assert status == 200, answer

    container = BlobServiceClient.from_connection_string(stand_ins[0]).get_container_client(os.environ["BATCHAI_DROP_CONTAINER"])
    container.create_container()  # the deployment creates it (infra/main.bicep)
    drops = {
        f"inbox/{ws}/{EXP}/tf.params.json": json.dumps({"cluster": "c", "placeholders": {"AZURE_BATCHAI_STORAGE_ACCOUNT": "acct"}}),
        f"inbox/{ws}/{EXP}/tf.json": RECIPE.read_text(),
        f"inbox/{ws}/{EXP}/broken.json": '{"properties": {}}',
    }
    for name, content in drops.items():
        container.upload_blob(name, content)
        app.trigger("job_drops", func.blob.InputStream(data=content.encode(), name=f"{container.container_name}/{name}"))

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
    cluster = svc.store.get(job.properties["cluster"]["id"])
    assert app.extension.starts == [("cluster_controller", controller_instance(cluster))]
    assert app.extension.events == [(controller_instance(cluster), "wake")]
    assert not svc.store.set_flag(wake_flag(cluster))  # still up: no pass has run since
    rejected = json.loads(container.download_blob(f"inbox/{ws}/{EXP}/broken.status.json").readall())
    assert rejected["status"] == "rejected" and rejected["error"]["target"]

    # the trigger fires again for the status files it wrote, and for a drop already taken: nothing more happens
    app.trigger("job_drops", func.blob.InputStream(data=b"{}", name=f"{container.container_name}/inbox/{ws}/{EXP}/tf.status.json"))
    app.trigger("job_drops", func.blob.InputStream(data=b"{}", name=f"{container.container_name}/inbox/{ws}/{EXP}/tf.json"))
    status, listed = app.http("GET", f"{base}/experiments/{EXP}/jobs")
    assert [j["name"] for j in listed["value"]] == ["tf"]
