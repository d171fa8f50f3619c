"""The node agent against a fake control plane: real agent processes, started through LocalCompute.

The fake (FakeControlPlane) implements the agent protocol's server side: register, heartbeat
with long poll, tasks to start and kill, acknowledgements, actions. test_local_compute.py uses it too.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

from batchai.adapters.local_compute import LocalCompute
from batchai.agent.agent import Agent, ControlPlane
from batchai.agent.runner import TaskRunner
from batchai.frameworks.plan import NodeTask, Process
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(30)

TOKEN = "node-token-" + uuid.uuid4().hex
CLUSTER_ID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.BatchAI/workspaces/ws/clusters/c1"
HEARTBEAT = 0.2
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


# ----- helpers ------------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """Runs (a zombie does not count: nobody may reap orphans in a container)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def make_task(base: Path, task_id: str, processes, *, env=None, preparation=None, node_id="n", files=None) -> NodeTask:
    """processes: [(name, command) or (name, command, env)]; logs under base/job/stdouterr."""
    job = base / "job" / task_id
    logs = job / "stdouterr"

    def proc(name, command, penv=None):
        suffix = f"-{name}" if name else ""
        return Process(
            name=name, command=command, stdout=str(logs / f"stdout{suffix}.txt"), stderr=str(logs / f"stderr{suffix}.txt"), env=penv or {}
        )

    return NodeTask(
        task_id=task_id,
        job_id=f"{CLUSTER_ID}/jobs/{task_id}",
        node_id=node_id,
        cwd=str(job / "wd"),
        env=env or {},
        execution_log=str(job / "execution.log"),
        dirs=[str(job / "outputs")],
        files=files or {},
        preparation=proc("prep", preparation) if preparation else None,
        processes=[proc(*p) for p in processes],
    )


def exec_pid(task: NodeTask, name: str = "") -> int:
    """The pid of a task process, from the execution log."""
    label = name or "main"
    text = Path(task.execution_log).read_text() if Path(task.execution_log).exists() else ""
    m = re.search(rf"process {re.escape(label)} started pid (\d+)", text)
    return int(m[1]) if m else 0


