"""The node agent's exec service: how a peer's `mpirun` starts its daemons on this node.

Standard library only. On real clusters `mpirun` reaches the other nodes over ssh; local nodes
share one host, so `mpirun` is given `batchai.agent.rsh` as its remote shell instead, and that
connects here. A request names a job by its per-job secret (every task of the job carries it in
`BATCHAI_EXEC_SECRET`); the command then runs inside that job's task on this node, so it gets
the task's environment and directory and is killed with the task. A secret no running task of
this node holds is refused at once (`"retry": true`: rsh.py tries again for a while, as a peer's
mpirun may come before this node has started the job's task); a known one waits, if need be,
until the task is prepared: the service ran every node's jobPreparation before the job. The
service listens only on the node's own address and serves at most MAX_CONNECTIONS at a time.

Wire format, one TCP connection per command: the client sends one JSON line
`{"secret", "command"}` (or `{"ticket", ...}`: a user's session, see remote_login.py); the server answers with frames `kind (1 byte) + length (4 bytes, big
endian) + payload`: `o` stdout bytes, `e` stderr bytes, `x` a JSON object `{"exitCode"}` or
`{"exitCode": 255, "error"}` that ends the stream. A client that hangs up kills the command.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from batchai.agent.runner import TaskRunner, kill_tree

if TYPE_CHECKING:
    from batchai.agent.remote_login import RemoteLogin

log = logging.getLogger("batchai.agent.exec")

SECRET_ENV = "BATCHAI_EXEC_SECRET"
HOSTS_ENV = "BATCHAI_EXEC_HOSTS"
HEADER_LIMIT = 1 << 20
HEADER_TIMEOUT = 10.0
REFUSED = 255  # what ssh returns when it cannot run the command
READY_WAIT = 300.0  # a peer's mpirun may come before this node has started (and prepared) its task
MAX_CONNECTIONS = 256  # concurrent: far above the daemons of any job's peers (one per peer node and job)


def frame(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack(">I", len(payload)) + payload


def read_frame(sock: socket.socket, limit: int | None = None) -> tuple[bytes, bytes] | None:
    """The next frame, or None when the connection ended; ValueError if its payload is over `limit` bytes."""
    head = _read_exactly(sock, 5)
    if head is None:
        return None
    (length,) = struct.unpack(">I", head[1:])
    if limit is not None and length > limit:
        raise ValueError(f"a frame of {length} bytes is over the limit of {limit}")
    payload = _read_exactly(sock, length)
    return None if payload is None else (head[:1], payload)


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _read_header(sock: socket.socket) -> dict:
    """The request line, and not a byte more: a user's session sends frames right after it."""
    sock.settimeout(HEADER_TIMEOUT)
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(65536, socket.MSG_PEEK)
        if not chunk:
            raise ValueError("the connection closed before the request")
        end = chunk.find(b"\n")
        line += _read_exactly(sock, end + 1 if end >= 0 else len(chunk)) or b""
        if len(line) > HEADER_LIMIT:
            raise ValueError("the request is too large")
    sock.settimeout(None)
    request = json.loads(line)
    if isinstance(request, dict) and isinstance(request.get("ticket"), str):
        return request  # a user's session (remote_login.py)
    if not isinstance(request, dict) or not isinstance(request.get("secret"), str) or not isinstance(request.get("command"), str):
        raise ValueError("the request needs a secret and a command, or a ticket")
    return request


def _refuse(sock: socket.socket, error: str) -> None:
    try:
        sock.sendall(frame(b"x", json.dumps({"exitCode": REFUSED, "error": error}).encode()))
    except OSError:
        pass


class ExecServer:
    """Serves exec requests for the tasks `runners()` returns (the agent's running tasks)."""

    def __init__(
        self,
        host: str,
        runners: Callable[[], list[TaskRunner]],
        *,
        ready_wait: float = READY_WAIT,
        max_connections: int = MAX_CONNECTIONS,
        remote_login: RemoteLogin | None = None,
    ):
        self._runners = runners
        self._remote_login = remote_login
        self.ready_wait = ready_wait
        self._slots = threading.BoundedSemaphore(max_connections)
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                if not outer._slots.acquire(blocking=False):
                    _refuse(self.request, "the node's exec service is busy (too many connections)")
                    return
                try:
                    outer._serve(self.request)
                finally:
                    outer._slots.release()

        self._server = socketserver.ThreadingTCPServer((host, 0), Handler, bind_and_activate=True)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        self._thread = threading.Thread(target=self._server.serve_forever, name="exec-server", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _runner_for(self, secret: str) -> TaskRunner | None:
        """The running task holding `secret`."""
        for runner in self._runners():
            expected = runner.task.env.get(SECRET_ENV)
            if expected and hmac.compare_digest(expected, secret):
                return runner
        return None

    def _serve(self, sock: socket.socket) -> None:
        send_lock = threading.Lock()

        def send(kind: bytes, payload: bytes) -> bool:
            try:
                with send_lock:
                    sock.sendall(frame(kind, payload))
                return True
            except OSError:
                return False

        try:
            request = _read_header(sock)
        except (OSError, ValueError) as e:
            send(b"x", json.dumps({"exitCode": REFUSED, "error": f"bad request: {e}"}).encode())
            return
        if "ticket" in request:
            if self._remote_login is None:
                send(b"x", json.dumps({"exitCode": REFUSED, "error": "this node takes no user sessions"}).encode())
            else:
                self._remote_login.serve(sock, request, send)
            _hang_up(sock)
            return
        runner = self._runner_for(request["secret"])
        if runner is None:
            log.warning("refused a remote launch: no running task of this node holds its secret")
            send(b"x", json.dumps({"exitCode": REFUSED, "error": "no running task of this node holds the secret", "retry": True}).encode())
            return
        proc = runner.exec(request["command"], wait=self.ready_wait)
        if proc is None:
            send(b"x", json.dumps({"exitCode": REFUSED, "error": "the job's task on this node ended before it was prepared"}).encode())
            return

        def pump(stream, kind: bytes) -> None:
            for chunk in iter(lambda: stream.read1(65536), b""):
                if not send(kind, chunk):
                    break
            stream.close()

        def hang_up_kills() -> None:
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass
            if proc.poll() is None:
                kill_tree([proc.pid])  # an MPI daemon's ranks lead groups of their own

        pumps = [
            threading.Thread(target=pump, args=(proc.stdout, b"o"), daemon=True),
            threading.Thread(target=pump, args=(proc.stderr, b"e"), daemon=True),
        ]
        for t in pumps:
            t.start()
        threading.Thread(target=hang_up_kills, daemon=True).start()
        code = runner.reap(proc)
        for t in pumps:
            t.join()
        send(b"x", json.dumps({"exitCode": code}).encode())
        _hang_up(sock)


def _hang_up(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
