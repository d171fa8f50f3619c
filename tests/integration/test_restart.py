"""`kill -9` of the control plane mid-run, then a restart on the same data dir; and a SIGTERM that stops its nodes."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from tests.integration.conftest import SUB, Server, agent_pids, kill_agents
from tests.support.naming import unique_name
from tests.support.waiting import until
from tests.unit.test_agent import pid_alive

BASE = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.BatchAI/workspaces/{unique_name('restart')}"
V = {"api-version": "2018-05-01"}
pytestmark = pytest.mark.timeout(180)


def wait_state(http, job, states, timeout=60):
    return until(
        lambda: (
            (state := http.get(f"{BASE}/experiments/e/jobs/{job}", params=V).json()["properties"]["executionState"]) in states and state
        ),
        timeout,
        f"{job} to be {' or '.join(states)}",
        interval=0.2,
    )


def test_kill9_then_restart_finishes_each_job_exactly_once(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    marks = tmp_path / "marks"
    marks.mkdir()
    server = Server(data).start()
    try:
        http = server.http()
        http.put(BASE, params=V, json={"location": "local"})
        http.put(
            f"{BASE}/clusters/c",
            params=V,
            json={
                "properties": {
                    "vmSize": "D1",
                    "userAccountSettings": {"adminUserName": "u"},
                    "scaleSettings": {"manual": {"targetNodeCount": 2}},
                }
            },
        )
        http.put(f"{BASE}/experiments/e", params=V)
        command = f"echo $$ >> {marks}/$JOB.start; sleep 4; echo done >> {marks}/$JOB.end"
        for name in ("long", "queued"):
            body = {
                "properties": {
                    "cluster": {"id": f"{BASE}/clusters/c"},
                    "nodeCount": 2,
                    "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT",
                    "environmentVariables": [{"name": "JOB", "value": name}],
                    "customToolkitSettings": {"commandLine": command},
                }
            }
            assert http.put(f"{BASE}/experiments/e/jobs/{name}", params=V, json=body).status_code == 200
        wait_state(http, "long", ["running"])
        until(lambda: (marks / "long.start").exists(), 30, "the long job's command to start")

        server.kill9()
        time.sleep(1.0)  # how long the control plane stays down (the agents see it gone); no check waits on it
        server.start()
        http = server.http()

        assert wait_state(http, "long", ["succeeded", "failed"]) == "succeeded"
        assert wait_state(http, "queued", ["succeeded", "failed"]) == "succeeded"
        for name in ("long", "queued"):
            assert len((marks / f"{name}.start").read_text().split()) == 1, f"{name} ran more than once"
            assert (marks / f"{name}.end").read_text() == "done\n"
        db = sqlite3.connect(data / "store.db")
        for (internal,) in db.execute("SELECT internal FROM resources WHERE type='jobs'"):
            events = [e["event"] for e in json.loads(internal)["events"]]
            assert sum(e in ("succeeded", "failed") for e in events) == 1, events
    finally:
        server.stop()
        kill_agents(data)


def test_sigterm_leaves_no_agent_and_the_running_job_runs_again_after_restart(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    marks = tmp_path / "marks"
    marks.mkdir()
    server = Server(data, env={"BATCHAI_NODE_TIMEOUT_SECONDS": "3"}).start()
    try:
        http = server.http()
        http.put(BASE, params=V, json={"location": "local"})
        cluster = {"vmSize": "D1", "userAccountSettings": {"adminUserName": "u"}, "scaleSettings": {"manual": {"targetNodeCount": 2}}}
        http.put(f"{BASE}/clusters/c", params=V, json={"properties": cluster})
        http.put(f"{BASE}/experiments/e", params=V)
        # the first attempt runs until it is killed; the second (after the restart) ends at once
        command = f"if [ -e {marks}/pid ]; then exit 0; fi; echo $$ > {marks}/pid; exec sleep 600"
        job = {"cluster": {"id": f"{BASE}/clusters/c"}, "nodeCount": 1, "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT"}
        body = {"properties": {**job, "customToolkitSettings": {"commandLine": command}}}
        assert http.put(f"{BASE}/experiments/e/jobs/busy", params=V, json=body).status_code == 200
        pid = until(lambda: (marks / "pid").exists() and (marks / "pid").read_text().strip(), 60, "the job to start")
        until(lambda: len(agent_pids(server)) == 2, 30, "both agents to be seen")

        server.stop()
        assert server.proc.returncode is not None
        assert agent_pids(server) == {}, "an agent outlived its control plane"
        assert not pid_alive(int(pid)), "a job's process outlived its node"

        server.start()
        assert wait_state(server.http(), "busy", ["succeeded", "failed"]) == "succeeded"
    finally:
        server.stop()
        kill_agents(data)