# ----- the fake control plane -----------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):
        cp: FakeControlPlane = self.server.cp
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        with cp.cond:
            cp.connections[self.client_address] = self.connection
        if cp.closed:
            self.close_connection = True
            return
        if self.headers.get("Authorization") != f"Bearer {cp.token}":
            with cp.cond:
                cp.refused.append(self.path)
                cp.cond.notify_all()
            return self._send(401, {"error": "bad token"})
        m = re.fullmatch(r"/internal/v1/nodes/([^/]+)/(register|heartbeat)", self.path)
        if not m:
            return self._send(404, {"error": "no such path"})
        node_id = unquote(m[1])
        answer = cp.register(node_id, body) if m[2] == "register" else cp.beat(node_id, body)
        if answer is None:  # closed meanwhile: drop the connection without an answer
            self.close_connection = True
            return
        self._send(*answer)

    def _send(self, status: int, obj: dict):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeControlPlane:
    """register/heartbeat as the real control plane answers them, with queues the test fills."""

    def __init__(self, *, token: str = TOKEN, heartbeat: float = HEARTBEAT, ack: bool = True, max_wait: float = 2.0):
        self.token = token
        self.heartbeat = heartbeat
        self.ack = ack
        self.max_wait = max_wait
        self.cond = threading.Condition()
        self.closed = False
        self.registrations: list[tuple[str, dict]] = []
        self.boots: dict[str, str] = {}
        self.beats: list[tuple[str, dict]] = []
        self.to_start: dict[str, list[dict]] = defaultdict(list)
        self.to_kill: dict[str, list[str]] = defaultdict(list)
        self.actions: dict[str, str] = {}
        self.results: dict[str, dict] = {}  # first report of each task
        self.reports: list[dict] = []  # every finished entry received
        self.refused: list[str] = []  # the path of every request refused for its token
        self.connections: dict[tuple, socket.socket] = {}  # every client connection, by its address
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.cp = self
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def write_file(self, path: Path) -> None:
        tmp = Path(f"{path}.tmp")
        tmp.write_text(json.dumps({"url": self.url}))
        os.replace(tmp, path)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # --- what the test does

    def give(self, node_id: str, task: NodeTask) -> None:
        with self.cond:
            self.to_start[node_id].append(task.to_json())
            self.cond.notify_all()

    def kill(self, node_id: str, task_id: str) -> None:
        with self.cond:
            self.to_kill[node_id].append(task_id)
            self.cond.notify_all()

    def order(self, node_id: str, action: str) -> None:
        with self.cond:
            self.actions[node_id] = action
            self.cond.notify_all()

    def wait(self, predicate, timeout: float = 10.0, what: str = "the control plane to see it"):
        with self.cond:
            if not self.cond.wait_for(lambda: predicate(), timeout):
                raise AssertionError(f"timed out waiting for {what}")
            return predicate()

    def wait_registered(self, node_id: str, count: int = 1) -> dict:
        return self.wait(lambda: [b for n, b in self.registrations if n == node_id][count - 1 :][:1], what="register")[0]

    def wait_result(self, task_id: str, timeout: float = 10.0) -> dict:
        return self.wait(lambda: self.results.get(task_id), timeout, what=f"the result of {task_id}")

    def wait_running(self, node_id: str, task_id: str) -> None:
        self.wait(lambda: any(n == node_id and task_id in b["running"] for n, b in self.beats), what=f"{task_id} running")

    # --- the protocol

    def register(self, node_id: str, body: dict):
        with self.cond:
            if self.closed:
                return None
            self.registrations.append((node_id, body))
            self.boots[node_id] = body["bootId"]
            self.cond.notify_all()
        return 200, {"heartbeatSeconds": self.heartbeat}

    def beat(self, node_id: str, body: dict):
        with self.cond:
            if self.closed:
                return None
            if node_id not in self.boots:
                return 404, {"error": "unknown node"}
            if self.boots[node_id] != body["bootId"]:
                return 200, {"start": [], "kill": [], "ack": [], "action": "register"}
            self.beats.append((node_id, body))
            for f in body["finished"]:
                self.reports.append(f)
                self.results.setdefault(f["taskId"], f)
            acked = [f["taskId"] for f in body["finished"]] if self.ack else []
            self.cond.notify_all()
            deadline = time.monotonic() + min(float(body["waitSeconds"]), self.max_wait)
            while not (acked or self.to_start[node_id] or self.to_kill[node_id] or node_id in self.actions or self.closed):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.cond.wait(remaining)
            if self.closed:
                return None
            answer = {
                "start": self.to_start.pop(node_id, []),
                "kill": self.to_kill.pop(node_id, []),
                "ack": acked,
                "action": self.actions.pop(node_id, "ok"),
            }
            return 200, answer


# ----- fixtures ---------------------------------------------------------------------------------


class Nodes:
    """Agents started through LocalCompute; every one is killed (with its tasks) at teardown."""

    def __init__(self, compute: LocalCompute):
        self.compute = compute
        self.started: list[dict] = []
        self.procs: dict[int, subprocess.Popen] = {}

    def start(self, name: str = "node-0") -> dict:
        node_id = f"tvm-{uuid.uuid4().hex[:12]}"
        info = self.compute.start_node(node_id=node_id, cluster_id=CLUSTER_ID, cluster_key="c1", name=name)
        node = {"id": node_id, **info}
        self.started.append(node)
        self.procs[node["pid"]] = self.compute._children[node["pid"]]
        return node

    def popen(self, node: dict) -> subprocess.Popen:
        return self.procs[node["pid"]]

    def cleanup(self) -> None:
        for node in self.started:
            try:
                self.compute.kill_node(node)
            except Exception:  # noqa: BLE001 - clean up the rest anyway
                pass
            proc = self.procs[node["pid"]]
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def cp_file(tmp_path) -> Path:
    return tmp_path / "control-plane.json"


@pytest.fixture
def cp(cp_file):
    fake = FakeControlPlane()
    fake.write_file(cp_file)
    yield fake
    fake.close()


