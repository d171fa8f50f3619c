"""Every toolkit end to end on a 2-node local cluster, each with a stand-in script that checks
its own environment, talks to its peers and fails loudly when anything is wrong.

The MPI toolkits run a real `mpirun` whose remote ranks start through the other node's agent.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from azure.mgmt.batchai import models

from tests.integration.conftest import agent_pids, sdk_cluster
from tests.support.naming import unique_name
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(240)
RG, WS, EXP = "rg", unique_name("toolkits"), "exp"
STANDIN = str(Path(__file__).resolve().parents[1] / "fixtures" / "standins" / "standin.py")
PY = sys.executable


@pytest.fixture(scope="module")
def cluster(sdk):
    cluster = sdk_cluster(sdk, RG, WS, "two", nodes=2, vm_size="STANDARD_NC6", experiment=EXP)
    yield cluster
    sdk.workspaces.begin_delete(RG, WS).result()


def run_job(sdk, server, cluster, name: str, **toolkit) -> tuple[models.Job, dict[str, dict]]:
    params = models.JobCreateParameters(
        cluster=models.ResourceId(id=cluster.id),
        node_count=2,
        std_out_err_path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        output_directories=[models.OutputDirectory(id="OUT", path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/out")],
        constraints=models.JobBasePropertiesConstraints(max_wall_clock_time=timedelta(minutes=3)),
        **toolkit,
    )
    sdk.jobs.begin_create(RG, WS, EXP, name, params).result()
    job = until(
        lambda: (j := sdk.jobs.get(RG, WS, EXP, name)).execution_state in ("succeeded", "failed") and j,
        120,
        f"job {name} to end",
        interval=0.2,
    )
    out = next(Path(server.data_dir, "jobs").glob(f"*/mounts/out/*/*/workspaces/{WS}/experiments/{EXP}/jobs/{name}/*/outputs"))
    logs = out.parent.parent.parent.parent / "logs"
    records = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    if job.execution_state != "succeeded":
        stderr = "\n".join(f"{p.name}: {p.read_text()[-1500:]}" for p in logs.rglob("stderr*.txt"))
        pytest.fail(f"{name} {job.execution_state}: {job.execution_info.errors}\n{stderr}")
    return job, records


def test_tensorflow_parameter_server_and_workers(sdk, server, cluster):
    job, seen = run_job(
        sdk,
        server,
        cluster,
        "tf",
        tensor_flow_settings=models.TensorFlowSettings(
            python_script_file_path=f"{STANDIN} tensorflow",
            python_interpreter_path=PY,
            master_command_line_args="--master",
            worker_command_line_args="--worker",
            parameter_server_command_line_args="--ps",
            worker_count=2,
            parameter_server_count=1,
        ),
    )
    assert set(seen) == {"ps-0", "worker-0", "worker-1"}
    assert seen["worker-0"]["argv"] == ["--master"] and seen["worker-1"]["argv"] == ["--worker"]
    assert {seen["worker-0"]["node"], seen["worker-1"]["node"]} == {"node-0", "node-1"}


def test_pytorch_ranks_rendezvous_at_the_init_method(sdk, server, cluster):
    _, seen = run_job(
        sdk,
        server,
        cluster,
        "pt",
        py_torch_settings=models.PyTorchSettings(
            python_script_file_path=STANDIN, python_interpreter_path=PY, command_line_args="pytorch 3", process_count=3
        ),
    )
    assert set(seen) == {"rank-0", "rank-1", "rank-2"} and seen["rank-2"]["node"] == "node-1"


def test_caffe2_shards_meet_in_the_shared_job_temp(sdk, server, cluster):
    _, seen = run_job(
        sdk,
        server,
        cluster,
        "c2",
        caffe2_settings=models.Caffe2Settings(python_script_file_path=STANDIN, python_interpreter_path=PY, command_line_args="caffe2 2"),
    )
    assert {seen["shard-0"]["node"], seen["shard-1"]["node"]} == {"node-0", "node-1"}


MPI_TOOLKITS = {
    "horovod": lambda: {
        "horovod_settings": models.HorovodSettings(
            python_script_file_path=STANDIN, python_interpreter_path=PY, command_line_args="mpi 4", process_count=4
        )
    },
    "custommpi": lambda: {"custom_mpi_settings": models.CustomMpiSettings(command_line=f"{PY} {STANDIN} mpi 4", process_count=4)},
    "chainer": lambda: {
        "chainer_settings": models.ChainerSettings(
            python_script_file_path=STANDIN, python_interpreter_path=PY, command_line_args="mpi 3", process_count=3
        )
    },
    "cntk": lambda: {
        "cntk_settings": models.CNTKsettings(
            language_type="Python", python_script_file_path=STANDIN, python_interpreter_path=PY, command_line_args="mpi 2", process_count=2
        )
    },
    "caffe": lambda: {
        "caffe_settings": models.CaffeSettings(
            python_script_file_path=STANDIN, python_interpreter_path=PY, command_line_args="mpi 2", process_count=2
        )
    },
}


@pytest.mark.parametrize("toolkit", MPI_TOOLKITS)
def test_mpi_toolkits_allreduce_across_both_nodes(sdk, server, cluster, toolkit):
    _, seen = run_job(sdk, server, cluster, f"mpi-{toolkit}", **MPI_TOOLKITS[toolkit]())
    size = seen["rank-0"]["size"]
    assert set(seen) == {f"rank-{r}" for r in range(size)}
    assert {r["total"] for r in seen.values()} == {size * (size + 1) / 2}
    assert {r["node"] for r in seen.values()} == {"node-0", "node-1"}


def test_mpi_ranks_run_under_two_different_node_agents(sdk, server, cluster):
    _, seen = run_job(
        sdk,
        server,
        cluster,
        "mpi-agents",
        custom_mpi_settings=models.CustomMpiSettings(command_line=f"{PY} {STANDIN} mpi 4", process_count=4),
    )
    agents = agent_pids(server)
    for rank in seen.values():
        assert agents[rank["node"]] in rank["ancestors"], (rank, agents)
    assert sorted(r["node"] for r in seen.values()) == ["node-0", "node-0", "node-1", "node-1"]
