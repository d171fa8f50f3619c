"""Every original recipe through its launch plan: commands, environment and host files per node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchai.frameworks import LaunchContext, PlacedNode, plan_job
from batchai.model import load_job_file

RECIPES = Path(__file__).parents[1] / "fixtures" / "recipes"
CLUSTER = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.BatchAI/workspaces/ws/clusters/c"
PY = "/usr/bin/python3"
MPIRUN = "mpirun --test-options"


def ctx(nodes: int) -> LaunchContext:
    return LaunchContext(
        job_id="jid", job_name="j", job_uuid="u1", attempt=1, output_segment="seg",
        cluster_mount_root="/data/c/mounts", job_dir="/data/jobs/u1",
        nodes=tuple(PlacedNode(f"id{i}", f"node-{i}", f"10.0.0.{4 + i}", f"/data/nodes/node-{i}", 7000 + i) for i in range(nodes)),
        master_port=2222, python=PY, mpirun=MPIRUN, exec_secret="s3cret",
    )


def recipe(name: str):
    props = load_job_file(json.loads((RECIPES / name).read_text()), cluster_id=CLUSTER).properties
    return props, plan_job(props, ctx(props.node_count))


def hostfile(task) -> str:
    return task.files[task.env["AZ_BATCHAI_MPI_HOST_FILE"]]


ALL = sorted(str(p.relative_to(RECIPES)) for p in RECIPES.glob("*/job*.json"))


@pytest.mark.parametrize("name", ALL)
def test_every_recipe_has_a_plan_with_the_service_environment(name):
    props, tasks = recipe(name)
    main_tasks = [t for t in tasks if t.after is None]
    assert [t.node_id for t in main_tasks] == [f"id{i}" for i in range(props.node_count)]
    for i, t in enumerate(main_tasks):
        env = t.env
        assert env["AZ_BATCHAI_JOB_TEMP"] == f"/data/nodes/node-{i}/jobs/u1" == t.cwd
        assert env["AZ_BATCHAI_SHARED_JOB_TEMP"] == "/data/jobs/u1/shared"
        assert env["AZ_BATCHAI_JOB_MOUNT_ROOT"] == "/data/jobs/u1/mounts" and env["AZ_BATCHAI_MOUNT_ROOT"] == "/data/c/mounts"
        assert env["AZ_BATCHAI_STDOUTERR_DIR"].endswith("/seg/stdouterr")
        assert env["BATCHAI_EXEC_HOSTS"] == ",".join(f"node-{k}=10.0.0.{4 + k}:{7000 + k}" for k in range(props.node_count))
        for d in props.output_directories or []:
            assert env[f"AZ_BATCHAI_OUTPUT_{d.id}"] in t.dirs
        for d in props.input_directories or []:
            assert not env[f"AZ_BATCHAI_INPUT_{d.id}"].startswith("$")
        assert (t.preparation is not None) == (props.job_preparation is not None)
        if t.preparation:
            assert t.preparation.stdout.endswith("/stdouterr/stdout-job_prep.txt")
    assert any(not t.holds_only for t in tasks)


def test_tensorflow_distributed_parameter_server_and_two_workers():
    props, tasks = recipe("TensorFlow-GPU-Distributed/job.json")
    node0, servers, node1 = tasks
    assert [p.name for p in node0.processes] == ["wk-0"] and [p.name for p in node1.processes] == ["wk-1"]
    assert [p.name for p in servers.processes] == ["ps-0"] and servers.processes[0].daemon and servers.after == node0.task_id
    s = props.tensor_flow_settings
    script = "$AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/tensorflow/mnist_replica.py"
    assert node0.processes[0].command == f"{PY} {script} {s.master_command_line_args}"
    assert node1.processes[0].command == f"{PY} {script} {s.worker_command_line_args}"
    assert servers.processes[0].command == f"{PY} {script} {s.parameter_server_command_line_args}"
    ps_env, wk1_env = servers.processes[0].env, node1.processes[0].env
    assert ps_env["AZ_BATCHAI_PS_HOSTS"] == "10.0.0.4:2222"
    assert ps_env["AZ_BATCHAI_WORKER_HOSTS"] == "10.0.0.4:2223,10.0.0.5:2224"
    assert (ps_env["AZ_BATCHAI_TASK_INDEX"], wk1_env["AZ_BATCHAI_TASK_INDEX"]) == ("0", "1")
    assert json.loads(wk1_env["TF_CONFIG"]) == {
        "cluster": {"worker": ["10.0.0.4:2223", "10.0.0.5:2224"], "ps": ["10.0.0.4:2222"]},
        "task": {"type": "worker", "index": 1}, "environment": "cloud"}
    assert json.loads(ps_env["TF_CONFIG"])["task"] == {"type": "ps", "index": 0}
    assert node0.processes[0].stdout.endswith("/stdouterr/stdout-wk-0.txt")
    assert servers.processes[0].stderr.endswith("/stdouterr/stderr-ps-0.txt")
    assert hostfile(node0) == "node-0 slots=2\nnode-1 slots=1\n"


@pytest.mark.parametrize("name", ["TensorFlow-GPU/job.json", "Keras-GPU/job_tensorflow.json"])
def test_single_node_tensorflow_is_one_worker_without_servers(name):
    _, (task,) = recipe(name)
    (proc,) = task.processes
    assert proc.name == "wk-0" and proc.stdout.endswith("/stdout-wk-0.txt")
    assert json.loads(proc.env["TF_CONFIG"])["cluster"] == {"worker": ["10.0.0.4:2222"]}
    assert proc.env["AZ_BATCHAI_PS_HOSTS"] == ""


@pytest.mark.parametrize("name,ranks", [
    ("Horovod-Tensorflow/job.json", 2), ("Horovod-PyTorch/job.json", None), ("Horovod-Infiniband-Benchmark/job.json", None),
    ("Chainer-GPU-Distributed/job.json", None), ("Chainer-GPU-Distributed-Infiniband/job.json", None),
    ("Distributed-Batch-Scoring-in-Tensorflow-with-GPU/job.json", 2),
    ("CNTK-GPU-Python-Distributed/job.json", None), ("CNTK-GPU-BrainScript-Distributed/job.json", 2),
])
def test_mpi_toolkits_run_mpirun_on_the_first_node_over_the_host_file(name, ranks):
    props, tasks = recipe(name)
    settings = next(getattr(props, f) for f in ("horovod_settings", "chainer_settings", "custom_mpi_settings", "cntk_settings") if getattr(props, f))
    ranks = ranks or settings.process_count
    first, *others = tasks
    (launch,) = first.processes
    assert launch.command.startswith(f"{MPIRUN} -np {ranks} --hostfile $AZ_BATCHAI_MPI_HOST_FILE ")
    assert launch.stdout.endswith("/stdouterr/stdout.txt")
    assert all(t.processes == [] and t.holds_only for t in others)
    slots = [int(line.split("slots=")[1]) for line in hostfile(first).splitlines()]
    assert sum(slots) == ranks and len(slots) == props.node_count and max(slots) - min(slots) <= 1
    assert all(hostfile(t) == hostfile(first) for t in others)


def test_custom_mpi_runs_the_command_line_itself():
    props, (first, _) = recipe("Distributed-Batch-Scoring-in-Tensorflow-with-GPU/job.json")
    assert first.processes[0].command.endswith(" " + props.custom_mpi_settings.command_line)


def test_cntk_brainscript_runs_cntk_with_the_config_file():
    props, (first, _) = recipe("CNTK-GPU-BrainScript-Distributed/job.json")
    s = props.cntk_settings
    assert first.processes[0].command.endswith(f" cntk configFile={s.config_file_path} {s.command_line_args}")


@pytest.mark.parametrize("name", ["CNTK-GPU-BrainScript/job.json", "CNTK-GPU-Python/job.json", "Keras-GPU/job_cntk.json"])
def test_single_process_cntk_runs_without_mpi(name):
    _, (task,) = recipe(name)
    assert not task.processes[0].command.startswith("mpirun")


def test_horovod_runs_the_python_script():
    props, (first, _) = recipe("Horovod-Tensorflow/job.json")
    assert first.processes[0].command.endswith(f" {PY} $AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/horovod/tensorflow_mnist.py")


def test_pytorch_gloo_ranks_and_init_method():
    _, tasks = recipe("PyTorch-GPU-Distributed-Gloo/job.json")
    envs = [p.env for t in tasks for p in t.processes]
    assert [e["RANK"] for e in envs] == ["0", "1"] and {e["WORLD_SIZE"] for e in envs} == {"2"}
    assert {e["AZ_BATCHAI_PYTORCH_INIT_METHOD"] for e in envs} == {"tcp://10.0.0.4:2222"}
    assert {e["AZ_BATCHAI_PYTORCH_BACKEND"] for e in envs} == {"gloo"}
    assert tasks[1].processes[0].stdout.endswith("/stdouterr/stdout-1.txt")


def test_caffe2_shards_per_node_with_shared_job_temp():
    _, tasks = recipe("Caffe2-GPU-Distributed/job.json")
    assert [[p.env["AZ_BATCHAI_TASK_INDEX"] for p in t.processes] for t in tasks] == [["0"], ["1"]]
    assert [t.processes[0].stderr.rsplit("/", 1)[1] for t in tasks] == ["stderr-0.txt", "stderr-1.txt"]
    assert "--file_store_path $AZ_BATCHAI_SHARED_JOB_TEMP" in tasks[0].processes[0].command


def test_caffe_solver_and_mpi_when_more_than_one_process():
    body = {"nodeCount": 1, "stdOutErrPathPrefix": "/logs", "caffeSettings": {"configFilePath": "/s/solver.prototxt", "commandLineArgs": "-gpu all"}}
    (task,) = plan_job(load_job_file(body, cluster_id=CLUSTER).properties, ctx(1))
    assert task.processes[0].command == "caffe train --solver=/s/solver.prototxt -gpu all"
    body.update(nodeCount=2, caffeSettings={"pythonScriptFilePath": "/s/train.py"})  # processCount defaults to nodeCount
    first, _ = plan_job(load_job_file(body, cluster_id=CLUSTER).properties, ctx(2))
    assert first.processes[0].command == f"{MPIRUN} -np 2 --hostfile $AZ_BATCHAI_MPI_HOST_FILE {PY} /s/train.py"