@pytest.fixture
def compute(tmp_path, cp_file) -> LocalCompute:
    return LocalCompute(tmp_path / "data", control_plane_file=cp_file, credential=lambda node_id: TOKEN, heartbeat=HEARTBEAT)


@pytest.fixture
def nodes(compute):
    n = Nodes(compute)
    yield n
    n.cleanup()


@pytest.fixture
def node(cp, nodes) -> dict:
    started = nodes.start()
    cp.wait_registered(started["id"])
    return started


# ----- tests ------------------------------------------------------------------------------------


def test_calls_share_a_kept_alive_connection_and_outlive_its_close(cp):
    client = ControlPlane(token=TOKEN, url=cp.url)
    path = "/internal/v1/nodes/n1/"
    client.post(path + "register", {"bootId": "b1"}, 5)
    beat = {"bootId": "b1", "running": [], "finished": [], "waitSeconds": 0}
    for _ in range(3):
        assert client.post(path + "heartbeat", beat, 5)["action"] == "ok"
    assert len(cp.connections) == 1
    for conn in list(cp.connections.values()):  # the server ends the idle connection, as uvicorn's keep-alive timeout does
        conn.shutdown(socket.SHUT_RDWR)
    assert client.post(path + "heartbeat", beat, 5)["action"] == "ok"
    assert len(cp.connections) == 2 and len(cp.beats) == 4
    client.close()


def test_register_body(cp, node):
    body = cp.wait_registered(node["id"])
    assert body["clusterId"] == CLUSTER_ID
    assert body["name"] == "node-0"
    assert body["address"] == "127.0.0.1"
    assert body["pid"] == node["pid"]
    assert body["root"] == node["root"]
    assert len(body["bootId"]) >= 16
    beat = cp.wait(lambda: [b for n, b in cp.beats if n == node["id"]], what="a heartbeat")[0]
    assert beat == {"bootId": body["bootId"], "running": [], "finished": [], "metrics": [], "waitSeconds": HEARTBEAT}


def test_two_processes_write_both_logs_and_exit_zero(cp, node, tmp_path):
    task = make_task(
        tmp_path,
        "t-two",
        [
            ("0", "echo out-0; echo err-0 >&2; pwd"),
            ("1", "sleep 0.2; echo out-1"),
        ],
        files={str(tmp_path / "job" / "t-two" / "cfg" / "hosts"): "node-0 slots=2\n"},
    )
    cp.give(node["id"], task)
    result = cp.wait_result("t-two")
    assert result["exitCode"] == 0 and result["error"] is None
    assert ISO_Z.match(result["startTime"]) and ISO_Z.match(result["endTime"])
    assert result["startTime"] <= result["endTime"]
    logs = Path(task.processes[0].stdout).parent
    assert (logs / "stdout-0.txt").read_text() == f"out-0\n{task.cwd}\n"
    assert (logs / "stderr-0.txt").read_text() == "err-0\n"
    assert (logs / "stdout-1.txt").read_text() == "out-1\n"
    assert (logs / "stderr-1.txt").read_text() == ""
    assert Path(task.dirs[0]).is_dir()
    assert (tmp_path / "job" / "t-two" / "cfg" / "hosts").read_text() == "node-0 slots=2\n"
    log = Path(task.execution_log).read_text()
    for line in (
        "task t-two started on node node-0",
        "process 0 started pid",
        "process 1 started pid",
        "process 0 exited with 0",
        "process 1 exited with 0",
        "task t-two finished with exit code 0",
    ):
        assert line in log
    assert re.match(r"^\d{4}-\d\d-\d\dT\S+Z task t-two started", log)


def test_first_nonzero_exit_code_in_process_order(cp, node, tmp_path):
    task = make_task(tmp_path, "t-exit", [("0", "exit 0"), ("1", "sleep 0.3; exit 3"), ("2", "exit 5")])
    cp.give(node["id"], task)
    result = cp.wait_result("t-exit")
    assert result["exitCode"] == 3 and result["error"] is None
    assert "process 2 exited with 5" in Path(task.execution_log).read_text()


