"""GPUs without a GPU: a fake `nvidia-smi` on the nodes' PATH answers as a 4-GPU machine does."""

from __future__ import annotations

import json
import os
import sys

import pytest

from tests.integration.conftest import SUB, Server, kill_agents
from tests.support.naming import unique_name
from tests.support.waiting import until

BASE = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.BatchAI/workspaces/{unique_name('gpus')}"
V = {"api-version": "2018-05-01"}
pytestmark = pytest.mark.timeout(180)

FAKE_SMI = """#!/bin/sh
# answers `nvidia-smi --query-gpu=index,name,memory.total,uuid --format=csv,noheader,nounits` as a 4-GPU node
for i in 0 1 2 3; do echo "$i, NVIDIA H200, 143771, GPU-0000000$i-fake-uuid"; done
"""

REPORT = """\
import json, os, pathlib
keys = ("AZ_BATCHAI_NUM_GPUS", "CUDA_VISIBLE_DEVICES", "AZ_BATCHAI_NODE_NAME")
out = pathlib.Path(os.environ["AZ_BATCHAI_OUTPUT_OUT"]) / f"{os.environ['RANK']}.json"
out.write_text(json.dumps({k: os.environ.get(k) for k in keys}))
"""


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("gpus")
    bin_dir = data / "fake-bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    server = Server(data, env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}).start()
    try:
        yield server
    finally:
        server.stop()
        kill_agents(data)


