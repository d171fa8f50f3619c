"""Every original recipe through its launch plan: commands, environment and host files per node."""

from __future__ import annotations

import json
from dataclasses import replace
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
        job_id="jid",
        job_name="j",
        job_uuid="u1",
        attempt=1,
        output_segment="seg",
        cluster_mount_root="/data/c/mounts",
        job_dir="/data/jobs/u1",
        nodes=tuple(PlacedNode(f"id{i}", f"node-{i}", f"10.0.0.{4 + i}", f"/data/nodes/node-{i}", 7000 + i) for i in range(nodes)),
        master_port=2222,
        python=PY,
        mpirun=MPIRUN,
        exec_secret="s3cret",
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
        "task": {"type": "worker", "index": 1},
        "environment": "cloud",
    }
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


@pytest.mark.parametrize(
    "name,ranks",
    [
        ("Horovod-Tensorflow/job.json", 2),
        ("Horovod-PyTorch/job.json", None),
        ("Horovod-Infiniband-Benchmark/job.json", None),
        ("Chainer-GPU-Distributed/job.json", None),
        ("Chainer-GPU-Distributed-Infiniband/job.json", None),
        ("Distributed-Batch-Scoring-in-Tensorflow-with-GPU/job.json", 2),
        ("CNTK-GPU-Python-Distributed/job.json", None),
        ("CNTK-GPU-BrainScript-Distributed/job.json", 2),
    ],
)
def test_mpi_toolkits_run_mpirun_on_the_first_node_over_the_host_file(name, ranks):
    props, tasks = recipe(name)
    settings = next(
        getattr(props, f) for f in ("horovod_settings", "chainer_settings", "custom_mpi_settings", "cntk_settings") if getattr(props, f)
    )
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
    body = {
        "nodeCount": 1,
        "stdOutErrPathPrefix": "/logs",
        "caffeSettings": {"configFilePath": "/s/solver.prototxt", "commandLineArgs": "-gpu all"},
    }
    (task,) = plan_job(load_job_file(body, cluster_id=CLUSTER).properties, ctx(1))
    assert task.processes[0].command == "caffe train --solver=/s/solver.prototxt -gpu all"
    body.update(nodeCount=2, caffeSettings={"pythonScriptFilePath": "/s/train.py"})  # processCount defaults to nodeCount
    first, _ = plan_job(load_job_file(body, cluster_id=CLUSTER).properties, ctx(2))
    assert first.processes[0].command == f"{MPIRUN} -np 2 --hostfile $AZ_BATCHAI_MPI_HOST_FILE {PY} /s/train.py"


# Every recipe, exactly: per node of the job, its processes as (log name, command) and, for the
# MPI toolkits, the world size; the host file every node gets. MPI launches are `mpirun` on the
# first node only; the other nodes run nothing of their own (remote ranks arrive through mpirun).
JMR = "$AZ_BATCHAI_JOB_MOUNT_ROOT"


def mpi(ranks: int, command: str) -> str:
    return f"{MPIRUN} -np {ranks} --hostfile $AZ_BATCHAI_MPI_HOST_FILE {command}"


