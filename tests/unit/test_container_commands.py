"""Container command lines (pure), and a task whose node has no usable runtime runs on the host with a warning."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from batchai.agent import containers
from batchai.agent.runner import TaskRunner
from batchai.frameworks import LaunchContext, PlacedNode, plan_job
from batchai.frameworks.container import PASSWORD_ENV, ContainerSpec, exec_argv, pull_argvs, remove_argv, run_argv
from batchai.frameworks.plan import NodeTask, Process
from batchai.model import load_job_file

SPEC = ContainerSpec(
    image="tensorflow/tensorflow:1.8.0-gpu",
    name="batchai-u1-1-node-0",
    binds=["/data"],
    shm_size="8g",
    server_url="registry.example",
    username="me",
)


def test_run_keeps_the_container_alive_with_host_network_binds_and_shm():
    assert run_argv("docker", SPEC, "/data/nodes/n0/jobs/u1") == [
        "docker",
        "run",
        "--detach",
        "--rm",
        "--name",
        "batchai-u1-1-node-0",
        "--network",
        "host",
        "--workdir",
        "/data/nodes/n0/jobs/u1",
        "--shm-size",
        "8g",
        "--volume",
        "/data:/data",
        "--entrypoint",
        "",
        "--",
        "tensorflow/tensorflow:1.8.0-gpu",
        "sleep",
        "2147483647",
    ]


def test_the_containers_get_the_jobs_gpus_docker_by_gpus_podman_by_cdi():
    spec = replace(SPEC, gpus=["0", "2"])
    docker = run_argv("docker", spec, "/w")
    assert docker[docker.index("--gpus") + 1] == '"device=0,2"'
    podman = run_argv("/usr/bin/podman", spec, "/w")
    assert "--gpus" not in podman and [podman[i + 1] for i, a in enumerate(podman) if a == "--device"] == [
        "nvidia.com/gpu=0",
        "nvidia.com/gpu=2",
    ]
    assert "--gpus" not in run_argv("docker", SPEC, "/w")  # no GPUs: none asked for


def test_exec_names_variables_without_their_values():
    argv = exec_argv("podman", SPEC, "/w", ["SECRET", "A", "A"], "python train.py")
    assert argv == [
        "podman",
        "exec",
        "--workdir",
        "/w",
        "--env",
        "A",
        "--env",
        "SECRET",
        "--",
        "batchai-u1-1-node-0",
        "/bin/sh",
        "-c",
        "python train.py",
    ]


def test_private_registry_login_reads_the_password_from_stdin():
    assert pull_argvs("docker", SPEC) == [
        ["docker", "login", "--username", "me", "--password-stdin", "--", "registry.example"],
        ["docker", "pull", "--", "tensorflow/tensorflow:1.8.0-gpu"],
    ]
    assert remove_argv("docker", SPEC) == ["docker", "rm", "--force", "--", "batchai-u1-1-node-0"]


def test_an_image_that_looks_like_an_option_stays_an_image():
    argv = run_argv("docker", replace(SPEC, image="--privileged"), "/w")
    assert argv[argv.index("--privileged") - 1] == "--"
    assert pull_argvs("docker", replace(SPEC, image="--privileged"))[-1] == ["docker", "pull", "--", "--privileged"]


def test_the_plan_gives_each_node_task_its_container_and_keeps_the_password_off_command_lines():
    body = {
        "nodeCount": 2,
        "stdOutErrPathPrefix": "/logs",
        "customToolkitSettings": {"commandLine": "true"},
        "containerSettings": {
            "imageSourceRegistry": {"image": "img", "serverUrl": "r.example", "credentials": {"username": "u", "password": "hush"}},
            "shmSize": "1g",
        },
    }
    props = load_job_file(
        body, cluster_id="/subscriptions/s/resourceGroups/r/providers/Microsoft.BatchAI/workspaces/w/clusters/c"
    ).properties
    ctx = LaunchContext(
        job_id="j",
        job_name="j",
        job_uuid="u1",
        attempt=1,
        output_segment="seg",
        cluster_mount_root="/d/c",
        job_dir="/d/jobs/u1",
        nodes=(PlacedNode("a", "node-0", "127.0.0.1", "/d/n0"), PlacedNode("b", "node-1", "127.0.0.1", "/d/n1")),
        master_port=1,
        container_binds=("/d/c", "/d/jobs/u1", "/d/storage"),
    )
    first, second = plan_job(props, ctx)
    assert (first.container.name, second.container.name) == ("batchai-u1-1-node-0", "batchai-u1-1-node-1")
    # the job's own directories and the storage its mounts link to: not the data dir, nor another node's root
    assert set(first.container.binds) >= {"/d/c", "/d/jobs/u1", "/d/storage", "/d/n0/jobs/u1"}
    assert not any(b in ("/d", "/d/n0", "/d/n1") or b.startswith("/d/n1") for b in first.container.binds)
    assert first.container.shm_size == "1g" and first.container.username == "u"
    assert first.env[PASSWORD_ENV] == "hush" and "hush" not in json.dumps(first.container.__dict__)
    assert NodeTask.from_json(json.loads(json.dumps(first.to_json()))) == first


def test_without_a_runtime_the_task_runs_on_the_host_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(containers, "usable_runtime", lambda: None)
    task = NodeTask(
        task_id="t",
        job_id="j",
        node_id="n",
        cwd=str(tmp_path / "wd"),
        env={PASSWORD_ENV: "hush"},
        execution_log=str(tmp_path / "exec.log"),
        container=SPEC,
        processes=[
            Process(
                name="",
                command='echo "on the host ${BATCHAI_REGISTRY_PASSWORD:-without the password}"',
                stdout=str(tmp_path / "out.txt"),
                stderr=str(tmp_path / "err.txt"),
            )
        ],
    )
    result = TaskRunner(task, node_name="node-0", base_env={"PATH": "/usr/bin:/bin"}).run()
    assert result["exitCode"] == 0
    assert "ran on the host" in result["warnings"][0] and SPEC.image in result["warnings"][0]
    assert Path(tmp_path / "out.txt").read_text() == "on the host without the password\n"
