"""The official azure-mgmt-batchai 7.0.0 SDK, unchanged, against a live `batchai serve`."""

from __future__ import annotations

import os
from datetime import timedelta

import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.batchai import models

from tests.support.naming import unique_name
from tests.support.waiting import until

RG, WS, EXP = "rg", unique_name("sdk"), "exp"
pytestmark = pytest.mark.timeout(180)


def wait_job(sdk, name, timeout=90):
    return until(
        lambda: (job := sdk.jobs.get(RG, WS, EXP, name)).execution_state in ("succeeded", "failed") and job,
        timeout,
        f"job {name} to end",
        interval=0.2,
    )


def files(sdk, job, output_id="stdouterr"):
    return {f.name: f for f in sdk.jobs.list_output_files(RG, WS, EXP, job, models.JobsListOutputFilesOptions(outputdirectoryid=output_id))}


def read(url) -> str:
    return httpx.get(url, timeout=10).text  # no bearer token: the URL is signed


def job_params(cluster_id, nodes=2, **toolkit):
    return models.JobCreateParameters(
        cluster=models.ResourceId(id=cluster_id),
        node_count=nodes,
        std_out_err_path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        output_directories=[models.OutputDirectory(id="OUT", path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/out")],
        environment_variables=[models.EnvironmentVariable(name="GREETING", value="hello")],
        secrets=[models.EnvironmentVariableWithSecretValue(name="SECRET_TOKEN", value="s3cr3t")],
        constraints=models.JobBasePropertiesConstraints(max_wall_clock_time=timedelta(hours=1)),
        **toolkit,
    )


@pytest.fixture(scope="module")
def cluster(sdk):
    ws = sdk.workspaces.begin_create(RG, WS, models.WorkspaceCreateParameters(location="eastus")).result()
    assert ws.provisioning_state == "succeeded"
    cluster = sdk.clusters.begin_create(
        RG,
        WS,
        "c1",
        models.ClusterCreateParameters(
            vm_size="STANDARD_NC6",
            user_account_settings=models.UserAccountSettings(admin_user_name="u", admin_user_password="pw"),
            scale_settings=models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=2)),
        ),
    ).result()
    cluster = until(
        lambda: (c := sdk.clusters.get(RG, WS, "c1")).node_state_counts.idle_node_count == 2 and c.allocation_state == "steady" and c,
        60,
        "2 idle nodes, steady",
        interval=0.2,
    )
    sdk.experiments.begin_create(RG, WS, EXP).result()
    return cluster


def test_custom_toolkit_job_runs_on_two_nodes(sdk, cluster):
    command = (
        "cat $AZ_BATCHAI_MPI_HOST_FILE; echo greeting=$GREETING; "
        'test "$SECRET_TOKEN" = s3cr3t && echo secret-ok; echo model > $AZ_BATCHAI_OUTPUT_OUT/model.txt'
    )
    job = sdk.jobs.begin_create(
        RG, WS, EXP, "custom", job_params(cluster.id, custom_toolkit_settings=models.CustomToolkitSettings(command_line=command))
    ).result()
    assert job.tool_type == "custom" and job.execution_state in ("queued", "running", "succeeded")
    assert job.secrets[0].name == "SECRET_TOKEN" and job.secrets[0].value is None  # never echoed
    job = wait_job(sdk, "custom")
    assert job.execution_state == "succeeded", job.execution_info.as_dict()
    assert job.execution_info.exit_code == 0 and job.execution_info.end_time is not None
    logs = files(sdk, "custom")
    assert {"stdout.txt", "stderr.txt"} <= set(logs) and any(n.startswith("execution") and n.endswith(".log") for n in logs)
    out = read(logs["stdout.txt"].download_url)
    assert "node-0 slots=1\nnode-1 slots=1" in out and "greeting=hello" in out and "secret-ok" in out
    assert "s3cr3t" not in "".join(read(f.download_url) for n, f in logs.items() if n.startswith("execution"))
    outputs = files(sdk, "custom", "OUT")
    assert read(outputs["model.txt"].download_url) == "model\n"