def test_nodes_report_their_gpus_and_a_job_gets_all_of_them(gpu_server, tmp_path):
    http = gpu_server.http()
    http.put(BASE, params=V, json={"location": "local"})
    cluster = {"vmSize": "NC24", "userAccountSettings": {"adminUserName": "u"}, "scaleSettings": {"manual": {"targetNodeCount": 2}}}
    http.put(f"{BASE}/clusters/c", params=V, json={"properties": cluster})
    shown = until(
        lambda: (p := http.get(f"{BASE}/clusters/c", params=V).json()["properties"])["nodeStateCounts"]["idleNodeCount"] == 2 and p,
        60,
        "both nodes to join",
    )
    nodes = http.post(f"{BASE}/clusters/c/listRemoteLoginInformation", params=V).json()["value"]
    print("cluster gpuCount:", shown["gpuCount"], "node list:", [(n["nodeId"], len(n["gpus"]), n["gpus"][0]["name"]) for n in nodes])
    assert shown["gpuCount"] == 8
    assert [len(n["gpus"]) for n in nodes] == [4, 4]
    assert nodes[0]["gpus"][0] == {"index": "0", "name": "NVIDIA H200", "memoryMiB": 143771, "uuid": "GPU-00000000-fake-uuid"}

    script = tmp_path / "report.py"
    script.write_text(REPORT)
    http.put(f"{BASE}/experiments/e", params=V)
    job = {
        "cluster": {"id": f"{BASE}/clusters/c"},
        "nodeCount": 2,
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT",
        "outputDirectories": [{"id": "OUT", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT"}],
        "pyTorchSettings": {"pythonScriptFilePath": str(script), "pythonInterpreterPath": sys.executable},
    }
    assert http.put(f"{BASE}/experiments/e/jobs/whole", params=V, json={"properties": job}).status_code == 200
    state = until(
        lambda: (
            (s := http.get(f"{BASE}/experiments/e/jobs/whole", params=V).json()["properties"]["executionState"]) in ("succeeded", "failed")
            and s
        ),
        120,
        "the job to end",
    )
    assert state == "succeeded"
    listed = http.post(f"{BASE}/experiments/e/jobs/whole/listOutputFiles", params={**V, "outputdirectoryid": "OUT"}).json()["value"]
    seen = [json.loads(http.get(f["downloadUrl"]).content) for f in listed]
    print("what each node's process saw:", seen)
    assert sorted(s["AZ_BATCHAI_NODE_NAME"] for s in seen) == ["node-0", "node-1"]
    assert {(s["AZ_BATCHAI_NUM_GPUS"], s["CUDA_VISIBLE_DEVICES"]) for s in seen} == {("4", "0,1,2,3")}


GATE = """\
import json, os, pathlib, sys, time
here = pathlib.Path(sys.argv[1])
keys = ("AZ_BATCHAI_NUM_GPUS", "CUDA_VISIBLE_DEVICES", "AZ_BATCHAI_NODE_NAME")
(here / (os.environ["AZ_BATCHAI_JOB_NAME"] + ".json")).write_text(json.dumps({k: os.environ.get(k) for k in keys}))
deadline = time.time() + 120
while not (here / "release").exists() and time.time() < deadline:
    time.sleep(0.05)
"""


def test_jobs_with_gpus_per_node_share_a_node_and_a_whole_node_job_waits_for_them(gpu_server, tmp_path):
    """Two 2-GPU jobs on one 4-GPU node at once, with disjoint CUDA_VISIBLE_DEVICES; a job that takes whole
    nodes starts only after both ended (the nodes are those of the test above: two, four GPUs each)."""
    http = gpu_server.http()
    until(lambda: http.get(f"{BASE}/clusters/c", params=V).json()["properties"]["nodeStateCounts"]["idleNodeCount"] == 2, 60, "idle nodes")
    script = tmp_path / "gate.py"
    script.write_text(GATE)

    def submit(name: str, node_count: int, gpus: int | None) -> None:
        job = {
            "cluster": {"id": f"{BASE}/clusters/c"},
            "nodeCount": node_count,
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT",
            "customToolkitSettings": {"commandLine": f"{sys.executable} {script} {tmp_path}"},
            **({"gpusPerNode": gpus} if gpus else {}),
        }
        response = http.put(f"{BASE}/experiments/e/jobs/{name}", params=V, json={"properties": job})
        assert response.status_code == 200, response.text

    def props(name: str) -> dict:
        return http.get(f"{BASE}/experiments/e/jobs/{name}", params=V).json()["properties"]

    submit("share-a", 1, 2)
    submit("share-b", 1, 2)
    seen = until(
        lambda: (
            all((tmp_path / f"share-{x}.json").exists() for x in "ab")
            and [json.loads((tmp_path / f"share-{x}.json").read_text()) for x in "ab"]
        ),
        60,
        "both sharing jobs to run",
    )
    print("what the sharing jobs saw:", seen)
    assert seen[0]["AZ_BATCHAI_NODE_NAME"] == seen[1]["AZ_BATCHAI_NODE_NAME"]  # packed onto one node
    assert [s["AZ_BATCHAI_NUM_GPUS"] for s in seen] == ["2", "2"]
    devices = [set(s["CUDA_VISIBLE_DEVICES"].split(",")) for s in seen]
    assert len(devices[0]) == len(devices[1]) == 2 and not devices[0] & devices[1]

    submit("whole-2", 2, None)
    submit("share-c", 1, 1)  # behind the waiting whole-node job: it waits too
    until(lambda: [e["event"] for e in props("whole-2")["events"]] == ["queued"], 10, "the whole-node job queued")
    assert props("whole-2")["executionState"] == props("share-c")["executionState"] == "queued"

    (tmp_path / "release").touch()
    for name in ("share-a", "share-b", "whole-2", "share-c"):
        until(lambda name=name: props(name)["executionState"] == "succeeded", 60, f"{name} to succeed")
    ends = [props(f"share-{x}")["executionInfo"]["endTime"] for x in "ab"]
    assert props("whole-2")["executionInfo"]["startTime"] >= max(ends)
    # the sharing job behind it waited for it (it takes both nodes whole), not only for a free GPU
    assert props("share-c")["executionInfo"]["startTime"] >= props("whole-2")["executionInfo"]["endTime"]
    whole = json.loads((tmp_path / "whole-2.json").read_text())
    assert (whole["AZ_BATCHAI_NUM_GPUS"], whole["CUDA_VISIBLE_DEVICES"]) == ("4", "0,1,2,3")