ONE = "node-0 slots=1\n"
TWO = "node-0 slots=1\nnode-1 slots=1\n"
EIGHT = "node-0 slots=4\nnode-1 slots=4\n"
EXACT = {
    "CNTK-GPU-BrainScript/job.json": (
        ONE,
        [
            [
                (
                    "",
                    "cntk configFile=$AZ_BATCHAI_INPUT_CONFIG/ConvNet_MNIST.cntk rootDir=. "
                    "dataDir=$AZ_BATCHAI_INPUT_DATASET outputDir=$AZ_BATCHAI_OUTPUT_MODEL",
                )
            ]
        ],
    ),
    "CNTK-GPU-BrainScript-Distributed/job.json": (
        TWO,
        [
            [
                (
                    "",
                    mpi(
                        2,
                        "cntk configFile=$AZ_BATCHAI_INPUT_CONFIG/DistributedConvNet_MNIST.cntk "
                        "rootDir=. dataDir=$AZ_BATCHAI_INPUT_DATASET outputDir=$AZ_BATCHAI_OUTPUT_MODEL "
                        "parallelTrain=true",
                    ),
                )
            ],
            [],
        ],
    ),
    "CNTK-GPU-Python/job.json": (ONE, [[("", f"{PY} {JMR}/scripts/cntk/ConvNet_MNIST.py {JMR}/data/mnist_data $AZ_BATCHAI_OUTPUT_MODEL")]]),
    "CNTK-GPU-Python-Distributed/job.json": (
        TWO,
        [
            [
                (
                    "",
                    mpi(
                        2,
                        f"{PY} {JMR}/scripts/cntk/ConvNet_CIFAR10_DataAug_Distributed.py "
                        "--datadir $AZ_BATCHAI_JOB_TEMP --outputdir $AZ_BATCHAI_OUTPUT_MODEL -n 5",
                    ),
                )
            ],
            [],
        ],
    ),
    "CNTK-GPU-Python-Distributed-Infiniband/job.json": (
        EIGHT,
        [
            [
                (
                    "",
                    mpi(
                        8,
                        f"{PY} {JMR}/scripts/cntk/TrainResNet_CIFAR10_Distributed.py "
                        "--datadir $AZ_BATCHAI_JOB_TEMP -outputdir $AZ_BATCHAI_OUTPUT_MODEL -n resnet110 -e 5",
                    ),
                )
            ],
            [],
        ],
    ),
    "Caffe2-GPU-Distributed/job.json": (
        TWO,
        [
            [
                (
                    str(i),
                    f"{PY} {JMR}/scripts/caffe2/resnet50_trainer.py --num_shards 2 --shard_id $AZ_BATCHAI_TASK_INDEX "
                    f"--run_id 0 --epoch_size 2000 --num_epochs 5 --train_data {JMR}/data/mnist_data/mnist_train_lmdb "
                    "--file_store_path $AZ_BATCHAI_SHARED_JOB_TEMP",
                )
            ]
            for i in range(2)
        ],
    ),
    "Chainer-GPU-Distributed/job.json": (
        TWO,
        [[("", mpi(2, f"{PY} {JMR}/scripts/chainer/train_mnist.py -g -o $AZ_BATCHAI_OUTPUT_MODEL"))], []],
    ),
    "Chainer-GPU-Distributed-Infiniband/job.json": (
        EIGHT,
        [[("", mpi(8, f"{PY} {JMR}/scripts/chainer/train_mnist.py -g --communicator non_cuda_aware -o $AZ_BATCHAI_OUTPUT_MODEL"))], []],
    ),
    "Distributed-Batch-Scoring-in-Tensorflow-with-GPU/job.json": (
        TWO,
        [
            [
                (
                    "",
                    mpi(
                        2,
                        "python -u $AZ_BATCHAI_INPUT_SCRIPT/batch_image_label.py "
                        "--dataset_path $AZ_BATCHAI_INPUT_IMAGES --model_path $AZ_BATCHAI_INPUT_MODEL/inception_v3.ckpt "
                        "--label_path $AZ_BATCHAI_INPUT_MODEL/imagenet_slim_labels.txt --output_dir $AZ_BATCHAI_OUTPUT_LABEL --batch_size 64",
                    ),
                )
            ],
            [],
        ],
    ),
    "Horovod-Infiniband-Benchmark/job.json": (
        EIGHT,
        [
            [
                (
                    "",
                    mpi(
                        8,
                        f"{PY} $AZ_BATCHAI_JOB_TEMP/benchmarks/scripts/tf_cnn_benchmarks/tf_cnn_benchmarks.py "
                        "--model resnet101 --batch_size 64 --variable_update horovod",
                    ),
                )
            ],
            [],
        ],
    ),
    "Horovod-PyTorch/job.json": (TWO, [[("", mpi(2, f"{PY} {JMR}/scripts/horovod/pytorch_mnist.py"))], []]),
    "Horovod-Tensorflow/job.json": (TWO, [[("", mpi(2, f"{PY} {JMR}/scripts/horovod/tensorflow_mnist.py"))], []]),
    "Keras-GPU/job_cntk.json": (ONE, [[("", f"{PY} {JMR}/scripts/keras/mnist_cnn.py")]]),
    "Keras-GPU/job_tensorflow.json": (ONE, [[("wk-0", f"{PY} {JMR}/scripts/keras/mnist_cnn.py")]]),
    "PyTorch-GPU-Distributed-Gloo/job.json": (
        TWO,
        [
            [
                (
                    str(i),
                    f"{PY} {JMR}/scripts/pytorch/mnist_trainer.py --epochs 10 --world-size 2 "
                    "--dist-backend gloo --dist-url $AZ_BATCHAI_PYTORCH_INIT_METHOD --rank $AZ_BATCHAI_TASK_INDEX",
                )
            ]
            for i in range(2)
        ],
    ),
    "TensorFlow-GPU/job.json": (ONE, [[("wk-0", f"{PY} {JMR}/scripts/tensorflow/convolutional.py")]]),
    "TensorFlow-GPU-Distributed/job.json": (
        "node-0 slots=2\nnode-1 slots=1\n",
        [
            [
                (
                    "wk-0",
                    f"{PY} {JMR}/scripts/tensorflow/mnist_replica.py --job_name=worker --num_gpus=1 --ps_hosts=$AZ_BATCHAI_PS_HOSTS "
                    "--worker_hosts=$AZ_BATCHAI_WORKER_HOSTS --train_steps 10000 --checkpoint_dir=$AZ_BATCHAI_OUTPUT_MODEL "
                    "--log_dir=$AZ_BATCHAI_OUTPUT_TENSORBOARD --task_index=$AZ_BATCHAI_TASK_INDEX --data_dir=$AZ_BATCHAI_INPUT_DATASET",
                )
            ],
            [
                (
                    "wk-1",
                    f"{PY} {JMR}/scripts/tensorflow/mnist_replica.py --job_name=worker --num_gpus=1 --ps_hosts=$AZ_BATCHAI_PS_HOSTS "
                    "--worker_hosts=$AZ_BATCHAI_WORKER_HOSTS --train_steps 10000 --checkpoint_dir=$AZ_BATCHAI_OUTPUT_MODEL "
                    "--log_dir=$AZ_BATCHAI_OUTPUT_TENSORBOARD --task_index=$AZ_BATCHAI_TASK_INDEX --data_dir=$AZ_BATCHAI_INPUT_DATASET",
                )
            ],
        ],
    ),
}