def test_pytorch_job_one_process_per_node(sdk, cluster, tmp_path):
    script = tmp_path / "rank.py"
    script.write_text("import os\nprint('rank', os.environ['RANK'], 'of', os.environ['WORLD_SIZE'], os.environ['AZ_BATCHAI_NODE_NAME'])\n")
    job = sdk.jobs.begin_create(
        RG,
        WS,
        EXP,
        "torch",
        job_params(cluster.id, py_torch_settings=models.PyTorchSettings(python_script_file_path=str(script), communication_backend="gloo")),
    ).result()
    job = wait_job(sdk, "torch")
    assert job.execution_state == "succeeded" and job.tool_type == "pytorch"
    logs = files(sdk, "torch")
    assert read(logs["stdout-0.txt"].download_url) == "rank 0 of 2 node-0\n"
    assert read(logs["stdout-1.txt"].download_url) == "rank 1 of 2 node-1\n"


def test_failing_command_reports_its_exit_code(sdk, cluster):
    sdk.jobs.begin_create(
        RG,
        WS,
        EXP,
        "exit3",
        job_params(cluster.id, nodes=1, custom_toolkit_settings=models.CustomToolkitSettings(command_line="echo bye; exit 3")),
    ).result()
    job = wait_job(sdk, "exit3")
    assert job.execution_state == "failed" and job.execution_info.exit_code == 3


def test_download_honours_range(sdk, cluster):
    url = files(sdk, "exit3")["stdout.txt"].download_url
    response = httpx.get(url, headers={"Range": "bytes=1-"})
    assert response.status_code == 206 and response.text == "ye\n"
    assert httpx.get(url.replace("sig=", "sig=0")).status_code == 403


def test_terminate_kills_processes_on_every_node(sdk, cluster, tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    script = tmp_path / "sleep.py"
    script.write_text(f"import os, time\nopen('{pids}/' + os.environ['RANK'], 'w').write(str(os.getpid()))\ntime.sleep(600)\n")
    sdk.jobs.begin_create(
        RG, WS, EXP, "sleepy", job_params(cluster.id, py_torch_settings=models.PyTorchSettings(python_script_file_path=str(script)))
    ).result()
    until(lambda: len([p for p in pids.iterdir() if p.read_text()]) == 2, 60, "both ranks to write their pid")
    sdk.jobs.begin_terminate(RG, WS, EXP, "sleepy").result()
    job = sdk.jobs.get(RG, WS, EXP, "sleepy")
    assert job.execution_state == "failed"
    assert job.execution_info.errors[0].code == "JobTerminated"
    for pid_file in pids.iterdir():
        pid = int(pid_file.read_text())
        until(lambda: not _alive(pid), 10, f"process {pid} to die with its terminated job")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def test_paging_follows_next_link(sdk, cluster):
    names = [j.name for j in sdk.jobs.list_by_experiment(RG, WS, EXP, models.JobsListByExperimentOptions(max_results=1))]
    assert names[:3] == ["custom", "torch", "exit3"]
    assert [w.name for w in sdk.workspaces.list_by_resource_group(RG)] == [WS]


def test_remote_login_lists_nodes(sdk, cluster):
    nodes = list(sdk.clusters.list_remote_login_information(RG, WS, "c1"))
    assert sorted(n.node_id for n in nodes) == ["node-0", "node-1"]


def test_delete_cascades(sdk, cluster, server):
    sdk.workspaces.begin_delete(RG, WS).result()
    for get in (
        lambda: sdk.workspaces.get(RG, WS),
        lambda: sdk.clusters.get(RG, WS, "c1"),
        lambda: sdk.experiments.get(RG, WS, EXP),
        lambda: sdk.jobs.get(RG, WS, EXP, "custom"),
    ):
        with pytest.raises(ResourceNotFoundError):
            get()
    assert WS not in [w.name for w in sdk.workspaces.list_by_resource_group(RG)]