def test_preparation_failure_starts_nothing(cp, node, tmp_path):
    task = make_task(tmp_path, "t-prep", [("", "touch started")], preparation="echo preparing; exit 7")
    cp.give(node["id"], task)
    result = cp.wait_result("t-prep")
    assert result["exitCode"] == 7
    assert result["error"] == "job preparation failed with exit code 7"
    assert Path(task.preparation.stdout).read_text() == "preparing\n"
    assert not (Path(task.cwd) / "started").exists()
    log = Path(task.execution_log).read_text()
    assert "preparation exited with 7" in log and "task t-prep finished with exit code 7" in log
    assert "process main started" not in log


def test_preparation_then_process(cp, node, tmp_path):
    task = make_task(tmp_path, "t-prep-ok", [("", "cat prepared")], preparation="echo ready > prepared")
    cp.give(node["id"], task)
    assert cp.wait_result("t-prep-ok")["exitCode"] == 0
    assert Path(task.processes[0].stdout).read_text() == "ready\n"


def test_env_reaches_processes_but_not_logs(cp, node, tmp_path):
    secret = "s3cr3t-" + uuid.uuid4().hex
    task = make_task(
        tmp_path,
        "t-env",
        [("", 'echo "$MY_SECRET $LAYER"; echo "token=${BATCHAI_NODE_TOKEN:-none}"; echo "path=${PATH:+set}"', {"LAYER": "process"})],
        env={"MY_SECRET": secret, "LAYER": "task"},
    )
    cp.give(node["id"], task)
    assert cp.wait_result("t-env")["exitCode"] == 0
    assert Path(task.processes[0].stdout).read_text() == f"{secret} process\ntoken=none\npath=set\n"
    for path in (Path(task.execution_log), Path(node["root"]) / "agent.log"):
        text = path.read_text()
        assert secret not in text and TOKEN not in text, path


def test_kill_terminates_the_process_group(cp, node, tmp_path):
    task = make_task(tmp_path, "t-kill", [("", "sleep 60 & echo $! > child.pid; wait")])
    cp.give(node["id"], task)
    child_file = Path(task.cwd) / "child.pid"
    until(lambda: child_file.exists() and child_file.read_text().strip(), 10, "the child pid")
    cp.wait_running(node["id"], "t-kill")
    leader, child = exec_pid(task), int(child_file.read_text())
    assert pid_alive(leader) and pid_alive(child)
    assert str(leader) in (Path(node["root"]) / "agent.pids").read_text().split()
    cp.kill(node["id"], "t-kill")
    result = cp.wait_result("t-kill")
    assert result["exitCode"] in (137, 143)
    assert result["error"] == "terminated"
    until(lambda: not pid_alive(leader) and not pid_alive(child), 8, "the task processes to die")
    until(lambda: (Path(node["root"]) / "agent.pids").read_text() == "", 10, "agent.pids to empty")


def test_start_is_idempotent(cp, node, tmp_path):
    task = make_task(tmp_path, "t-once", [("", "echo run >> ../runs.txt; sleep 0.5")])
    cp.give(node["id"], task)
    cp.wait_running(node["id"], "t-once")
    cp.give(node["id"], task)  # again while it runs
    cp.wait_result("t-once")
    cp.give(node["id"], task)  # and once it finished
    n = len(cp.beats)
    cp.wait(lambda: len(cp.beats) >= n + 3, what="more heartbeats")
    assert (Path(task.cwd).parent / "runs.txt").read_text() == "run\n"
    # reported at once and possibly again by a heartbeat in flight (the control plane records it
    # with a compare-and-set): always the same single run's result
    reports = [r for r in cp.reports if r["taskId"] == "t-once"]
    assert reports and all(r == reports[0] for r in reports)


def test_kill_of_unknown_task_is_ignored(cp, node):
    cp.kill(node["id"], "t-nobody")
    n = len(cp.beats)
    cp.wait(lambda: len(cp.beats) >= n + 2, what="more heartbeats")
    assert "t-nobody" not in cp.results


