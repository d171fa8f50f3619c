"""The `batchai` CLI against a live `batchai serve`, as a user drives it from a shell."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import as_json
from tests.support.naming import unique_name
from tests.support.waiting import until

WS, EXP = unique_name("cli"), "cliexp"

JOB_FILE = {
    "$schema": "https://raw.githubusercontent.com/Azure/BatchAI/master/schemas/2018-05-01/pytorch.json",
    "properties": {
        "nodeCount": 2,
        "pyTorchSettings": {"pythonScriptFilePath": "<SCRIPT_DIR>/rank.py", "commandLineArgs": "--greeting <GREETING>"},
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT",
        "outputDirectories": [{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT", "pathSuffix": "model"}],
    },
}

RANK_SCRIPT = """\
import os, sys
print(sys.argv[2], "from rank", os.environ["RANK"], "of", os.environ["WORLD_SIZE"], flush=True)
with open(os.path.join(os.environ["AZ_BATCHAI_OUTPUT_MODEL"], f"part-{os.environ['RANK']}.txt"), "w") as f:
    f.write("weights")
"""


@pytest.fixture(scope="module")
def cluster(cli):
    cli("workspace", "create", WS)
    created = as_json(cli("--json", "cluster", "create", "gpu", "-w", WS, "--nodes", "2"))
    assert created["properties"]["nodeStateCounts"]["idleNodeCount"] == 2
    cli("experiment", "create", EXP, "-w", WS)
    return "gpu"


def test_job_file_with_placeholders_runs_and_streams_logs(cli, cluster, tmp_path):
    (tmp_path / "rank.py").write_text(RANK_SCRIPT)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(JOB_FILE))
    created = as_json(
        cli(
            "--json",
            "job",
            "create",
            "torch",
            "-w",
            WS,
            "-e",
            EXP,
            "-c",
            cluster,
            "-f",
            str(job_file),
            "-p",
            f"SCRIPT_DIR={tmp_path}",
            "-p",
            "GREETING=hello",
        )
    )
    assert created["properties"]["toolType"] == "pytorch"
    assert created["properties"]["pyTorchSettings"]["pythonScriptFilePath"] == f"{tmp_path}/rank.py"

    logs = cli("job", "logs", "torch", "-w", WS, "-e", EXP, "--follow").stdout
    assert "[stdout-0.txt] hello from rank 0 of 2" in logs and "[stdout-1.txt] hello from rank 1 of 2" in logs

    waited = cli("job", "wait", "torch", "-w", WS, "-e", EXP)
    assert "succeeded" in waited.stdout
    logs = {f["name"] for f in as_json(cli("--json", "job", "files", "torch", "-w", WS, "-e", EXP))}
    assert {"stdout-0.txt", "stdout-1.txt", "stderr-0.txt", "stderr-1.txt"} <= logs
    model = as_json(cli("--json", "job", "files", "torch", "-w", WS, "-e", EXP, "--output-dir", "MODEL"))
    assert sorted(f["name"] for f in model) == ["part-0.txt", "part-1.txt"]
    assert "torch" in cli("job", "list", "-w", WS, "-e", EXP).stdout


def test_node_count_flag_overrides_the_file_and_its_defaults(cli, cluster, tmp_path):
    (tmp_path / "rank.py").write_text(RANK_SCRIPT)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(JOB_FILE))
    created = as_json(
        cli(
            "--json",
            "job",
            "create",
            "one",
            "-w",
            WS,
            "-e",
            EXP,
            "-c",
            cluster,
            "-f",
            str(job_file),
            "-n",
            "1",
            "-p",
            f"SCRIPT_DIR={tmp_path}",
            "-p",
            "GREETING=hi",
        )
    )
    assert created["properties"]["nodeCount"] == 1
    assert created["properties"]["pyTorchSettings"]["processCount"] == 1
    cli("job", "wait", "one", "-w", WS, "-e", EXP)


def test_failed_job_makes_wait_exit_with_its_exit_code(cli, cluster):
    cli("job", "create", "exit3", "-w", WS, "-e", EXP, "-c", cluster, "--command", "exit 3")
    waited = cli("--json", "job", "wait", "exit3", "-w", WS, "-e", EXP, check=False)
    assert waited.returncode == 3  # as az batchai job wait: scripts see why
    assert as_json(waited)["properties"]["executionInfo"]["exitCode"] == 3


def test_terminate_ends_a_running_job(cli, cluster):
    cli("job", "create", "sleeper", "-w", WS, "-e", EXP, "-c", cluster, "--command", "echo started; sleep 300")
    cli("job", "logs", "sleeper", "-w", WS, "-e", EXP, "--file", "stdout.txt")
    cli("job", "terminate", "sleeper", "-w", WS, "-e", EXP)
    job = as_json(cli("--json", "job", "wait", "sleeper", "-w", WS, "-e", EXP, check=False))
    assert job["properties"]["executionState"] == "failed"
    assert job["properties"]["executionInfo"]["errors"][0]["code"] == "JobTerminated"


def test_errors_are_clear_and_exit_nonzero(cli, cluster, tmp_path):
    missing = cli("job", "show", "nope", "-w", WS, "-e", EXP, check=False)
    assert missing.returncode == 3 and "ResourceNotFound" in missing.stderr  # 3: no such resource (az's)

    bad_file = tmp_path / "bad.json"
    bad_file.write_text(
        json.dumps(
            {
                "properties": {
                    "nodeCount": 1,
                    "stdOutErrPathPrefix": "/tmp",
                    "customToolkitSettings": {"commandLine": "true"},
                    "pyTorchSettings": {"pythonScriptFilePath": "x.py"},
                }
            }
        )
    )
    two = cli("job", "create", "bad", "-w", WS, "-e", EXP, "-c", cluster, "-f", str(bad_file), check=False)
    assert two.returncode == 1 and "toolkit" in two.stderr.lower()

    too_big = cli("job", "create", "big", "-w", WS, "-e", EXP, "-c", cluster, "--command", "true", "-n", "5", check=False)
    assert too_big.returncode == 1 and "properties.nodeCount" in too_big.stderr
    names = [j["name"] for j in as_json(cli("--json", "job", "list", "-w", WS, "-e", EXP))]
    assert "bad" not in names and "big" not in names


def test_workspace_delete_cascades(cli, cluster):
    assert WS in cli("workspace", "list").stdout
    cli("workspace", "delete", WS)
    assert WS not in [w["name"] for w in as_json(cli("--json", "workspace", "list"))]


CHAN_WS = unique_name("chan")


@pytest.fixture(scope="module")
def channels(cli):
    cli("workspace", "create", CHAN_WS)
    cli("cluster", "create", "c", "-w", CHAN_WS, "--nodes", "1")
    cli("experiment", "create", EXP, "-w", CHAN_WS)
    yield "c"
    cli("workspace", "delete", CHAN_WS)


@pytest.mark.parametrize("via", ["http", "queue", "blob"])
def test_job_submit_through_each_channel(cli, channels, tmp_path, via):
    WS = CHAN_WS
    cluster = channels
    job_file = tmp_path / "job.json"
    job_file.write_text(
        json.dumps(
            {
                "properties": {
                    "nodeCount": 1,
                    "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT",
                    "customToolkitSettings": {"commandLine": "echo via <CHANNEL>"},
                }
            }
        )
    )
    cli(
        "job",
        "submit",
        f"by-{via}",
        "-w",
        WS,
        "-e",
        EXP,
        "-c",
        cluster,
        "-f",
        str(job_file),
        "-p",
        f"CHANNEL={via}",
        "--via",
        via,
        "--priority",
        "high",
    )

    def ended():
        done = cli("--json", "job", "show", f"by-{via}", "-w", WS, "-e", EXP, check=False)
        return done.returncode == 0 and as_json(done)["properties"]["executionState"] in ("succeeded", "failed") and done

    done = until(ended, 60, f"job by-{via} to end", interval=0.3)
    assert as_json(done)["properties"]["executionState"] == "succeeded"
    assert f"via {via}" in cli("job", "logs", f"by-{via}", "-w", WS, "-e", EXP).stdout


def test_queue_show_lists_depth_and_dead_letters(cli, server):
    from batchai.adapters.sqlite_queue import SqliteSubmissionQueue

    SqliteSubmissionQueue(server.data_dir / "queue.db").publish("{broken", message_id="broken-one", priority="low")
    out = until(
        lambda: "broken-one" in (shown := cli("queue", "show").stdout) and shown,
        30,
        "the broken message in `batchai queue show`",
        interval=0.3,
    )
    assert "MalformedMessage" in out and "low" in out
