"""Remote launches: a peer's mpirun reaches a node through rsh.py and the node agent's exec service."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from batchai.agent import exec_server
from batchai.agent.exec_server import HOSTS_ENV, REFUSED, SECRET_ENV, ExecServer, read_frame
from batchai.agent.rsh import WAIT_ENV, parse_hosts
from batchai.agent.runner import TaskRunner
from batchai.frameworks.plan import NodeTask
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(30)
ROOT = Path(__file__).resolve().parents[2]


def holding_task(tmp_path: Path, secret: str) -> NodeTask:
    return NodeTask(
        task_id="t1",
        job_id="j",
        node_id="n1",
        cwd=str(tmp_path / "wd"),
        env={SECRET_ENV: secret, "JOB_VAR": "from-the-task"},
        execution_log=str(tmp_path / "execution.log"),
    )


@pytest.fixture
def node(tmp_path):
    runner = TaskRunner(holding_task(tmp_path, "s3cret"), node_name="node-1", base_env=dict(os.environ))
    runner.start()
    server = ExecServer("127.0.0.1", lambda: [runner], ready_wait=1.0)
    server.start()
    yield runner, server
    runner.kill(grace=0.5)
    runner.join(5)
    server.stop()


def rsh(server: ExecServer, *args: str, secret: str = "s3cret", wait: str = "300", **popen) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        HOSTS_ENV: f"node-0=127.0.0.1:1,node-1=127.0.0.1:{server.port}",
        SECRET_ENV: secret,
        WAIT_ENV: wait,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "batchai.agent.rsh", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen
    )


def test_parse_hosts():
    assert parse_hosts("a=127.0.0.1:5,b=[::1]:6,") == {"a": ("127.0.0.1", 5), "b": ("::1", 6)}


def test_a_command_runs_inside_the_jobs_task_with_its_environment(node, tmp_path):
    runner, server = node
    proc = rsh(server, "node-1", "echo", "$JOB_VAR", "in", '"$PWD"', ";", "echo", "oops", ">&2", ";", "exit", "3")
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 3
    assert out.decode().strip() == f"from-the-task in {tmp_path / 'wd'}"
    assert err.decode().strip() == "oops"
    assert "remote launch pid" in Path(runner.task.execution_log).read_text()


def test_a_wrong_secret_or_node_is_refused(node):
    _, server = node
    out, err = rsh(server, "node-1", "true", secret="guess", wait="0").communicate(timeout=20)
    assert b"no running task of this node holds the secret" in err
    proc = rsh(server, "node-9", "true")
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == REFUSED and b"unknown node 'node-9'" in err


def start_sleeper(server, marker: Path) -> tuple[subprocess.Popen, int]:
    """A remote `sleep` through rsh; returns the rsh process and the sleeper's pid on the node."""
    proc = rsh(server, "node-1", f"echo $$ > {marker}; exec sleep 60")
    pid = until(lambda: marker.exists() and marker.read_text().strip(), 10, "the remote sleeper's pid")
    return proc, int(pid)


def test_killing_the_task_kills_what_peers_started_there(node, tmp_path):
    runner, server = node
    proc, pid = start_sleeper(server, tmp_path / "pid")
    assert pid in runner.pids()
    runner.kill(grace=0.5)
    assert runner.join(5)
    proc.communicate(timeout=10)
    assert proc.returncode != 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_hanging_up_kills_the_remote_command(node, tmp_path):
    runner, server = node
    proc, pid = start_sleeper(server, tmp_path / "pid")
    proc.kill()
    proc.wait()
    until(lambda: pid not in runner.pids(), 10, "the remote command to end with its caller")


def ask(server: ExecServer, secret: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    sock.sendall(json.dumps({"secret": secret, "command": "true"}).encode() + b"\n")
    return sock


def test_an_unknown_secret_is_refused_at_once_for_the_caller_to_retry(tmp_path):
    """The server never holds a connection for a secret it does not know (the test's timeout would end a wait)."""
    runner = TaskRunner(holding_task(tmp_path, "s3cret"), node_name="node-1", base_env=dict(os.environ))
    server = ExecServer("127.0.0.1", lambda: [runner], ready_wait=300.0)
    server.start()
    try:
        with ask(server, "guess") as sock:
            kind, payload = read_frame(sock)
        assert kind == b"x" and json.loads(payload) == {
            "exitCode": REFUSED,
            "error": "no running task of this node holds the secret",
            "retry": True,
        }
    finally:
        server.stop()


def test_connections_beyond_the_cap_are_refused(node, tmp_path, monkeypatch):
    runner, _ = node
    monkeypatch.setattr(exec_server, "HEADER_TIMEOUT", 120.0)  # the silent connections hold their slots throughout
    server = ExecServer("127.0.0.1", lambda: [runner], max_connections=2)
    server.start()
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=20) for _ in range(2)]  # silent: each holds a slot
    try:
        until(lambda: server._slots._value == 0, 10, "both connections to be served")  # noqa: SLF001 - the cap's own count
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as extra:
            kind, payload = read_frame(extra)
        assert kind == b"x" and "too many connections" in json.loads(payload)["error"]
    finally:
        for sock in held:
            sock.close()
        server.stop()


def test_rsh_asks_again_until_the_node_has_started_the_jobs_task(tmp_path):
    runners: list[TaskRunner] = []
    asked: list[int] = []
    server = ExecServer("127.0.0.1", lambda: asked.append(len(runners)) or list(runners))
    server.start()
    try:
        proc = rsh(server, "node-1", "echo", "late")
        until(lambda: asked, 10, "the request to arrive before the task")  # and be refused: no task yet
        runner = TaskRunner(holding_task(tmp_path, "s3cret"), node_name="node-1", base_env=dict(os.environ))
        runner.start()
        runners.append(runner)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0 and out.decode().strip() == "late"
        runner.kill(grace=0.5)
        runner.join(5)
    finally:
        server.stop()