def test_malformed_task_is_reported(cp, node):
    with cp.cond:
        cp.to_start[node["id"]].append({"task_id": "t-bad", "unexpected": 1})
        cp.cond.notify_all()
    result = cp.wait_result("t-bad")
    assert result["exitCode"] != 0 and "cannot read the task" in result["error"]


def test_sigterm_kills_tasks_and_reports_them(cp, node, nodes, tmp_path):
    task = make_task(tmp_path, "t-term", [("", "sleep 60")])
    cp.give(node["id"], task)
    cp.wait_running(node["id"], "t-term")
    pid = until(lambda: exec_pid(task), 10, "the task pid")
    nodes.compute.stop_node(node)
    assert nodes.popen(node).wait(5) == 0
    result = cp.wait_result("t-term", timeout=1)
    assert result["exitCode"] == 143 and result["error"] == "terminated"
    assert not pid_alive(pid)
    assert not nodes.compute.is_alive(node)


def test_shutdown_action_kills_tasks_and_exits_zero(cp, node, nodes, tmp_path):
    task = make_task(tmp_path, "t-shut", [("", "sleep 60")])
    cp.give(node["id"], task)
    cp.wait_running(node["id"], "t-shut")
    pid = until(lambda: exec_pid(task), 10, "the task pid")
    cp.order(node["id"], "shutdown")
    assert nodes.popen(node).wait(8) == 0
    assert not pid_alive(pid)


def test_register_action_reregisters_and_keeps_tasks(cp, node, tmp_path):
    task = make_task(tmp_path, "t-rereg", [("", "sleep 0.8; exit 6")])
    cp.give(node["id"], task)
    cp.wait_running(node["id"], "t-rereg")
    first = cp.wait_registered(node["id"])
    cp.order(node["id"], "register")
    again = cp.wait_registered(node["id"], count=2)
    assert again["bootId"] == first["bootId"]
    assert cp.wait_result("t-rereg")["exitCode"] == 6


def test_survives_control_plane_restart_on_new_port(cp_file, nodes, tmp_path):
    a = FakeControlPlane(ack=False)
    b = None
    try:
        a.write_file(cp_file)
        node = nodes.start()
        boot = a.wait_registered(node["id"])["bootId"]
        fast = make_task(tmp_path, "t-fast", [("", "exit 2")])
        slow = make_task(tmp_path, "t-slow", [("", "sleep 1.5; echo done; exit 4")])
        a.give(node["id"], fast)
        a.give(node["id"], slow)
        # not acknowledged: re-sent on every heartbeat
        a.wait(lambda: [r["taskId"] for r in a.reports].count("t-fast") >= 3, what="t-fast re-sent")
        a.wait_running(node["id"], "t-slow")
        a.close()  # the control plane goes away; t-slow finishes while it is gone
        until(lambda: "task t-slow finished" in Path(slow.execution_log).read_text(), 10, "t-slow to finish")
        assert nodes.compute.is_alive(node)
        assert Path(slow.processes[0].stdout).read_text() == "done\n"
        b = FakeControlPlane()
        assert b.url != a.url
        b.write_file(cp_file)
        again = b.wait_registered(node["id"])  # its heartbeat got a 404: it registered again
        assert again["bootId"] == boot
        assert b.wait_result("t-fast")["exitCode"] == 2
        assert b.wait_result("t-slow")["exitCode"] == 4
        n = len(b.beats)
        b.wait(lambda: len(b.beats) >= n + 2, what="more heartbeats")
        assert b.beats[-1][1]["finished"] == []  # acknowledged: dropped
    finally:
        a.close()
        if b is not None:
            b.close()


