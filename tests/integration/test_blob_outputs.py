"""Job logs and outputs in Azure Blob Storage (Azurite): uploaded while the job runs, listed by the
official SDK as SAS URLs that download without the control plane."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from azure.mgmt.batchai import models

from batchai.adapters.azure_blob_store import AzureBlobStore
from tests.integration.conftest import Server, kill_agents, make_sdk, sdk_cluster
from tests.support.naming import unique_name
from tests.support.waiting import until

RG, WS, EXP, CONTAINER = "rg", unique_name("blobs"), "exp", "job-outputs"
LINES = [f"line {i}" for i in range(1, 9)]
# half the lines, then the rest once the test has seen the log in the blob (a file it makes), however slow the machine
COMMAND = (
    "for i in 1 2 3 4; do echo line $i; done; until [ -e {release} ]; do sleep 0.1; done; for i in 5 6 7 8; do echo line $i; done; "
    "echo weights > $AZ_BATCHAI_OUTPUT_OUT/model.bin; "
    "mkdir $AZ_BATCHAI_OUTPUT_OUT/sub && echo deep > $AZ_BATCHAI_OUTPUT_OUT/sub/deep.txt"
)
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def sdk(azurite_connection, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("batchai-blob")
    server = Server(
        data_dir,
        env={"BATCHAI_BLOB_CONNECTION_STRING": azurite_connection, "BATCHAI_BLOB_CONTAINER": CONTAINER, "BATCHAI_BLOB_SYNC_SECONDS": "0.3"},
    ).start()
    yield make_sdk(server)
    server.stop()
    kill_agents(data_dir)


@pytest.fixture(scope="module")
def cluster(sdk):
    cluster = sdk_cluster(sdk, RG, WS, "c1", nodes=1, vm_size="STANDARD_NC6", experiment=EXP, idle=False)
    return cluster


def fetch(url: str | urllib.request.Request) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:  # no bearer token: the SAS is the authorization
        return response.read()


def files(sdk, job: str, output_id: str, directory: str | None = None) -> dict:
    options = models.JobsListOutputFilesOptions(outputdirectoryid=output_id, directory=directory, linkexpiryinminutes=10)
    return {f.name: f for f in sdk.jobs.list_output_files(RG, WS, EXP, job, options)}


def wait_for_log_while_running(sdk, blobs: AzureBlobStore, job: str, timeout: float = 60) -> bytes:
    """The stdout blob's content, read while the job is still running."""

    def read_while_running() -> bytes | None:
        record = sdk.jobs.get(RG, WS, EXP, job)
        assert record.execution_state in ("queued", "running"), "the job ended before its log blob had content"
        if record.execution_state == "running":
            content = blobs.get(f"{record.job_output_directory_path_segment}/stdouterr/stdout.txt")
            if content and sdk.jobs.get(RG, WS, EXP, job).execution_state == "running":
                return content
        return None

    return until(read_while_running, timeout, f"job {job}'s stdout blob while it runs", interval=0.1)


def wait_job(sdk, job: str, timeout: float = 60):
    return until(
        lambda: (r := sdk.jobs.get(RG, WS, EXP, job)).execution_state in ("succeeded", "failed") and r,
        timeout,
        f"job {job} to end",
        interval=0.2,
    )


def test_logs_and_outputs_are_in_blob_storage_while_and_after_the_job_runs(sdk, cluster, azurite_connection, tmp_path):
    sdk.jobs.begin_create(
        RG,
        WS,
        EXP,
        "j1",
        models.JobCreateParameters(
            cluster=models.ResourceId(id=cluster.id),
            node_count=1,
            std_out_err_path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
            output_directories=[models.OutputDirectory(id="OUT", path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/out")],
            custom_toolkit_settings=models.CustomToolkitSettings(command_line=COMMAND.format(release=tmp_path / "release")),
        ),
    ).result()
    blobs = AzureBlobStore(azurite_connection, CONTAINER)

    partial = wait_for_log_while_running(sdk, blobs, "j1")
    assert partial.decode().splitlines() == LINES[: len(partial.decode().splitlines())]
    assert len(partial.decode().splitlines()) < len(LINES)
    (tmp_path / "release").touch()

    job = wait_job(sdk, "j1")
    assert job.execution_state == "succeeded", job.execution_info.as_dict()
    logs = files(sdk, "j1", "stdouterr")
    assert logs["stdout.txt"].download_url.startswith(blobs.container.url + "/")  # Azurite, not the control plane
    assert fetch(logs["stdout.txt"].download_url).decode() == "".join(f"{line}\n" for line in LINES)
    assert logs["stdout.txt"].content_length == len("".join(f"{line}\n" for line in LINES))
    assert logs["stdout.txt"].last_modified is not None
    assert fetch(logs["stderr.txt"].download_url) == b""
    tail = urllib.request.Request(logs["stdout.txt"].download_url, headers={"Range": "bytes=7-"})
    assert fetch(tail).decode() == "".join(f"{line}\n" for line in LINES)[7:]  # `batchai job logs --follow` tails so

    outputs = files(sdk, "j1", "out")  # the id's case does not matter
    assert outputs["sub"].file_type == "directory" and outputs["sub"].download_url is None
    assert fetch(outputs["model.bin"].download_url) == b"weights\n" and outputs["model.bin"].content_length == 8
    deep = files(sdk, "j1", "OUT", directory="sub")
    assert set(deep) == {"deep.txt"} and fetch(deep["deep.txt"].download_url) == b"deep\n"


def test_a_url_without_its_sas_is_refused(sdk):
    url = files(sdk, "j1", "stdouterr")["stdout.txt"].download_url
    assert "sp=r" in url  # read only
    with pytest.raises(urllib.error.HTTPError) as refused:
        fetch(url.split("?")[0])
    assert refused.value.code in (403, 404)
