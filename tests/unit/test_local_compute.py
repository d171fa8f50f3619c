"""LocalCompute: node agents as local processes, against the fake control plane of test_agent.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

# compute, cp, cp_file, node, nodes: the fake control plane's fixtures (F401, and F811 where a test requests them)
from test_agent import (  # noqa: E402,F401
    CLUSTER_ID,
    HEARTBEAT,
    TOKEN,
    compute,
    cp,
    cp_file,
    exec_pid,
    make_task,
    node,
    nodes,
    pid_alive,
)

from batchai.adapters.local_compute import LocalCompute  # noqa: E402
from tests.support.waiting import until  # noqa: E402

pytestmark = pytest.mark.timeout(30)


def test_node_root_is_created(tmp_path):
    lc = LocalCompute(tmp_path / "data", control_plane_file=tmp_path / "cp.json", credential=lambda node_id: TOKEN)
    root = lc.node_root("c1", "node-3")
    assert root == tmp_path / "data" / "nodes" / "c1" / "node-3"
    assert root.is_dir()


def test_start_node_runs_an_agent_in_its_own_session(cp, nodes):
    node = nodes.start("node-1")
    assert node["address"] == "127.0.0.1"
    assert node["root"] == str(nodes.compute.node_root("c1", "node-1"))
    body = cp.wait_registered(node["id"])
    assert body["pid"] == node["pid"] and body["root"] == node["root"]
    assert nodes.compute.is_alive(node)
    assert os.getsid(node["pid"]) == node["pid"] != os.getsid(0)  # Ctrl-C of our terminal does not reach it
    log = until(lambda: "registered" in (t := (Path(node["root"]) / "agent.log").read_text()) and t, 10, "the log")
    assert TOKEN not in log
    cmdline = Path(f"/proc/{node['pid']}/cmdline").read_bytes().split(b"\0")
    assert TOKEN.encode() not in cmdline  # the token travels in the environment only


def test_is_alive_checks_the_pid_and_the_node_id(cp, node, nodes, tmp_path):
    lc = nodes.compute
    assert lc.is_alive(node)
    assert not lc.is_alive({**node, "id": "tvm-someone-else"})
    assert not lc.is_alive({"id": node["id"], "pid": os.getpid()})  # a reused pid
    assert not lc.is_alive({"id": node["id"], "pid": 0})
    assert not lc.is_alive({"id": node["id"]})
    # another instance (a restarted control plane) recognises the agent too
    other = LocalCompute(tmp_path / "data", control_plane_file=tmp_path / "cp.json", credential=lambda node_id: TOKEN)
    assert other.is_alive(node)


def test_stop_node_stops_the_agent_and_is_idempotent(cp, node, nodes):
    lc = nodes.compute
    lc.stop_node(node)
    assert not lc.is_alive(node)
    assert nodes.popen(node).returncode == 0  # reaped: it was ours
    assert node["pid"] not in lc._children
    lc.stop_node(node)
    lc.kill_node(node)
    assert not lc.is_alive(node)


def test_stop_node_escalates_to_sigkill(cp, node, nodes):
    lc = nodes.compute
    os.kill(node["pid"], signal.SIGSTOP)  # a hung agent ignores SIGTERM
    lc.stop_node(node, grace=0.3)
    assert not lc.is_alive(node)
    assert nodes.popen(node).returncode == -signal.SIGKILL


def test_kill_node_kills_the_task_processes_too(cp, node, nodes, tmp_path):
    task = make_task(tmp_path, "t-dead", [("", "sleep 60 & echo $! > child.pid; wait"), ("1", "sleep 60")])
    cp.give(node["id"], task)
    child_file = Path(task.cwd) / "child.pid"
    until(lambda: child_file.exists() and child_file.read_text().strip(), 10, "the child pid")
    pids_file = Path(node["root"]) / "agent.pids"
    until(lambda: len(pids_file.read_text().split()) == 2, 10, "agent.pids")
    # the pid file is written as a process starts, its log line just after
    started = until(lambda: all(ps := [exec_pid(task), exec_pid(task, "1")]) and ps, 10, "both start lines")
    pids = [int(p) for p in pids_file.read_text().split()] + [int(child_file.read_text())]
    assert sorted(pids[:2]) == sorted(started)
    assert all(pid_alive(p) for p in pids)
    # from another instance, as a test that simulates a dead machine would do it
    LocalCompute(tmp_path / "data", control_plane_file=tmp_path / "cp.json", credential=lambda node_id: TOKEN).kill_node(node)
    until(lambda: not any(pid_alive(p) for p in pids), 5, "the task processes to die")
    until(lambda: not pid_alive(node["pid"]), 5, "the agent to die")
    assert not nodes.compute.is_alive(node)
    assert "t-dead" not in cp.results  # nobody reported it: the machine is dead


def test_agents_survive_the_control_plane_process(cp, cp_file, tmp_path):
    """An agent started by a control plane that is then kill -9ed keeps running and heartbeating."""
    data = tmp_path / "data"
    script = textwrap.dedent(f"""
        import json, sys, time
        from pathlib import Path
        from batchai.adapters.local_compute import LocalCompute
        lc = LocalCompute(Path({str(data)!r}), control_plane_file=Path({str(cp_file)!r}), credential=lambda node_id: {TOKEN!r},
                          heartbeat={HEARTBEAT!r})
        info = lc.start_node(node_id="tvm-survivor", cluster_id={CLUSTER_ID!r}, cluster_key="c1", name="node-0")
        print(json.dumps(info), flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    parent = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    lc = LocalCompute(data, control_plane_file=cp_file, credential=lambda node_id: TOKEN)
    node = None
    try:
        node = {"id": "tvm-survivor", **json.loads(parent.stdout.readline())}
        cp.wait_registered(node["id"])
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        n = len(cp.beats)
        cp.wait(lambda: len(cp.beats) >= n + 3, what="heartbeats after the control plane died")
        assert lc.is_alive(node)
        lc.stop_node(node)  # not our child: stopped by pid
        assert not lc.is_alive(node)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()
        if node is not None:
            lc.kill_node(node)
