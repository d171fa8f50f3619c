"""Adapters chosen from the environment: embedded by default, Azure where its settings are all given."""

from __future__ import annotations

import pytest

from batchai.adapters.durabletask_engine import DurableTaskEngine, DurableTaskSchedulerEngine
from batchai.adapters.from_env import azure_compute, blob_store, drop_store, durable_engine, resource_store, submission_queue
from batchai.adapters.fs_blob_store import FsBlobStore
from batchai.adapters.servicebus_queue import ServiceBusSubmissionQueue
from batchai.adapters.sqlite_queue import SqliteSubmissionQueue
from batchai.adapters.sqlite_store import SqliteStore
from batchai.adapters.vmss_compute import VmssCompute
from batchai.node_identity import node_credential, node_key
from batchai.ports import Record
from batchai.services import Settings
from function_app.embedded import EmbeddedHost
from tests.support.fake_servicebus import CONNECTION

VMSS = {
    "BATCHAI_VMSS_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001",
    "BATCHAI_VMSS_RESOURCE_GROUP": "nodes",
    "BATCHAI_VMSS_LOCATION": "westeurope",
    "BATCHAI_AGENT_PACKAGE": "batchai-serverless==0.1.0",
}


def test_nothing_configured_means_the_embedded_adapters(tmp_path):
    assert isinstance(resource_store(tmp_path, {}), SqliteStore)
    assert blob_store({}) is None
    drops = drop_store(tmp_path, {})
    assert isinstance(drops, FsBlobStore) and drops.root == (tmp_path / "drops").resolve()
    assert azure_compute(SqliteStore(tmp_path / "s.db"), tmp_path, 1.0, {}) is None
    assert isinstance(submission_queue(tmp_path, {}), SqliteSubmissionQueue) and (tmp_path / "queue.db").exists()


def test_a_service_bus_connection_means_its_topic_for_the_queue(tmp_path):
    queue = submission_queue(tmp_path, {"BATCHAI_SERVICEBUS": CONNECTION, "BATCHAI_SERVICEBUS_TOPIC": "jobs"})
    assert isinstance(queue, ServiceBusSubmissionQueue) and queue.topic == "jobs"
    assert queue.client.fully_qualified_namespace == "127.0.0.1"  # built from the string, nothing contacted
    queue.close()
    assert submission_queue(tmp_path, {"BATCHAI_SERVICEBUS": CONNECTION}).topic == "submissions"


@pytest.mark.parametrize(
    "environ, missing",
    [
        ({"BATCHAI_COSMOS_KEY": "k"}, "BATCHAI_COSMOS_ENDPOINT"),
    ],
)
def test_half_a_cosmos_setting_is_an_error_naming_the_other_half(tmp_path, environ, missing):
    with pytest.raises(ValueError, match=missing):
        resource_store(tmp_path, environ)


def test_without_keys_the_adapters_reach_azure_with_the_managed_identity(tmp_path, monkeypatch):
    """What infra/main.bicep sets: endpoints only. Nothing is contacted here (the clients connect lazily;
    Cosmos's connect is stubbed, its client reads the account at once)."""
    from azure.identity import DefaultAzureCredential

    from batchai.adapters.azure_blob_store import AzureBlobStore
    from batchai.adapters.cosmos_store import CosmosStore

    seen = {}
    monkeypatch.setattr(CosmosStore, "connect_with", classmethod(lambda cls, *a, **k: seen.setdefault("cosmos", (a, k)) and "cosmos"))
    endpoint = "https://acct.documents.azure.com:443/"
    assert resource_store(tmp_path, {"BATCHAI_COSMOS_ENDPOINT": endpoint, "BATCHAI_COSMOS_DATABASE": "db"}) == "cosmos"
    (where, credential, database), _ = seen["cosmos"]
    assert where == endpoint and isinstance(credential, DefaultAzureCredential) and database == "db"

    blobs = blob_store(
        {"BATCHAI_BLOB_CONNECTION_STRING__blobServiceUri": "https://acct.blob.core.windows.net", "BATCHAI_BLOB_CONTAINER": "out"}
    )
    assert isinstance(blobs, AzureBlobStore) and blobs.account == "acct" and blobs.container.container_name == "out"
    assert isinstance(blobs.container.credential, DefaultAzureCredential)

    queue = submission_queue(tmp_path, {"BATCHAI_SERVICEBUS__fullyQualifiedNamespace": "ns.servicebus.windows.net"})
    assert isinstance(queue, ServiceBusSubmissionQueue) and queue.client.fully_qualified_namespace == "ns.servicebus.windows.net"
    queue.close()


def test_a_container_without_a_storage_account_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="BATCHAI_BLOB_CONNECTION_STRING"):
        blob_store({"BATCHAI_BLOB_CONTAINER": "logs"})
    with pytest.raises(ValueError, match="BATCHAI_BLOB_CONNECTION_STRING"):
        drop_store(tmp_path, {"BATCHAI_DROP_CONTAINER": "drops"})
    assert blob_store({"BATCHAI_BLOB_CONNECTION_STRING": "AccountName=a;AccountKey=a2V5"}) is None  # no container named


def test_part_of_the_scale_set_settings_is_an_error_naming_what_is_missing(tmp_path):
    partial = {k: v for k, v in VMSS.items() if k != "BATCHAI_VMSS_LOCATION"}
    with pytest.raises(ValueError, match="BATCHAI_VMSS_LOCATION"):
        azure_compute(SqliteStore(tmp_path / "s.db"), tmp_path, 1.0, partial)


