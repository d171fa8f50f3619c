"""Launch plans for the custom and PyTorch toolkits: commands, environment, files per node."""

import pytest

from batchai.frameworks import LaunchContext, PlacedNode, job_paths, plan_job
from batchai.frameworks.common import split_ranks
from batchai.model import JobCreateParameters

CLUSTER = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.BatchAI/workspaces/ws/clusters/c"


def props(**extra):
    body = {"cluster": {"id": CLUSTER}, "nodeCount": 2, "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs", **extra}
    return JobCreateParameters.model_validate({"properties": body}).properties


def ctx(n=2):
    return LaunchContext(
        job_id="jid",
        job_name="j",
        job_uuid="u1",
        attempt=1,
        output_segment="seg",
        cluster_mount_root="/data/clusters/c/mounts",
        job_dir="/data/jobs/u1",
        nodes=tuple(PlacedNode(f"id{i}", f"node-{i}", "127.0.0.1", f"/data/nodes/c/node-{i}") for i in range(n)),
        master_port=29500,
        python="/usr/bin/python3",
    )


def test_custom_toolkit_runs_on_the_first_node_only():
    p = props(
        customToolkitSettings={"commandLine": "echo $AZ_BATCHAI_MPI_HOST_FILE"},
        environmentVariables=[{"name": "A", "value": "$AZ_BATCHAI_JOB_MOUNT_ROOT/a"}],
        secrets=[{"name": "S", "value": "hush"}],
        outputDirectories=[{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/out", "pathSuffix": "Models"}],
        jobPreparation={"commandLine": "echo prep"},
    )
    first, second = plan_job(p, ctx())
    assert [pr.command for pr in first.processes] == ["echo $AZ_BATCHAI_MPI_HOST_FILE"] and second.processes == []
    stdouterr = "/data/jobs/u1/mounts/logs/seg/stdouterr"
    assert first.processes[0].stdout == f"{stdouterr}/stdout.txt"
    assert first.env["AZ_BATCHAI_OUTPUT_MODEL"] == "/data/jobs/u1/mounts/out/seg/outputs/Models"
    assert first.env["A"] == "/data/jobs/u1/mounts/a" and first.env["S"] == "hush"
    assert first.env["AZ_BATCHAI_JOB_TEMP"] == "/data/nodes/c/node-0/jobs/u1"
    assert first.files == {"/data/nodes/c/node-0/jobs/u1/hostfile": "node-0 slots=1\nnode-1 slots=1\n"}
    assert first.preparation.stdout == f"{stdouterr}/stdout-job_prep.txt"
    assert second.preparation is not None  # preparation runs on every node
    assert f"{stdouterr}" in first.dirs and "/data/jobs/u1/mounts/out/seg/outputs/Models" in first.dirs
    assert job_paths(p, ctx()).outputs == {"MODEL": "/data/jobs/u1/mounts/out/seg/outputs/Models"}


def test_pytorch_ranks_spread_over_nodes():
    p = props(
        pyTorchSettings={
            "pythonScriptFilePath": "$AZ_BATCHAI_JOB_MOUNT_ROOT/train.py",
            "processCount": 3,
            "commandLineArgs": "--rank $AZ_BATCHAI_TASK_INDEX",
            "communicationBackend": "gloo",
        }
    )
    tasks = plan_job(p, ctx())
    ranks = [[pr.env["RANK"] for pr in t.processes] for t in tasks]
    assert ranks == [["0", "1"], ["2"]]
    proc = tasks[1].processes[0]
    assert proc.command == "/usr/bin/python3 $AZ_BATCHAI_JOB_MOUNT_ROOT/train.py --rank $AZ_BATCHAI_TASK_INDEX"
    assert proc.env["WORLD_SIZE"] == "3" and proc.env["AZ_BATCHAI_TASK_INDEX"] == "2" and proc.env["LOCAL_RANK"] == "0"
    assert proc.env["AZ_BATCHAI_PYTORCH_INIT_METHOD"] == "tcp://127.0.0.1:29500"
    assert proc.stdout.endswith("/stdouterr/stdout-2.txt")
    assert tasks[0].files[tasks[0].env["AZ_BATCHAI_MPI_HOST_FILE"]] == "node-0 slots=2\nnode-1 slots=1\n"


def test_pytorch_defaults_to_one_rank_per_node():
    p = props(pyTorchSettings={"pythonScriptFilePath": "t.py"})
    assert [len(t.processes) for t in plan_job(p, ctx())] == [1, 1]


@pytest.mark.parametrize("count,nodes,expected", [(5, 2, [[0, 1, 2], [3, 4]]), (2, 2, [[0], [1]]), (1, 2, [[0], []])])
def test_split_ranks(count, nodes, expected):
    assert split_ranks(count, nodes) == expected
