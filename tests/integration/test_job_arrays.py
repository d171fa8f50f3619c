"""Job arrays (`arraySettings`): count tasks of one spec on a live control plane, each told its index,
a failed one retried alone, listed with their own outputs, terminated together."""

from __future__ import annotations

import json
import secrets
import subprocess

import httpx
import pytest

from tests.integration.conftest import ROOT, as_json, sdk_cluster
from tests.support.naming import unique_name
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(300)
RG, WS, EXP = "rg", unique_name("arrays"), "exp"
API = {"api-version": "2018-05-01"}


@pytest.fixture(scope="module")
def cluster(sdk):
    cluster = sdk_cluster(sdk, RG, WS, "c", nodes=2, experiment=EXP)
    yield cluster
    sdk.workspaces.begin_delete(RG, WS).result()


@pytest.fixture(scope="module")
def http(server):
    with server.http() as client:
        yield client


def job_url(name: str) -> str:
    return f"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/{RG}/providers/Microsoft.BatchAI/workspaces/{WS}/experiments/{EXP}/jobs/{name}"


def array_body(cluster_id: str, command: str, **settings) -> dict:
    return {
        "properties": {
            "cluster": {"id": cluster_id},
            "nodeCount": 1,
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
            "outputDirectories": [{"id": "OUT", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/outputs"}],
            "customToolkitSettings": {"commandLine": command},
            "arraySettings": settings,
        }
    }


def get(http: httpx.Client, path: str, **params) -> dict:
    response = http.get(path, params={**API, **params})
    assert response.status_code == 200, response.text
    return response.json()


def all_pages(http: httpx.Client, path: str) -> list[dict]:
    page = get(http, path)
    items = page["value"]
    while page.get("nextLink"):
        page = http.get(page["nextLink"]).json()
        items += page["value"]
    return items


def ended(http: httpx.Client, name: str) -> dict:
    return until(
        lambda: (job := get(http, job_url(name)))["properties"]["executionState"] in ("succeeded", "failed") and job,
        180,
        f"array {name} to end",
        interval=0.3,
    )


def test_an_array_of_200_runs_each_index_once_and_retries_the_failed_task_alone(sdk, http, cluster, tmp_path):
    marker = tmp_path / "task-7-failed-once"
    command = (
        f'if [ "$AZ_BATCHAI_TASK_INDEX" = 7 ] && [ ! -e {marker} ]; then touch {marker}; echo failing >&2; exit 3; fi; '
        'echo "task $AZ_BATCHAI_TASK_INDEX of $AZ_BATCHAI_TASK_COUNT" > "$AZ_BATCHAI_OUTPUT_OUT/result.txt"'
    )
    created = http.put(job_url("scoring"), params=API, json=array_body(cluster.id, command, count=200, maxTaskRetries=1))
    assert created.status_code == 200, created.text
    assert created.json()["properties"]["arrayInfo"]["queuedTaskCount"] == 200

    job = ended(http, "scoring")
    assert job["properties"]["executionState"] == "succeeded", job["properties"]
    info = job["properties"]["arrayInfo"]
    assert info["taskCount"] == 200 and info["succeededTaskCount"] == 200 and info["failedTaskCount"] == 0

    tasks = all_pages(http, job_url("scoring") + "/tasks")
    assert [t["properties"]["index"] for t in tasks] == list(range(200))
    attempts = {t["properties"]["index"]: t["properties"]["attempts"] for t in tasks}
    assert attempts[7] == 2, "task 7 failed once and was retried"
    assert all(n == 1 for i, n in attempts.items() if i != 7)
    assert [e["event"] for e in tasks[7]["properties"]["events"]].count("failed, retrying") == 1

    # each task's outputs are its own
    for index in (0, 7, 199):
        listed = http.post(job_url("scoring") + f"/tasks/{index}/listOutputFiles", params={**API, "outputdirectoryid": "OUT"}).json()
        files = {f["name"]: f for f in listed["value"]}
        assert httpx.get(files["result.txt"].get("downloadUrl")).text.strip() == f"task {index} of 200"
    # the SDK lists the array as one job of the experiment, not its tasks
    assert [j.name for j in sdk.jobs.list_by_experiment(RG, WS, EXP)].count("scoring") == 1
    assert not any(j.name.isdigit() for j in sdk.jobs.list_by_experiment(RG, WS, EXP))


def test_max_parallel_bounds_the_running_tasks_and_terminate_stops_every_one(http, cluster):
    sleep = f"3600.{secrets.randbelow(10**6)}"  # names this test's processes
    created = http.put(job_url("sleepers"), params=API, json=array_body(cluster.id, f"sleep {sleep}", count=5, maxParallel=1))
    assert created.status_code == 200, created.text

    def running() -> int:
        return get(http, job_url("sleepers"))["properties"]["arrayInfo"]["runningTaskCount"]

    until(lambda: running() == 1 and get(http, job_url("sleepers"))["properties"]["executionState"] == "running", 60, "a running task")
    processes = lambda: subprocess.run(["pgrep", "-f", f"sleep {sleep}"], capture_output=True, text=True).stdout.split()  # noqa: E731
    until(lambda: len(processes()) == 1, 30, "one sleeping task process")
    assert running() == 1  # the second node is idle, and maxParallel holds the other tasks back

    assert http.post(job_url("sleepers") + "/terminate", params=API).status_code == 202
    job = ended(http, "sleepers")
    assert job["properties"]["executionState"] == "failed"
    assert job["properties"]["executionInfo"]["errors"][0]["code"] == "JobTerminated"
    assert job["properties"]["arrayInfo"]["failedTaskCount"] == 5
    until(lambda: not processes(), 30, "no task process left")


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"count": 0}, "count"),
        ({"count": 10_001}, "count"),
        ({"count": 3, "maxParallel": 0}, "maxParallel"),
        ({"count": 3, "maxTaskRetries": 101}, "maxTaskRetries"),
        ({"maxParallel": 2}, "count"),
    ],
)
def test_bad_array_settings_are_refused_naming_the_field_and_store_nothing(http, cluster, settings, field):
    name = unique_name("bad-array")
    response = http.put(job_url(name), params=API, json=array_body(cluster.id, "true", **settings))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert field in (error.get("target") or "") + error["message"]
    assert http.get(job_url(name), params=API).status_code == 404


