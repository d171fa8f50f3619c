"""Which adapter each port gets, chosen from environment variables (app settings on Azure).

Both composition roots ask here, so `batchai serve` and the Functions app make the same choice
from the same settings. Unset means the embedded adapter; a half-given Azure setting is an error
naming the missing variable, never a silent fallback.

Where a key can be left out, the adapter reaches the service with DefaultAzureCredential (the app's
managed identity on Azure, holding data-plane roles): no key is then set anywhere.

- Store: `BATCHAI_COSMOS_ENDPOINT` (+ `BATCHAI_COSMOS_KEY`; without it, the identity, and the database
  and its containers must exist; + `BATCHAI_COSMOS_DATABASE`, default `batchai`) -> Cosmos DB; else
  SQLite at `{data dir}/store.db`.
- Job logs and outputs: `BATCHAI_BLOB_CONTAINER` -> that container of the storage account of
  `BATCHAI_BLOB_CONNECTION_STRING` (with its AccountKey) or of
  `BATCHAI_BLOB_CONNECTION_STRING__blobServiceUri` (the account's blob URL, with the identity: the name
  the Functions host's identity-based connections use); else they stay on the nodes' disks.
- Drop box: `BATCHAI_DROP_CONTAINER` -> that container of the same account; else the directory
  `{data dir}/drops`.
- Submission queue: `BATCHAI_SERVICEBUS` (a connection string) or
  `BATCHAI_SERVICEBUS__fullyQualifiedNamespace` (the identity) (`BATCHAI_SERVICEBUS_TOPIC`, default
  `submissions`) -> the Service Bus topic the Functions app's triggers read; else
  `{data dir}/queue.db`. The Functions app itself reads Service Bus through its triggers.
- Durable engine: `BATCHAI_DTS_ENDPOINT` + `BATCHAI_DTS_TASKHUB` -> Azure's Durable Task Scheduler
  (the control plane as a container; an `https://` endpoint with the managed identity, an
  `http://` one, the local emulator, without a token); else durabletask's in-memory engine. The
  Functions app's engine is always Durable Functions.
- Compute on Azure: `BATCHAI_VMSS_SUBSCRIPTION_ID` + `BATCHAI_VMSS_RESOURCE_GROUP` +
  `BATCHAI_VMSS_LOCATION` + `BATCHAI_AGENT_PACKAGE` (what `pip install` gets on the VMs), optional
  `BATCHAI_VMSS_SUBNET_ID`, and the URL the VMs reach the control plane at, `BATCHAI_PUBLIC_URL`
  (default `https://$WEBSITE_HOSTNAME`) -> VM scale sets with the app's managed identity
  (DefaultAzureCredential), and file servers as NFS server VMs beside them; else None, and the
  composition root picks its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from batchai.adapters.azure_blob_store import AzureBlobStore
from batchai.adapters.durabletask_engine import DurableTaskEngine, DurableTaskSchedulerEngine
from batchai.adapters.fs_blob_store import FsBlobStore
from batchai.mounting import file_server_address
from batchai.node_identity import node_credentials
from batchai.ports import BlobStore, Store, SubmissionQueue

BLOB_ACCOUNT_URL = "BATCHAI_BLOB_CONNECTION_STRING__blobServiceUri"
SERVICEBUS_NAMESPACE = "BATCHAI_SERVICEBUS__fullyQualifiedNamespace"
VMSS_REQUIRED = ("BATCHAI_VMSS_SUBSCRIPTION_ID", "BATCHAI_VMSS_RESOURCE_GROUP", "BATCHAI_VMSS_LOCATION", "BATCHAI_AGENT_PACKAGE")


def _all_or_none(environ: Mapping[str, str], names: tuple[str, ...]) -> bool:
    """True when every variable is set, False when none is; ValueError naming the missing ones otherwise."""
    missing = [n for n in names if not environ.get(n)]
    if len(missing) == len(names):
        return False
    if missing:
        raise ValueError(f"set {', '.join(missing)} too ({' + '.join(names)} go together), or none of them")
    return True


def _identity():
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def resource_store(data_dir: Path, environ: Mapping[str, str] = os.environ) -> Store:
    endpoint, key = environ.get("BATCHAI_COSMOS_ENDPOINT"), environ.get("BATCHAI_COSMOS_KEY")
    if not endpoint:
        if key:
            raise ValueError("BATCHAI_COSMOS_KEY needs BATCHAI_COSMOS_ENDPOINT too (or set neither)")
        from batchai.adapters.sqlite_store import SqliteStore

        return SqliteStore(Path(data_dir) / "store.db")
    from batchai.adapters.cosmos_store import CosmosStore

    # an http endpoint is an emulator with one region: asking it for others fails
    options = {"enable_endpoint_discovery": False} if endpoint.startswith("http://") else {}
    database = environ.get("BATCHAI_COSMOS_DATABASE") or "batchai"
    if key:
        return CosmosStore.connect(endpoint, key, database, **options)
    return CosmosStore.connect_with(endpoint, _identity(), database, **options)


def blob_store(environ: Mapping[str, str] = os.environ) -> BlobStore | None:
    """The container for jobs' logs and outputs, when one is configured."""
    return _container(environ, "BATCHAI_BLOB_CONTAINER")


