"""A job launched on VM scale set nodes (a `remote` compute): every path is under each node's root, the
agent sends logs and outputs to the control plane (the blob container's path), the job's own volumes are
mounted by the agent around the task, and the shared job temp is on the cluster's shared volume."""

from __future__ import annotations

from batchai.adapters.sqlite_store import SqliteStore
from batchai.adapters.vmss_compute import VmssCompute
from batchai.frameworks.plan import NodeTask
from batchai.ports import NodeRecord, Record
from batchai.scheduling_pass import prepare
from batchai.services import Services, Settings
from tests.support.fake_arm import RG, SUB, FakeArm, FakeCredential

WS = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.BatchAI/workspaces/ws"
CLUSTER = f"{WS}/clusters/c"
JOB = f"{WS}/experiments/e/jobs/j"
SHARE = {
    "azureFileUrl": "https://acct.file.core.windows.net/data",
    "accountName": "acct",
    "credentials": {"accountKey": "KEY=="},
    "relativeMountPath": "shared",
}


def test_a_job_on_vms_keeps_its_paths_on_the_nodes_uploads_and_mounts_its_volumes_there(tmp_path):
    store = SqliteStore(tmp_path / "store.db")
    cluster_props = {
        "vmSize": "Standard_ND96asr_v4",
        "userAccountSettings": {"adminUserName": "u", "adminUserPassword": "p"},
        "scaleSettings": {"manual": {"targetNodeCount": 2}},
        "nodeSetup": {"mountVolumes": {"azureFileShares": [SHARE]}},
    }
    cluster = Record(id=CLUSTER, type="clusters", name="c", parent=WS, body={"properties": cluster_props}, internal={"uuid": "ckey"})
    job_props = {
        "cluster": {"id": CLUSTER},
        "nodeCount": 2,
        "stdOutErrPathPrefix": "$AZ_BATCHAI_MOUNT_ROOT/shared",
        "outputDirectories": [{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_MOUNT_ROOT/shared"}],
        "customMpiSettings": {"commandLine": "python train.py", "processCount": 2},
        "mountVolumes": {
            "azureBlobFileSystems": [
                {"accountName": "acct", "containerName": "data", "relativeMountPath": "data", "credentials": {"accountKey": "BKEY"}}
            ]
        },
        "jobOutputDirectoryPathSegment": "sub/rg/workspaces/ws/experiments/e/jobs/j/juuid",
        "executionState": "queued",
    }
    job = Record(
        id=JOB,
        type="jobs",
        name="j",
        parent=f"{WS}/experiments/e",
        body={"properties": job_props},
        internal={"uuid": "juuid", "attempt": 1},
    )
    compute = VmssCompute(
        FakeCredential(),
        SUB,
        resource_group=RG,
        location="westeurope",
        control_plane_url="https://cp",
        node_credential=lambda n: "c",
        agent_package="p",
        transport=FakeArm(),
    )
    svc = Services(store=store, compute=compute, engine=None, settings=Settings(data_dir=tmp_path))  # type: ignore[arg-type]
    nodes = [
        NodeRecord(
            id=f"n{i}",
            cluster=CLUSTER,
            name=f"node-{i}",
            state="idle",
            address=f"10.40.0.{4 + i}",
            root=f"/mnt/batchai/nodes/ckey/node-{i}",
        )
        for i in range(2)
    ]
    launch = prepare(svc, job, nodes, cluster)
    assert launch is not None
    tasks = [NodeTask.from_json(t.spec) for t in launch.tasks]
    for i, task in enumerate(tasks):
        root = f"/mnt/batchai/nodes/ckey/node-{i}"
        env = task.env
        assert env["AZ_BATCHAI_MOUNT_ROOT"] == f"{root}/mounts" and env["AZ_BATCHAI_JOB_MOUNT_ROOT"].startswith(root)
        assert not any(str(tmp_path) in v for v in env.values())  # nothing of the control plane's disk
        # the shared job temp is on the cluster's shared volume: the same share on every node
        assert env["AZ_BATCHAI_SHARED_JOB_TEMP"] == f"{root}/mounts/shared/.batchai/jobs/juuid/shared"
        # logs and outputs go to the control plane through the agent's uploads
        assert set(task.uploads) == {"stdouterr", "MODEL"}
        # the job's blob container is mounted by the agent under the job's mount root, and unmounted after
        job_mounts = env["AZ_BATCHAI_JOB_MOUNT_ROOT"]
        assert f"blobfuse {job_mounts}/data" in task.mounts and "accountKey ' BKEY" in task.mounts
        assert task.unmounts.strip().endswith(f"umount -l {job_mounts}/data")