def test_the_batch_scoring_example_splits_its_inputs_across_the_tasks(http, cluster):
    example = ROOT / "examples" / "batch-scoring"
    body = json.loads((example / "job.json").read_text().replace("<EXAMPLE_DIR>", str(example)))
    body["properties"]["cluster"] = {"id": cluster.id}
    assert http.put(job_url("score"), params=API, json=body).status_code == 200
    job = ended(http, "score")
    assert job["properties"]["executionState"] == "succeeded", job["properties"]
    count = body["properties"]["arraySettings"]["count"]
    scored = []
    for index in range(count):
        listed = http.post(job_url("score") + f"/tasks/{index}/listOutputFiles", params={**API, "outputdirectoryid": "SCORES"}).json()
        url = next(f["downloadUrl"] for f in listed["value"] if f["name"] == "scores.csv")
        scored += [row.split(",")[0] for row in httpx.get(url).text.splitlines()[1:]]
    inputs = [line.split(",")[0] for line in (example / "inputs.txt").read_text().splitlines()]
    assert sorted(scored) == sorted(inputs)  # every item scored once, by one task


def test_the_cli_creates_an_array_waits_for_it_and_lists_its_tasks(cli, http, cluster):
    cli("-g", RG, "job", "create", "cli-array", "-w", WS, "-e", EXP, "-c", "c", "--command", "echo $AZ_BATCHAI_TASK_INDEX", "--array", "3")
    assert ended(http, "cli-array")["properties"]["executionState"] == "succeeded"
    tasks = as_json(cli("-g", RG, "job", "tasks", "cli-array", "-w", WS, "-e", EXP, "-o", "json"))
    assert [(t["properties"]["index"], t["properties"]["executionState"]) for t in tasks] == [(i, "succeeded") for i in range(3)]
    shown = cli(
        "-g", RG, "job", "show", "cli-array", "-w", WS, "-e", EXP, "-o", "tsv", "--query", "properties.arrayInfo.succeededTaskCount"
    )
    assert shown.stdout.strip() == "3"
    refused = cli(
        "-g", RG, "job", "create", "cli-bad", "-w", WS, "-e", EXP, "-c", "c", "--command", "true", "--max-parallel", "2", check=False
    )
    assert refused.returncode != 0 and "--array" in refused.stderr
