"""An embedded control plane in process whose one cluster is paused: a submission channel's effect is
exactly the jobs it creates. Simulated nodes, since nothing here needs a job to run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from batchai.services import Settings
from function_app.embedded import EmbeddedHost

SUBSCRIPTION, GROUP = "00000000-0000-0000-0000-000000000000", "default"
V = {"api-version": "2018-05-01"}


def workspace_path(workspace: str) -> str:
    return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.BatchAI/workspaces/{workspace}"


@contextmanager
def simulated_host(data_dir: Path, heartbeat_seconds: float = 0.5, **settings) -> Iterator[EmbeddedHost]:
    """An embedded control plane in process on simulated nodes, its engine started (`settings`: Settings
    fields); stopped after, as `batchai serve` stops: the engine before the machines its activities use."""
    host = EmbeddedHost(
        data_dir, settings=Settings(data_dir=data_dir, **settings), simulated_nodes={"heartbeat_seconds": heartbeat_seconds}
    )
    host.build()
    host.engine.start()
    try:
        yield host
    finally:
        host.consumer.stop()
        host.inbox.stop()
        host.deferred.stop()
        host.last_seen.close()
        host.engine.stop()
        host.compute.close()


@contextmanager
def paused_host(data_dir: Path, workspace: str, experiment: str) -> Iterator[EmbeddedHost]:
    """Workspace, a paused 2-node cluster `c` and an experiment; `host.http` is an authorized client,
    `host.workspace` and `host.experiment` their names."""
    with simulated_host(data_dir, heartbeat_seconds=5.0) as host:
        base = workspace_path(workspace)
        host.workspace, host.experiment = workspace, experiment
        host.http = TestClient(host.app, headers={"Authorization": f"Bearer {host.token}"})
        host.http.put(base, params=V, json={"location": "local"}).raise_for_status()
        host.http.put(
            f"{base}/clusters/c",
            params=V,
            json={
                "properties": {
                    "vmSize": "STANDARD_D1",
                    "userAccountSettings": {"adminUserName": "u"},
                    "scaleSettings": {"manual": {"targetNodeCount": 2}},
                }
            },
        ).raise_for_status()
        host.http.post(f"{base}/clusters/c/pause", params=V).raise_for_status()
        host.http.put(f"{base}/experiments/{experiment}", params=V).raise_for_status()
        yield host


def simulated_job(cluster_id: str, command: str, node_count: int = 1, **properties) -> dict:
    """A job's body for simulated nodes: a custom toolkit running `command` (its `sleep N` is how long it runs
    there) on `node_count` nodes; `properties`: more of its properties."""
    return {
        "properties": {
            "cluster": {"id": cluster_id},
            "nodeCount": node_count,
            "stdOutErrPathPrefix": "/sim",
            "customToolkitSettings": {"commandLine": command},
            **properties,
        }
    }


def job_names(host: EmbeddedHost, workspace: str, experiment: str) -> list[str]:
    """The experiment's job names in creation order (the list pages in submission order)."""
    page = host.http.get(f"{workspace_path(workspace)}/experiments/{experiment}/jobs", params=V).json()
    names = [j["name"] for j in page["value"]]
    while page.get("nextLink"):
        page = host.http.get(page["nextLink"]).json()
        names += [j["name"] for j in page["value"]]
    return names
