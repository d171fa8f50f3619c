"""Users' sessions on a node: exec tickets (pure) and the agent's end (remote_login.py) behind its exec service."""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading

import pytest

from batchai import exec_tickets
from batchai.agent.exec_server import REFUSED, ExecServer, frame, read_frame
from batchai.agent.remote_login import MAX_FRAME, RemoteLogin
from batchai.agent.runner import TaskRunner
from batchai.frameworks.plan import NodeTask
from batchai.node_identity import node_credential

pytestmark = pytest.mark.timeout(30)
KEY = b"k" * 32
NODE = "node-a1b2"
CREDENTIAL = node_credential(KEY, NODE)


def ticket(grant: dict, node: str = NODE, credential: str = CREDENTIAL, **kw) -> str:
    return exec_tickets.issue(credential, node, grant, **kw)[0]


def test_a_ticket_carries_its_grant_to_its_node_only():
    grant = exec_tickets.verify(CREDENTIAL, NODE, ticket({"kind": "exec", "command": "hostname"}))
    assert grant["command"] == "hostname" and grant["node"] == NODE
    other = node_credential(KEY, "node-other")
    with pytest.raises(exec_tickets.InvalidTicket, match="not issued for this node"):
        exec_tickets.verify(other, "node-other", ticket({"kind": "exec", "command": None}))  # signed for NODE
    with pytest.raises(exec_tickets.InvalidTicket, match="not issued for this node"):
        exec_tickets.verify(CREDENTIAL, NODE, ticket({"kind": "exec", "command": None}, node="node-other"))
    payload, _, signature = ticket({"kind": "exec", "command": "true"}).rpartition(".")
    forged = json.dumps({"kind": "exec", "command": "rm -rf /", "node": NODE, "exp": 2e9, "nonce": "x"}).encode()
    import base64

    with pytest.raises(exec_tickets.InvalidTicket):
        exec_tickets.verify(CREDENTIAL, NODE, base64.urlsafe_b64encode(forged).decode().rstrip("=") + "." + signature)
    with pytest.raises(exec_tickets.InvalidTicket):
        exec_tickets.verify(CREDENTIAL, NODE, "x" * (exec_tickets.MAX_TICKET_CHARS + 1))


def test_a_ticket_expires_after_its_time_and_the_clock_slack():
    issued = ticket({"kind": "forward", "host": "127.0.0.1", "port": 80}, now=1000.0, ttl=60)
    assert exec_tickets.verify(CREDENTIAL, NODE, issued, now=1000.0 + 60 + exec_tickets.CLOCK_SLACK_SECONDS)["port"] == 80
    with pytest.raises(exec_tickets.InvalidTicket, match="expired"):
        exec_tickets.verify(CREDENTIAL, NODE, issued, now=1000.0 + 61 + exec_tickets.CLOCK_SLACK_SECONDS)


@pytest.fixture
def node(tmp_path):
    runner = TaskRunner(
        NodeTask(
            task_id="t1",
            job_id="job-1",
            node_id=NODE,
            cwd=str(tmp_path / "wd"),
            env={"JOB_VAR": "in-the-job"},
            execution_log=str(tmp_path / "x.log"),
        ),
        node_name="node-0",
        base_env=dict(os.environ),
    )
    runner.start()
    login = RemoteLogin(
        node_id=NODE,
        node_name="node-0",
        credential=CREDENTIAL,
        root=str(tmp_path / "root"),
        base_env=dict(os.environ),
        runners=lambda: [runner],
    )
    server = ExecServer("127.0.0.1", lambda: [runner], ready_wait=1.0, remote_login=login)
    server.start()
    yield server
    runner.kill(grace=0.5)
    runner.join(5)
    server.stop()


def session(server: ExecServer, request: dict, frames: list[tuple[bytes, bytes]] = ()) -> tuple[bytes, dict]:
    """(output, the end frame) of one session."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(json.dumps(request).encode() + b"\n" + b"".join(frame(k, p) for k, p in frames))
        out = b""
        while (message := read_frame(sock)) is not None:
            kind, payload = message
            if kind == b"x":
                return out, json.loads(payload)
            out += payload
    raise AssertionError("no end frame")


def test_a_command_runs_on_the_node_with_its_stdin_and_exit_code(node):
    out, end = session(
        node, {"ticket": ticket({"kind": "exec", "command": "echo $AZ_BATCHAI_NODE_NAME; cat; exit 3"})}, [(b"i", b"typed\n"), (b"c", b"")]
    )
    assert out == b"node-0\ntyped\n" and end == {"exitCode": 3}


def test_an_exec_ticket_is_good_for_one_session(node):
    once = ticket({"kind": "exec", "command": "true"})
    assert session(node, {"ticket": once})[1] == {"exitCode": 0}
    out, end = session(node, {"ticket": once})
    assert end["exitCode"] == REFUSED and "used already" in end["error"]


def test_a_bad_ticket_is_refused_and_runs_nothing(node, tmp_path):
    marker = tmp_path / "ran"
    other = ticket({"kind": "exec", "command": f"touch {marker}"}, credential=node_credential(KEY, "elsewhere"))
    out, end = session(node, {"ticket": other})
    assert end["exitCode"] == REFUSED and "not issued for this node" in end["error"] and not marker.exists()


def test_a_shell_on_a_pseudo_terminal(node):
    grant = ticket({"kind": "exec", "command": None})
    out, end = session(node, {"ticket": grant, "tty": True}, [(b"w", b'{"rows": 40, "cols": 100}'), (b"i", b"stty size; tty; exit 5\n")])
    assert end == {"exitCode": 5}
    assert b"40 100" in out and b"/dev/pts/" in out


def test_a_command_in_the_jobs_task_gets_its_environment(node):
    out, end = session(node, {"ticket": ticket({"kind": "exec", "command": "echo $JOB_VAR", "job": "job-1"})})
    assert out == b"in-the-job\n" and end == {"exitCode": 0}
    out, end = session(node, {"ticket": ticket({"kind": "exec", "command": "true", "job": "job-2"})})
    assert end["exitCode"] == REFUSED and "no task" in end["error"]


def test_a_forward_relays_a_connection_to_a_server_on_the_node(node):
    class Echo(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"echo:" + self.request.recv(100))

    with socketserver.TCPServer(("127.0.0.1", 0), Echo) as target:
        threading.Thread(target=target.serve_forever, daemon=True).start()
        grant = ticket({"kind": "forward", "host": "127.0.0.1", "port": target.server_address[1]})
        for _ in range(2):  # a forward ticket serves many connections while it lasts
            with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
                sock.sendall(json.dumps({"ticket": grant}).encode() + b"\n")
                assert read_frame(sock) == (b"k", b"")
                sock.sendall(b"hello")
                assert sock.recv(100) == b"echo:hello"
        target.shutdown()


def test_a_frame_over_the_limit_ends_the_session(node):
    grant = ticket({"kind": "exec", "command": "sleep 20"})
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        sock.sendall(json.dumps({"ticket": grant}).encode() + b"\n" + b"i" + (MAX_FRAME + 1).to_bytes(4, "big"))
        end = None
        while (message := read_frame(sock)) is not None:
            if message[0] == b"x":
                end = json.loads(message[1])
        assert end is not None and end["exitCode"] != 0  # killed, not left running for 20 s
