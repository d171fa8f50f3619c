"""`batchai serve` with API workers: processes beside the primary that serve the same socket.

Each process answers requests (ARM and node door alike); jobs submitted through any of them run
exactly once; the workers end with the primary, whether it stops or is killed -9.
"""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.integration.conftest import SUB, TOKEN, Server, kill_agents
from tests.support.naming import unique_name
from tests.support.waiting import until

V = {"api-version": "2018-05-01"}
pytestmark = pytest.mark.timeout(180)


def worker_pids(data_dir) -> set[int]:
    out = subprocess.run(["pgrep", "-f", f"function_app.embedded --api-worker {data_dir}"], capture_output=True, text=True).stdout
    return {int(pid) for pid in out.split()}


def test_api_workers_answer_beside_the_primary_and_jobs_through_any_of_them_run_once(tmp_path):
    server = Server(tmp_path, env={"BATCHAI_API_WORKERS": "2"}).start()
    base = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.BatchAI/workspaces/{unique_name('workers')}"
    try:
        # the control plane announces itself (its control-plane file) once its workers serve, not before
        assert "2 API workers serving" in (tmp_path / "serve.log").read_text()
        workers = worker_pids(tmp_path)
        assert len(workers) == 2
        answered: set[int] = set()
        # a new connection each time: the kernel hands it to any process on the socket
        until(
            lambda: answered.add(httpx.get(f"{server.url}/healthz").json()["pid"]) or answered == workers | {server.proc.pid},
            30,
            "every process to answer",
        )
        http = server.http()
        http.put(base, params=V, json={"location": "local"}).raise_for_status()
        cluster = {"vmSize": "D1", "userAccountSettings": {"adminUserName": "u"}, "scaleSettings": {"manual": {"targetNodeCount": 2}}}
        http.put(f"{base}/clusters/c", params=V, json={"properties": cluster}).raise_for_status()
        http.put(f"{base}/experiments/e", params=V).raise_for_status()
        marks = tmp_path / "marks"
        marks.mkdir()
        names = [f"j{i}" for i in range(12)]
        for name in names:
            body = {
                "properties": {
                    "cluster": {"id": f"{base}/clusters/c"},
                    "nodeCount": 1,
                    "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT",
                    "customToolkitSettings": {"commandLine": f"echo run >> {marks}/{name}"},
                }
            }
            headers = {"Authorization": f"Bearer {TOKEN}"}
            httpx.put(f"{server.url}{base}/experiments/e/jobs/{name}", params=V, json=body, headers=headers).raise_for_status()

        def states() -> list[str]:
            return [j["properties"]["executionState"] for j in http.get(f"{base}/experiments/e/jobs", params=V).json()["value"]]

        until(lambda: states().count("succeeded") == len(names), 120, "every job to succeed")
        for name in names:
            assert (marks / name).read_text() == "run\n", f"{name} did not run exactly once"
    finally:
        server.stop()
        kill_agents(tmp_path)
    until(lambda: not worker_pids(tmp_path), 15, "the API workers to stop with the primary")


def test_api_workers_end_when_their_primary_is_killed_9(tmp_path):
    server = Server(tmp_path, env={"BATCHAI_API_WORKERS": "1"}).start()
    try:
        until(lambda: len(worker_pids(tmp_path)) == 1, 30, "the API worker")
        server.kill9()
        until(lambda: not worker_pids(tmp_path), 15, "the API worker to end with its primary")
    finally:
        server.stop()
        kill_agents(tmp_path)
