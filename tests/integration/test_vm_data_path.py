"""The data path of a node on another machine (a VM's, or a joined one's: the same agent), with Azurite as
the job's blob storage: the agent runs with its own root and only its node credential (no access to the
control plane's disk, no storage key), streams stdout.txt while the job runs and uploads an output file
(batchai/agent/uploads.py); the control plane keeps them in the blob container, and listOutputFiles
through the official SDK lists them with SAS URLs that download from Azurite directly."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

import httpx
import pytest
from azure.mgmt.batchai import models

from batchai.adapters.azure_blob_store import AzureBlobStore
from tests.integration.conftest import ROOT, TOKEN, Server, kill_agents, make_sdk
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(180)
RG, EXP, CONTAINER = "rg", "exp", "vm-outputs"
SUB = "00000000-0000-0000-0000-000000000000"
# the job runs until the test has seen its log in the blob (`release`: a file the test makes), however slow the machine
COMMAND = "for i in 1 2 3 4 5 6; do echo step $i; done; until [ -e {release} ]; do sleep 0.1; done; echo trained > $AZ_BATCHAI_OUTPUT_MODEL/model.bin"


def test_an_agent_elsewhere_streams_its_log_and_uploads_outputs_to_blob_storage(tmp_path, azurite_connection, unique_name):
    data_dir, vm_root = tmp_path / "control-plane", tmp_path / "vm"
    data_dir.mkdir()
    server = Server(
        data_dir,
        env={"BATCHAI_BLOB_CONNECTION_STRING": azurite_connection, "BATCHAI_BLOB_CONTAINER": CONTAINER, "BATCHAI_BLOB_SYNC_SECONDS": "0.3"},
    ).start()
    agent = None
    try:
        sdk = make_sdk(server)
        ws = unique_name("ws")
        sdk.workspaces.begin_create(RG, ws, models.WorkspaceCreateParameters(location="eastus")).result()
        http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, params={"api-version": "2018-05-01"})
        cluster = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.BatchAI/workspaces/{ws}/clusters/vms"
        body = {"properties": {"vmSize": "Standard_NC24ads_A100_v4", "userAccountSettings": {"adminUserName": "u"}, "attached": True}}
        http.put(cluster, json=body).raise_for_status()
        token = http.post(f"{cluster}/enrollmentToken", json={}).json()["token"]
        # the machine: its own root, none of the control plane's settings, its token only
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHAI_")}
        env.update(BATCHAI_ENROLL_TOKEN=token, PYTHONPATH=str(ROOT))
        agent = subprocess.Popen(
            [sys.executable, "-m", "batchai.cli.main", "node", "join", "--url", server.url, "--root", str(vm_root), "--name", "vm-0"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        until(lambda: len(http.post(f"{cluster}/listRemoteLoginInformation").json()["value"]) == 1, 60, "the machine to join")
        sdk.experiments.begin_create(RG, ws, EXP).result()
        params = models.JobCreateParameters(
            cluster=models.ResourceId(id=cluster),
            node_count=1,
            std_out_err_path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT",
            output_directories=[models.OutputDirectory(id="MODEL", path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT")],
            custom_toolkit_settings=models.CustomToolkitSettings(command_line=COMMAND.format(release=tmp_path / "release")),
        )
        sdk.jobs.begin_create(RG, ws, EXP, "train", params)
        blobs = AzureBlobStore(azurite_connection, CONTAINER)

        def streamed_while_running() -> bytes | None:
            job = sdk.jobs.get(RG, ws, EXP, "train")
            assert job.execution_state in ("queued", "running"), "the job ended before its log reached the blob"
            if job.execution_state != "running":
                return None
            content = blobs.get(f"{job.job_output_directory_path_segment}/stdouterr/stdout.txt")
            return content if content and sdk.jobs.get(RG, ws, EXP, "train").execution_state == "running" else None

        assert until(streamed_while_running, 60, "stdout.txt in the blob while the job runs", interval=0.1).startswith(b"step 1\n")
        (tmp_path / "release").touch()
        until(lambda: sdk.jobs.get(RG, ws, EXP, "train").execution_state == "succeeded", 60, "the job to succeed")

        def listed(output_id: str) -> dict:
            options = models.JobsListOutputFilesOptions(outputdirectoryid=output_id, linkexpiryinminutes=10)
            return {f.name: f for f in sdk.jobs.list_output_files(RG, ws, EXP, "train", options)}

        logs, model = listed("stdouterr"), listed("MODEL")
        assert "stdout.txt" in logs and "model.bin" in model
        for f in (logs["stdout.txt"], model["model.bin"]):
            assert f.download_url.startswith(azurite_connection.split("BlobEndpoint=")[1].split(";")[0])  # Azurite, not the control plane
        with urllib.request.urlopen(logs["stdout.txt"].download_url, timeout=10) as r:  # the SAS alone authorizes it
            assert r.read().decode() == "".join(f"step {i}\n" for i in range(1, 7))
        with urllib.request.urlopen(model["model.bin"].download_url, timeout=10) as r:
            assert r.read() == b"trained\n"
        assert list(vm_root.rglob("model.bin"))  # the job wrote it on its machine; the agent sent it
    finally:
        if agent is not None:
            agent.kill()
            agent.wait()
        server.stop()
        kill_agents(data_dir)