def test_orphaned_agent_exits_when_idle(tmp_path):
    root = tmp_path / "orphan"
    env = {**os.environ, "BATCHAI_NODE_TOKEN": TOKEN, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchai.agent",
            "--node-id",
            "tvm-orphan",
            "--cluster-id",
            CLUSTER_ID,
            "--name",
            "n",
            "--root",
            str(root),
            "--url",
            "http://127.0.0.1:9",
            "--orphan-timeout",
            "0.5",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert TOKEN.encode() not in out
    log = (root / "agent.log").read_text()
    assert "no task running" in log and TOKEN not in log


def test_wrong_token_is_refused_until_fixed(cp, cp_file, tmp_path):
    compute = LocalCompute(tmp_path / "data2", control_plane_file=cp_file, credential=lambda node_id: "wrong", heartbeat=HEARTBEAT)
    nodes = Nodes(compute)
    try:
        node = nodes.start()
        register = f"/internal/v1/nodes/{node['id']}/register"
        cp.wait(lambda: cp.refused.count(register) >= 3, what="the agent to try again after being refused")
        assert compute.is_alive(node) and not [b for n, b in cp.registrations if n == node["id"]]
    finally:
        nodes.cleanup()


def test_agent_imports_only_the_standard_library():
    code = (
        "import sys, batchai.agent.__main__\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names) - {'batchai', '__main__'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=20, cwd=str(Path(__file__).resolve().parents[2])
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_help_runs():
    out = subprocess.run(
        [sys.executable, "-m", "batchai.agent", "--help"],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    assert out.returncode == 0 and "--control-plane-file" in out.stdout and "--orphan-timeout" in out.stdout


# ----- the runner alone (in-process) ------------------------------------------------------------


def test_runner_without_processes_holds_the_node_until_killed(tmp_path):
    task = make_task(tmp_path, "t-empty", [])
    runner = TaskRunner(task, node_name="n", base_env={})
    runner.start()
    log = Path(task.execution_log)
    until(lambda: log.exists() and "holding the node" in log.read_text(), 5, "the runner to hold the node")
    assert not runner.join(0)  # where a task with processes would have ended, this one holds
    assert Path(task.dirs[0]).is_dir()
    assert runner.kill(grace=1.0)
    assert runner.join(5)
    assert runner.result["exitCode"] == 0 and runner.result["error"] is None  # released, not failed
    assert "task t-empty finished with exit code 0" in Path(task.execution_log).read_text()


def test_runner_signalled_process_counts_as_128_plus_signal(tmp_path):
    task = make_task(tmp_path, "t-sig", [("", "kill -9 $$")])
    assert TaskRunner(task, node_name="n").run()["exitCode"] == 137


def test_runner_kill_before_start(tmp_path):
    task = make_task(tmp_path, "t-early", [("", "touch ran")])
    runner = TaskRunner(task, node_name="n")
    runner.kill()
    result = runner.run()
    assert result["exitCode"] == 143 and result["error"] == "terminated"
    assert not (Path(task.cwd) / "ran").exists()


def test_runner_escalates_to_sigkill(tmp_path, monkeypatch):
    task = make_task(tmp_path, "t-stubborn", [("", "trap '' TERM; echo trapped; sleep 30 & wait; sleep 30")])
    runner = TaskRunner(task, node_name="n")
    runner.start()
    try:
        until(lambda: Path(task.processes[0].stdout).exists() and Path(task.processes[0].stdout).read_text(), 10, "the trap")
        pid = runner.pids()[0]
        runner.kill(grace=0.3)
        assert runner.join(5)
        assert runner.result["exitCode"] == 137 and runner.result["error"] == "terminated"
        assert not pid_alive(pid)
    finally:
        for pid in runner.pids():
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_repeated_orders_do_not_make_the_agent_spin(cp, node, tmp_path):
    """A control plane that repeats a kill (task still dying) or a start of a known task every time."""
    task = make_task(tmp_path, "t-stubborn", [("", "trap 'echo term' TERM; echo ready; sleep 30 & wait; sleep 30")])
    cp.give(node["id"], task)
    cp.wait_running(node["id"], "t-stubborn")
    out = Path(task.processes[0].stdout)
    until(lambda: out.exists() and "ready" in out.read_text(), 10, "the trap")
    n = len(cp.beats)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:
        with cp.cond:
            cp.to_kill[node["id"]] = ["t-stubborn", "t-unknown"]
            cp.to_start[node["id"]] = [task.to_json()]
            cp.cond.notify_all()
        time.sleep(0.01)
    assert len(cp.beats) - n <= 1.0 / HEARTBEAT + 3
    assert "t-stubborn" not in cp.results  # still in its grace period


def test_runner_failure_to_start_a_process_stops_the_others(tmp_path):
    task = make_task(tmp_path, "t-half", [("0", "sleep 30"), ("1", "true")])
    blocker = Path(task.processes[1].stdout)
    blocker.mkdir(parents=True)  # a directory where a log file should be: open() fails
    runner = TaskRunner(task, node_name="n")
    result = runner.run()
    assert result["exitCode"] == 1 and "could not run the task" in result["error"]
    pid = exec_pid(task, "0")
    assert pid and not pid_alive(pid) and runner.pids() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="running a job as another user needs root, as the agent on a VM is")
def test_a_job_run_as_another_user_owns_its_dirs_and_cannot_read_the_agents_files(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="batchai-run-as-", dir="/tmp"))  # pytest's own tmp is private to root
    umask = os.umask(0o022)  # a VM's agent runs with the system's; an embedded host built in this process set 077
    try:
        base.chmod(0o755)
        credential = tmp_path / "node.env"  # as /etc/batchai/node.env on a VM: root's alone
        credential.write_text("BATCHAI_NODE_TOKEN=secret\n")
        credential.chmod(0o600)
        command = f"id -un > ../outputs/who && (cat {credential} 2>/dev/null && echo read || echo denied) > ../outputs/credential"
        task = make_task(base, "t-user", [("", command)])
        result = TaskRunner(task, node_name="n", base_env={}, run_as="nobody").run()
        outputs = Path(task.dirs[0])
        assert result["exitCode"] == 0, Path(task.execution_log).read_text()
        assert (outputs / "who").read_text() == "nobody\n" and (outputs / "credential").read_text() == "denied\n"
        assert outputs.stat().st_uid == pwd.getpwnam("nobody").pw_uid and Path(task.cwd).stat().st_uid == pwd.getpwnam("nobody").pw_uid
    finally:
        os.umask(umask)
        shutil.rmtree(base, ignore_errors=True)


class _ReportWinsFirst:
    """A control plane whose heartbeat answer arrives after the immediate report's: the report, sent while the
    heartbeat was out with the same result, took the ack (as `Agent._report_finished` applies its answer)."""

    agent: Agent

    def post(self, path: str, body: dict, timeout: float) -> dict:
        answer = {"start": [], "kill": [], "ack": [f["taskId"] for f in body["finished"]], "action": "ok"}
        self.agent._apply(answer)  # the report's answer, acted on while this call was out
        return answer


def test_a_heartbeat_whose_acks_a_report_took_first_polls_again_at_once(tmp_path):
    """Its answer carries nothing new, and came without the poll being held: waiting out the interval here
    would leave the node with no poll open, deaf to the start of its next task (a second-long stall per job)."""
    cp = _ReportWinsFirst()
    agent = Agent(node_id="n", cluster_id=CLUSTER_ID, name="node-0", root=str(tmp_path), control_plane=cp, heartbeat=300.0)
    cp.agent = agent
    agent._registered = True
    agent._finished["t1"] = {"taskId": "t1", "exitCode": 0}
    beat = threading.Thread(target=agent._heartbeat, daemon=True)
    beat.start()
    beat.join(timeout=10)
    assert not beat.is_alive(), "the heartbeat waited out its interval with no poll open"
    assert agent._finished == {}


def test_runner_ending_with_no_process_left_reads_no_process_table(tmp_path, monkeypatch):
    """Reading every process's stat is most of what a short task's end costs the node: only a task with
    processes left to kill pays it."""
    from batchai.agent import runner as runner_module

    def no_scan():
        raise AssertionError("the process table was read")

    monkeypatch.setattr(runner_module, "_process_table", no_scan)
    result = TaskRunner(make_task(tmp_path, "t-short", [("", "true")]), node_name="n").run()
    assert result["exitCode"] == 0 and result["error"] is None
