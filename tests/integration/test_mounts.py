"""Mount volumes on local nodes: shared directories seen by every node, job mounts end with the job."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from azure.mgmt.batchai import models

from tests.support.naming import unique_name
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(180)
RG, WS, EXP = "rg", unique_name("mounts"), "exp"
BASE = f"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/{RG}/providers/Microsoft.BatchAI/workspaces/{WS}"
V = {"api-version": "2018-05-01"}


@pytest.fixture(scope="module")
def setup(sdk, server):
    sdk.workspaces.begin_create(RG, WS, models.WorkspaceCreateParameters(location="eastus")).result()
    http = server.http()
    fs = http.put(
        f"{BASE}/fileServers/nfs",
        params=V,
        json={
            "properties": {
                "vmSize": "STANDARD_D1",
                "dataDisks": {"diskSizeInGB": 10, "diskCount": 1, "storageAccountType": "Standard_LRS"},
                "sshConfiguration": {"userAccountSettings": {"adminUserName": "u", "adminUserPassword": "pw"}},
            }
        },
    )
    assert fs.status_code == 200, fs.text
    assert [f.name for f in sdk.file_servers.list_by_workspace(RG, WS)] == ["nfs"]  # the SDK lists what REST created
    export = Path(fs.json()["properties"]["mountSettings"]["mountPoint"])
    (export / "data").mkdir(parents=True, exist_ok=True)
    (export / "data" / "from-nfs.txt").write_text("nfs data\n")
    share = Path(server.data_dir) / "storage" / "files" / "acct" / "share"
    share.mkdir(parents=True, exist_ok=True)
    (share / "script.sh").write_text("echo script from the share on $AZ_BATCHAI_NODE_NAME\n")
    cluster = sdk.clusters.begin_create(
        RG,
        WS,
        "c",
        models.ClusterCreateParameters(
            vm_size="STANDARD_D1",
            user_account_settings=models.UserAccountSettings(admin_user_name="u", admin_user_password="pw"),
            scale_settings=models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=2)),
            node_setup=models.NodeSetup(
                mount_volumes=models.MountVolumes(
                    file_servers=[
                        models.FileServerReference(
                            file_server=models.ResourceId(id=fs.json()["id"]), source_directory="data", relative_mount_path="nfs"
                        )
                    ],
                    unmanaged_file_systems=[
                        models.UnmanagedFileSystemReference(mount_command="mount -t tmpfs none", relative_mount_path="scratch")
                    ],
                )
            ),
        ),
    ).result()
    until(lambda: sdk.clusters.get(RG, WS, "c").node_state_counts.idle_node_count == 2, 60, "2 idle nodes", interval=0.2)
    sdk.experiments.begin_create(RG, WS, EXP).result()
    yield cluster, share
    sdk.workspaces.begin_delete(RG, WS).result()


def run(sdk, cluster, name, **props) -> models.Job:
    sdk.jobs.begin_create(RG, WS, EXP, name, models.JobCreateParameters(cluster=models.ResourceId(id=cluster.id), **props)).result()
    return until(
        lambda: (job := sdk.jobs.get(RG, WS, EXP, name)).execution_state in ("succeeded", "failed") and job,
        90,
        f"job {name} to end",
        interval=0.2,
    )


def test_cluster_and_job_volumes_are_shared_directories(sdk, server, setup):
    cluster, share = setup
    job_mounts = models.MountVolumes(
        azure_file_shares=[
            models.AzureFileShareReference(
                account_name="acct",
                azure_file_url="https://acct.file.core.windows.net/share",
                relative_mount_path="afs",
                credentials=models.AzureStorageCredentialsInfo(account_key="a2V5"),
            )
        ]
    )
    job = run(
        sdk,
        cluster,
        "uses-mounts",
        node_count=2,
        mount_volumes=job_mounts,
        std_out_err_path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/afs",
        py_torch_settings=models.PyTorchSettings(
            python_script_file_path="-c",
            python_interpreter_path="bash $AZ_BATCHAI_JOB_MOUNT_ROOT/afs/script.sh;"
            " cat $AZ_BATCHAI_MOUNT_ROOT/nfs/from-nfs.txt; echo $RANK > $AZ_BATCHAI_MOUNT_ROOT/scratch/rank-$RANK; true",
        ),
    )
    assert job.execution_state == "succeeded", job.execution_info.errors
    scratch = next(Path(server.data_dir, "storage", "unmanaged").iterdir())
    assert sorted(p.name for p in scratch.iterdir()) == ["rank-0", "rank-1"]  # both nodes wrote into one volume
    logs = share / job.job_output_directory_path_segment / "stdouterr"
    assert (logs / "stdout-0.txt").read_text() == "script from the share on node-0\nnfs data\n"
    assert (logs / "stdout-1.txt").read_text() == "script from the share on node-1\nnfs data\n"
    files = {
        f.name: f
        for f in sdk.jobs.list_output_files(RG, WS, EXP, "uses-mounts", models.JobsListOutputFilesOptions(outputdirectoryid="stdouterr"))
    }
    assert httpx.get(files["stdout-1.txt"].download_url).text.startswith("script from the share")  # still listed after the unmount


def test_job_volumes_disappear_after_the_job(sdk, server, setup):
    cluster, share = setup
    job_mounts = models.MountVolumes(
        azure_file_shares=[
            models.AzureFileShareReference(
                account_name="acct",
                azure_file_url="https://acct.file.core.windows.net/share",
                relative_mount_path="afs",
                credentials=models.AzureStorageCredentialsInfo(account_key="a2V5"),
            )
        ]
    )
    job = run(
        sdk,
        cluster,
        "mounted",
        node_count=1,
        mount_volumes=job_mounts,
        std_out_err_path_prefix="$AZ_BATCHAI_JOB_TEMP/logs",
        custom_toolkit_settings=models.CustomToolkitSettings(command_line="echo kept > $AZ_BATCHAI_JOB_MOUNT_ROOT/afs/result.txt"),
    )
    assert job.execution_state == "succeeded"
    mount_root = Path(server.data_dir, "jobs", job.job_output_directory_path_segment.rsplit("/", 1)[1], "mounts")
    assert not (mount_root / "afs").exists()  # unmounted with the job
    assert (share / "result.txt").read_text() == "kept\n"  # the share keeps what the job wrote
