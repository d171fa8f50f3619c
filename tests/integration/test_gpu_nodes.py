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