def drop_store(data_dir: Path, environ: Mapping[str, str] = os.environ) -> BlobStore:
    """Where job files are dropped: a blob container when configured, else `{data dir}/drops`."""
    return _container(environ, "BATCHAI_DROP_CONTAINER") or FsBlobStore(Path(data_dir) / "drops")


def durable_engine(environ: Mapping[str, str] = os.environ) -> DurableTaskEngine:
    """The engine `batchai serve` runs the orchestrations on."""
    if not _all_or_none(environ, ("BATCHAI_DTS_ENDPOINT", "BATCHAI_DTS_TASKHUB")):
        return DurableTaskEngine()
    endpoint = environ["BATCHAI_DTS_ENDPOINT"]
    credential = None
    if not endpoint.startswith("http://"):
        credential = _identity()
    return DurableTaskSchedulerEngine(endpoint, environ["BATCHAI_DTS_TASKHUB"], credential)


def submission_queue(data_dir: Path, environ: Mapping[str, str] = os.environ) -> SubmissionQueue:
    connection, namespace = environ.get("BATCHAI_SERVICEBUS"), environ.get(SERVICEBUS_NAMESPACE)
    if not connection and not namespace:
        from batchai.adapters.sqlite_queue import SqliteSubmissionQueue

        return SqliteSubmissionQueue(Path(data_dir) / "queue.db")
    from batchai.adapters.servicebus_queue import DEFAULT_TOPIC, ServiceBusSubmissionQueue

    topic = environ.get("BATCHAI_SERVICEBUS_TOPIC") or DEFAULT_TOPIC
    if connection:
        return ServiceBusSubmissionQueue.from_connection_string(connection, topic)
    return ServiceBusSubmissionQueue.from_namespace(str(namespace), _identity(), topic)


def _container(environ: Mapping[str, str], setting: str) -> AzureBlobStore | None:
    """The container the setting names, in the account of BATCHAI_BLOB_CONNECTION_STRING (or its blob URL)."""
    if not environ.get(setting):
        return None
    if environ.get("BATCHAI_BLOB_CONNECTION_STRING"):
        return AzureBlobStore(environ["BATCHAI_BLOB_CONNECTION_STRING"], environ[setting])
    if environ.get(BLOB_ACCOUNT_URL):
        return AzureBlobStore.with_credential(environ[BLOB_ACCOUNT_URL], environ[setting], _identity())
    raise ValueError(f"{setting} needs BATCHAI_BLOB_CONNECTION_STRING or {BLOB_ACCOUNT_URL} (the storage account)")


def azure_compute(store: Store, data_dir: Path, heartbeat: float, environ: Mapping[str, str] = os.environ):
    """VM scale sets when configured, else None."""
    if not _all_or_none(environ, VMSS_REQUIRED):
        return None
    from batchai.adapters.vmss_compute import VmssCompute

    url = environ.get("BATCHAI_PUBLIC_URL") or (f"https://{environ['WEBSITE_HOSTNAME']}" if environ.get("WEBSITE_HOSTNAME") else "")
    if not url:
        raise ValueError("set BATCHAI_PUBLIC_URL: the URL at which the VMs reach the control plane")

    def cluster_properties(cluster_id: str) -> dict | None:
        record = store.get(cluster_id)
        return record.properties if record is not None else None

    return VmssCompute(
        _identity(),
        environ["BATCHAI_VMSS_SUBSCRIPTION_ID"],
        resource_group=environ["BATCHAI_VMSS_RESOURCE_GROUP"],
        location=environ["BATCHAI_VMSS_LOCATION"],
        control_plane_url=url,
        node_credential=node_credentials(store),
        agent_package=environ["BATCHAI_AGENT_PACKAGE"],
        cluster_properties=cluster_properties,
        default_subnet_id=environ.get("BATCHAI_VMSS_SUBNET_ID") or None,
        file_server_address=file_server_address(store),
        state_file=Path(data_dir) / "vmss-nodes.json",
        heartbeat=heartbeat,
    )


def azure_file_servers(environ: Mapping[str, str] = os.environ):
    """NFS server VMs beside the scale sets (same subscription, group, location and subnet), else None."""
    if not _all_or_none(environ, VMSS_REQUIRED):
        return None
    from batchai.adapters.nfs_file_server import NfsFileServers

    return NfsFileServers(
        _identity(),
        environ["BATCHAI_VMSS_SUBSCRIPTION_ID"],
        resource_group=environ["BATCHAI_VMSS_RESOURCE_GROUP"],
        location=environ["BATCHAI_VMSS_LOCATION"],
        default_subnet_id=environ.get("BATCHAI_VMSS_SUBNET_ID") or None,
    )