def test_scale_set_settings_mean_vmss_compute_reaching_back_to_the_function_app(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    compute = azure_compute(store, tmp_path, 2.5, {**VMSS, "WEBSITE_HOSTNAME": "batchai.azurewebsites.net"})
    assert isinstance(compute, VmssCompute)
    assert compute.control_plane_url == "https://batchai.azurewebsites.net"
    assert compute.node_credential("n-1") == node_credential(node_key(store), "n-1")  # each node its own
    assert (compute.resource_group, compute.location, compute.heartbeat) == ("nodes", "westeurope", 2.5)
    assert compute.state_file == tmp_path / "vmss-nodes.json"
    cluster = "/subscriptions/s/resourceGroups/g/providers/Microsoft.BatchAI/workspaces/w/clusters/c"
    store.create(
        Record(
            id=cluster,
            type="clusters",
            name="c",
            parent=cluster.rsplit("/clusters/", 1)[0],
            body={"properties": {"vmSize": "STANDARD_NC6"}},
        )
    )
    assert compute.cluster_properties(cluster) == {"vmSize": "STANDARD_NC6"}
    assert compute.cluster_properties(cluster + "x") is None


def test_scale_sets_need_a_url_the_vms_can_reach(tmp_path):
    with pytest.raises(ValueError, match="BATCHAI_PUBLIC_URL"):
        azure_compute(SqliteStore(tmp_path / "s.db"), tmp_path, 1.0, VMSS)


def test_the_embedded_host_takes_its_queue_from_the_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHAI_SERVICEBUS", CONNECTION)
    host = EmbeddedHost(tmp_path, settings=Settings(data_dir=tmp_path), simulated_nodes={})
    host.build()
    try:
        assert isinstance(host.queue, ServiceBusSubmissionQueue) and host.consumer.queue is host.queue
    finally:
        host.queue.close()
        host.compute.close()


def test_a_durable_task_scheduler_means_the_managed_engine(tmp_path, monkeypatch):
    engine = durable_engine({})
    assert type(engine) is DurableTaskEngine
    emulator = durable_engine({"BATCHAI_DTS_ENDPOINT": "http://127.0.0.1:8080", "BATCHAI_DTS_TASKHUB": "default"})
    assert isinstance(emulator, DurableTaskSchedulerEngine) and emulator._credential is None  # the emulator takes no token
    managed = durable_engine({"BATCHAI_DTS_ENDPOINT": "https://s.westeurope.durabletask.io", "BATCHAI_DTS_TASKHUB": "hub"})
    assert managed._credential is not None and managed._taskhub == "hub"
    with pytest.raises(ValueError, match="BATCHAI_DTS_TASKHUB"):
        durable_engine({"BATCHAI_DTS_ENDPOINT": "https://s.westeurope.durabletask.io"})
    monkeypatch.setenv("BATCHAI_DTS_ENDPOINT", "http://127.0.0.1:8080")
    monkeypatch.setenv("BATCHAI_DTS_TASKHUB", "default")
    host = EmbeddedHost(tmp_path, settings=Settings(data_dir=tmp_path), simulated_nodes={})
    host.build()
    try:
        assert isinstance(host.engine, DurableTaskSchedulerEngine) and host.services.engine is host.engine
    finally:
        host.queue.close()
        host.compute.close()


def test_download_urls_without_an_account_key_are_signed_with_a_user_delegation_key():
    """The keyless blob store asks the service for a user delegation key once (with its token) and signs
    each download URL with it: the SAS carries the key's object id (skoid), no account key is involved."""
    from urllib.parse import parse_qs, urlsplit

    from azure.core.pipeline.transport import HttpTransport
    from azure.core.rest._http_response_impl import HttpResponseImpl
    from azure.core.utils import case_insensitive_dict

    from batchai.adapters.azure_blob_store import AzureBlobStore
    from tests.support.fake_arm import FakeCredential, _Internal

    key = (
        "<?xml version='1.0' encoding='utf-8'?><UserDelegationKey><SignedOid>oid-1</SignedOid><SignedTid>tid-1</SignedTid>"
        "<SignedStart>2026-01-01T00:00:00Z</SignedStart><SignedExpiry>2099-01-01T00:00:00Z</SignedExpiry>"
        "<SignedService>b</SignedService><SignedVersion>2025-01-05</SignedVersion><Value>c2VjcmV0</Value></UserDelegationKey>"
    )

    class Blob(HttpTransport):
        requests: list = []

        def open(self): ...
        def close(self): ...
        def __enter__(self):
            return self

        def __exit__(self, *a): ...

        def send(self, request, **kwargs):
            self.requests.append(request)
            response = HttpResponseImpl(
                request=request,
                internal_response=_Internal(),
                status_code=200,
                reason="OK",
                content_type="application/xml",
                headers=case_insensitive_dict({"Content-Type": "application/xml"}),
                stream_download_generator=None,
            )
            response._content = key.encode()
            return response

    transport = Blob()
    store = AzureBlobStore.with_credential("https://acct.blob.core.windows.net", "out", FakeCredential(), transport=transport)
    from datetime import timedelta

    urls = [store.download_url(f"a/{i}.txt", timedelta(minutes=10)) for i in range(2)]
    assert len(transport.requests) == 1 and "comp=userdelegationkey" in transport.requests[0].url  # one key, two URLs
    assert transport.requests[0].headers["Authorization"] == "Bearer fake-token"
    query = parse_qs(urlsplit(urls[0]).query)
    assert urls[0].startswith("https://acct.blob.core.windows.net/out/a/0.txt?")
    assert query["skoid"] == ["oid-1"] and query["sp"] == ["r"] and "sig" in query
