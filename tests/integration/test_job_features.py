"""Job preparation, secrets and output directories, as the reference describes them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from azure.mgmt.batchai import models

from tests.integration.conftest import ROOT, TOKEN, sdk_cluster
from tests.support.naming import unique_name
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(180)
RG, WS, EXP = "rg", unique_name("features"), "exp"
SECRET = "s3cr3t-value-" + os.urandom(4).hex()


@pytest.fixture(scope="module")
def cluster(sdk):
    cluster = sdk_cluster(sdk, RG, WS, "c", nodes=2, experiment=EXP)
    yield cluster
    sdk.workspaces.begin_delete(RG, WS).result()


def run(sdk, cluster, name, command, **extra) -> models.Job:
    sdk.jobs.begin_create(
        RG,
        WS,
        EXP,
        name,
        models.JobCreateParameters(
            cluster=models.ResourceId(id=cluster.id),
            node_count=2,
            std_out_err_path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
            custom_toolkit_settings=models.CustomToolkitSettings(command_line=command),
            **extra,
        ),
    ).result()
    return until(
        lambda: (job := sdk.jobs.get(RG, WS, EXP, name)).execution_state in ("succeeded", "failed") and job,
        90,
        f"job {name} to end",
        interval=0.2,
    )


def files(sdk, name, output="stdouterr"):
    return {f.name: f for f in sdk.jobs.list_output_files(RG, WS, EXP, name, models.JobsListOutputFilesOptions(outputdirectoryid=output))}


def test_a_failing_job_preparation_fails_the_job_with_its_logs_listed(sdk, cluster):
    job = run(sdk, cluster, "bad-prep", "echo never", job_preparation=models.JobPreparation(command_line="echo preparing; exit 7"))
    assert job.execution_state == "failed" and job.execution_info.exit_code == 7
    assert "preparation" in job.execution_info.errors[0].message
    listed = files(sdk, "bad-prep")
    assert {"stdout-job_prep.txt", "stderr-job_prep.txt"} <= set(listed) and "stdout.txt" not in listed
    assert set(httpx.get(listed["stdout-job_prep.txt"].download_url).text.splitlines()) == {"preparing"}  # from each node


def test_preparation_shares_the_jobs_environment_and_files(sdk, cluster):
    job = run(
        sdk,
        cluster,
        "prep",
        'test "$(cat $AZ_BATCHAI_JOB_TEMP/prepared)" = "$GREETING"',
        job_preparation=models.JobPreparation(command_line='echo "$GREETING" > $AZ_BATCHAI_JOB_TEMP/prepared'),
        environment_variables=[models.EnvironmentVariable(name="GREETING", value="hi")],
    )
    assert job.execution_state == "succeeded"


def test_secret_values_never_leave_the_job(sdk, server, cluster):
    digest = hashlib.sha256(SECRET.encode()).hexdigest()  # the command may not name the secret itself
    job = run(
        sdk,
        cluster,
        "secret",
        f'test "$(printf %s "$TOKEN_FOR_JOB" | sha256sum | cut -c1-64)" = {digest} && echo the secret is set',
        secrets=[models.EnvironmentVariableWithSecretValue(name="TOKEN_FOR_JOB", value=SECRET)],
    )
    assert job.execution_state == "succeeded"
    assert httpx.get(files(sdk, "secret")["stdout.txt"].download_url).text == "the secret is set\n"
    http = server.http()
    base = f"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/{RG}/providers/Microsoft.BatchAI/workspaces/{WS}"
    answers = [
        http.get(f"{base}/experiments/{EXP}/jobs/secret", params={"api-version": "2018-05-01"}).text,
        http.get(f"{base}/experiments/{EXP}/jobs", params={"api-version": "2018-05-01"}).text,
    ]
    assert [SECRET in a for a in answers] == [False, False] and "TOKEN_FOR_JOB" in answers[0], answers
    env = {**os.environ, "BATCHAI_URL": server.url, "BATCHAI_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
    for args in (
        ["-g", RG, "--json", "job", "show", "secret", "-w", WS, "-e", EXP],
        ["-g", RG, "job", "show", "secret", "-w", WS, "-e", EXP],
    ):
        out = subprocess.run([sys.executable, "-m", "batchai.cli.main", *args], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and SECRET not in out.stdout + out.stderr, out.stderr
    logs = [p for p in Path(server.data_dir).rglob("*") if p.is_file() and p.suffix in (".log", ".txt") or p.name == "serve.log"]
    assert logs and not [p for p in logs if p.is_file() and SECRET in p.read_text(errors="replace")]


def test_an_output_directory_with_a_suffix_lands_where_the_reference_says(sdk, server, cluster):
    job = run(
        sdk,
        cluster,
        "suffix",
        "echo weights > $AZ_BATCHAI_OUTPUT_MODEL/model.bin",
        output_directories=[models.OutputDirectory(id="MODEL", path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/out", path_suffix="Models")],
    )
    assert job.execution_state == "succeeded"
    listed = files(sdk, "suffix", "MODEL")
    assert httpx.get(listed["model.bin"].download_url).text == "weights\n"
    out = next(Path(server.data_dir, "jobs").glob(f"*/mounts/out/{job.job_output_directory_path_segment}/outputs/Models/model.bin"))
    assert out.read_text() == "weights\n"


def test_a_container_job_on_nodes_without_a_runtime_runs_on_the_host_with_a_warning(sdk, server, cluster):
    import shutil

    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        pytest.skip("a docker daemon answers here: test_containers.py covers this case")
    job = run(
        sdk,
        cluster,
        "no-runtime",
        "echo hello from the host",
        container_settings=models.ContainerSettings(image_source_registry=models.ImageSourceRegistry(image="tensorflow/tensorflow:1.8.0")),
    )
    assert job.execution_state == "succeeded"
    http = server.http()
    body = http.get(
        f"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/{RG}/providers/Microsoft.BatchAI"
        f"/workspaces/{WS}/experiments/{EXP}/jobs/no-runtime",
        params={"api-version": "2018-05-01"},
    ).json()
    warnings = [e for e in body["properties"]["events"] if e["event"] == "warning"]
    assert "node-0" in {w["node"] for w in warnings} and "tensorflow/tensorflow:1.8.0" in warnings[0]["message"]