def test_the_exact_table_covers_every_recipe():
    assert sorted(EXACT) == ALL and len(ALL) == 17


@pytest.mark.parametrize("name", ALL)
def test_recipe_plan_exactly(name):
    props, tasks = recipe(name)
    hosts, per_node = EXACT[name]
    main_tasks = [t for t in tasks if t.after is None]
    assert [[(p.name, p.command) for p in t.processes] for t in main_tasks] == per_node
    for t in main_tasks:
        stdouterr = t.env["AZ_BATCHAI_STDOUTERR_DIR"]
        assert t.files == {f"{t.cwd}/hostfile": hosts} and t.env["AZ_BATCHAI_MPI_HOST_FILE"] == f"{t.cwd}/hostfile"
        assert t.execution_log.startswith(f"{stdouterr}/execution") and t.execution_log.endswith(".log")
        for p in t.processes:
            stem = f"-{p.name}" if p.name else ""
            assert (p.stdout, p.stderr) == (f"{stdouterr}/stdout{stem}.txt", f"{stdouterr}/stderr{stem}.txt")
            assert not p.daemon
    launches = [p for t in main_tasks for p in t.processes if p.command.startswith(MPIRUN)]
    if launches:  # an MPI job: the world is the -np of the one launch, and the host file's slots add up to it
        (launch,) = launches
        assert main_tasks[0].processes == [launch] and all(t.processes == [] and t.holds_only for t in main_tasks[1:])
        world = int(launch.command.split(" -np ")[1].split()[0])
        assert world == sum(int(line.split("slots=")[1]) for line in hosts.splitlines())
        assert " -x " not in launch.command and launch.env == {}  # ranks take their own node's task environment


def test_tensorflow_environment_exactly_for_every_process():
    props, tasks = recipe("TensorFlow-GPU-Distributed/job.json")
    procs = {p.name: p for t in tasks for p in t.processes}
    assert sorted(procs) == ["ps-0", "wk-0", "wk-1"]
    cluster = {"ps": ["10.0.0.4:2222"], "worker": ["10.0.0.4:2223", "10.0.0.5:2224"]}
    for name, (role, index) in {"ps-0": ("ps", 0), "wk-0": ("worker", 0), "wk-1": ("worker", 1)}.items():
        env = dict(procs[name].env)
        assert json.loads(env.pop("TF_CONFIG")) == {"cluster": cluster, "task": {"type": role, "index": index}, "environment": "cloud"}
        assert env == {
            "AZ_BATCHAI_TASK_INDEX": str(index),
            "AZ_BATCHAI_PS_HOSTS": "10.0.0.4:2222",
            "AZ_BATCHAI_WORKER_HOSTS": "10.0.0.4:2223,10.0.0.5:2224",
        }
    (servers,) = [t for t in tasks if t.after]
    assert servers.node_id == "id0" and servers.preparation is None and servers.files == {} and servers.holds_only
    assert servers.processes[0].command == (
        f"{PY} {JMR}/scripts/tensorflow/mnist_replica.py --job_name=ps --num_gpus=0 --ps_hosts=$AZ_BATCHAI_PS_HOSTS "
        f"--worker_hosts=$AZ_BATCHAI_WORKER_HOSTS --task_index=$AZ_BATCHAI_TASK_INDEX --data_dir={JMR}/data/mnist_data"
    )
    assert (servers.processes[0].stdout.rsplit("/", 1)[1], servers.processes[0].stderr.rsplit("/", 1)[1]) == (
        "stdout-ps-0.txt",
        "stderr-ps-0.txt",
    )


@pytest.mark.parametrize("name", ["TensorFlow-GPU/job.json", "Keras-GPU/job_tensorflow.json"])
def test_single_node_tensorflow_environment_exactly(name):
    _, (task,) = recipe(name)
    env = dict(task.processes[0].env)
    assert json.loads(env.pop("TF_CONFIG")) == {
        "cluster": {"worker": ["10.0.0.4:2222"]},
        "task": {"type": "worker", "index": 0},
        "environment": "cloud",
    }
    assert env == {"AZ_BATCHAI_TASK_INDEX": "0", "AZ_BATCHAI_PS_HOSTS": "", "AZ_BATCHAI_WORKER_HOSTS": "10.0.0.4:2222"}


def test_tensorflow_more_workers_than_nodes_round_robin_with_distinct_ports():
    body = {
        "nodeCount": 2,
        "stdOutErrPathPrefix": "/logs",
        "tensorFlowSettings": {
            "pythonScriptFilePath": "t.py",
            "workerCount": 3,
            "parameterServerCount": 2,
            "workerCommandLineArgs": "w",
            "parameterServerCommandLineArgs": "p",
        },
    }
    props = load_job_file(body, cluster_id=CLUSTER).properties
    local = replace(ctx(2), nodes=tuple(PlacedNode(f"id{i}", f"node-{i}", "127.0.0.1", f"/n{i}") for i in range(2)))  # one shared address
    tasks = plan_job(props, local)
    layout = [(t.node_id, [p.name for p in t.processes], t.after is not None) for t in tasks]
    assert layout == [("id0", ["wk-0", "wk-2"], False), ("id0", ["ps-0"], True), ("id1", ["wk-1"], False), ("id1", ["ps-1"], True)]
    env = tasks[0].processes[0].env
    assert env["AZ_BATCHAI_PS_HOSTS"] == "127.0.0.1:2222,127.0.0.1:2223"  # ps j at master_port + j
    assert env["AZ_BATCHAI_WORKER_HOSTS"] == "127.0.0.1:2224,127.0.0.1:2225,127.0.0.1:2226"  # worker i at + ps count + i
    assert tasks[0].processes[0].command == f"{PY} t.py w"  # no masterCommandLineArgs: worker 0 takes the workers'
    assert [json.loads(p.env["TF_CONFIG"])["task"] for t in tasks for p in t.processes] == [
        {"type": "worker", "index": 0},
        {"type": "worker", "index": 2},
        {"type": "ps", "index": 0},
        {"type": "worker", "index": 1},
        {"type": "ps", "index": 1},
    ]
    assert tasks[0].files[tasks[0].env["AZ_BATCHAI_MPI_HOST_FILE"]] == "node-0 slots=3\nnode-1 slots=2\n"


def test_mpi_ranks_split_unevenly_over_the_host_file():
    body = {"nodeCount": 2, "stdOutErrPathPrefix": "/logs", "customMpiSettings": {"commandLine": "hostname", "processCount": 5}}
    first, second = plan_job(load_job_file(body, cluster_id=CLUSTER).properties, ctx(2))
    assert first.processes[0].command == mpi(5, "hostname") and second.processes == []
    assert (
        first.files[first.env["AZ_BATCHAI_MPI_HOST_FILE"]]
        == second.files[second.env["AZ_BATCHAI_MPI_HOST_FILE"]]
        == "node-0 slots=3\nnode-1 slots=2\n"
    )


def test_launch_plans_import_without_third_party_packages():
    import subprocess
    import sys

    code = (
        "import sys, batchai.frameworks as f, batchai.frameworks.plan;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'azure', 'msrest'));"
        "assert not bad, bad; assert set(f.PLANNERS) == {'custom', 'pytorch', 'tensorflow', 'horovod', 'custommpi', 'chainer', 'cntk', 'caffe', 'caffe2'}"
    )
    subprocess.run([sys.executable, "-S", "-c", code], check=True, cwd=Path(__file__).parents[2])
