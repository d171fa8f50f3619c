"""Users' sessions on a node (`batchai cluster node exec`, `job node exec`): a command, a shell, a port forward.

Standard library only. They arrive at the agent's exec service (exec_server.py) with a ticket the
control plane issued after checking the user's token (batchai/exec_tickets.py); the agent checks it
with its own node credential and calls nobody. An exec ticket is good for one connection (its nonce
is remembered until it expires); a forward ticket for any number until it expires.

After the request line, the client may send frames (same framing as the answer): `i` stdin bytes,
`c` end of stdin, `w` a terminal size `{"rows", "cols"}`. The request's `tty: true` runs the
command (or the login shell) on a pseudo-terminal, its output all in `o` frames. A forward is
answered with one `k` frame; the connection then carries the forwarded bytes both ways, raw.
A client that hangs up kills what its session started.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pty
import select
import socket
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable

from batchai import exec_tickets
from batchai.agent.runner import TaskRunner, exit_code_of, kill_tree

log = logging.getLogger("batchai.agent.exec")

MAX_FRAME = 64 * 1024  # stdin frames from a client; bigger ones end the session
MAX_SESSIONS = 128  # users' sessions and forwarded connections at once: the rest of the exec service's slots stay for MPI
MAX_NONCES = 4096  # exec tickets remembered until they expire; past that, new sessions wait their turn
FORWARD_CONNECT_TIMEOUT = 10.0
JOB_READY_WAIT = 10.0
DRAIN_SECONDS = 0.2  # after a pty's command exits: its last output still in the terminal
REFUSED = 255

Send = Callable[[bytes, bytes], bool]


class RemoteLogin:
    def __init__(
        self,
        *,
        node_id: str,
        node_name: str,
        credential: str,
        root: str,
        base_env: dict[str, str],
        runners: Callable[[], list[TaskRunner]],
    ):
        self.node_id = node_id
        self.node_name = node_name
        self.credential = credential
        self.root = root
        self.base_env = base_env
        self._runners = runners
        self._nonces: dict[str, float] = {}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_SESSIONS)

    def serve(self, sock: socket.socket, request: dict, send: Send) -> None:
        if not self._slots.acquire(blocking=False):
            _end(send, REFUSED, f"the node has {MAX_SESSIONS} user sessions open already")
            return
        try:
            self._serve(sock, request, send)
        finally:
            self._slots.release()

    def _serve(self, sock: socket.socket, request: dict, send: Send) -> None:
        try:
            grant = exec_tickets.verify(self.credential, self.node_id, request.get("ticket"))
        except exec_tickets.InvalidTicket as exc:
            log.warning("refused a user session: %s", exc)
            _end(send, REFUSED, str(exc))
            return
        if grant["kind"] == "forward":
            self._forward(sock, grant, send)
            return
        refused = self._first_use(grant)
        if refused:
            _end(send, REFUSED, refused)
            return
        log.info("user session: %s", "a shell" if grant.get("command") is None else "a command")
        if grant.get("job"):
            self._job_exec(sock, grant, send)
        else:
            self._node_exec(sock, grant, bool(request.get("tty")), str(request.get("term") or "xterm"), send)

    def _first_use(self, grant: dict) -> str | None:
        """Why an exec ticket is refused (it was used), or None: it is taken now."""
        now = time.time()
        with self._lock:
            for nonce in [n for n, exp in self._nonces.items() if exp + exec_tickets.CLOCK_SLACK_SECONDS < now]:
                del self._nonces[nonce]
            nonce = str(grant.get("nonce"))
            if nonce in self._nonces:
                return "the ticket was used already: ask the control plane for a new one"
            if len(self._nonces) >= MAX_NONCES:
                return f"the node took {MAX_NONCES} sessions within {exec_tickets.TTL_SECONDS} s: try again shortly"
            self._nonces[nonce] = float(grant["exp"])
            return None

    # -- a command or a shell on the node ----------------------------------------------------
    def _node_exec(self, sock: socket.socket, grant: dict, tty: bool, term: str, send: Send) -> None:
        command = grant.get("command")
        argv = ["/bin/bash", "-l"] if command is None else ["/bin/bash", "-c", command]
        env = {**self.base_env, "HOME": self.base_env.get("HOME", self.root), "AZ_BATCHAI_NODE_NAME": self.node_name}
        os.makedirs(self.root, exist_ok=True)
        if not tty:
            proc = subprocess.Popen(
                argv,
                cwd=self.root,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
            self._relay_pipes(sock, proc, send, lambda: exit_code_of(proc.wait()))
            return
        master, slave = pty.openpty()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=self.root,
                env={**env, "TERM": term[:64]},
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                close_fds=True,
                preexec_fn=_controlling_terminal,  # noqa: PLW1509 - one ioctl between fork and exec
            )
        finally:
            os.close(slave)
        try:
            self._relay_pty(sock, proc, master, send)
        finally:
            os.close(master)

    def _relay_pty(self, sock: socket.socket, proc: subprocess.Popen, master: int, send: Send) -> None:
        def output() -> None:
            while True:
                try:
                    ready, _, _ = select.select([master], [], [], DRAIN_SECONDS)
                    if not ready:
                        if proc.poll() is not None:
                            return
                        continue
                    data = os.read(master, 65536)
                except OSError:  # EIO: every holder of the terminal is gone
                    return
                if not data or not send(b"o", data):
                    return

        def on_input(kind: bytes, payload: bytes) -> None:
            if kind == b"i":
                os.write(master, payload)
            elif kind == b"c":
                os.write(master, b"\x04")
            elif kind == b"w":
                size = json.loads(payload)
                fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", int(size["rows"]), int(size["cols"]), 0, 0))

        pump = threading.Thread(target=output, daemon=True)
        pump.start()
        threading.Thread(target=_client_frames, args=(sock, proc, on_input), daemon=True).start()
        code = exit_code_of(proc.wait())
        pump.join()
        _end(send, code)

    def _relay_pipes(self, sock: socket.socket, proc: subprocess.Popen, send: Send, wait: Callable[[], int]) -> None:
        """`wait` waits for `proc` and answers its exit code as a shell reports it."""

        def pump(stream, kind: bytes) -> None:
            for chunk in iter(lambda: stream.read1(65536), b""):
                if not send(kind, chunk):
                    break
            stream.close()

        def on_input(kind: bytes, payload: bytes) -> None:
            if proc.stdin is None:
                return
            if kind == b"i":
                proc.stdin.write(payload)
                proc.stdin.flush()
            elif kind == b"c":
                proc.stdin.close()

        pumps = [
            threading.Thread(target=pump, args=(proc.stdout, b"o"), daemon=True),
            threading.Thread(target=pump, args=(proc.stderr, b"e"), daemon=True),
        ]
        for t in pumps:
            t.start()
        threading.Thread(target=_client_frames, args=(sock, proc, on_input), daemon=True).start()
        code = wait()
        for t in pumps:
            t.join()
        _end(send, code)

    # -- a command inside a job's task on the node -----------------------------------------------
    def _job_exec(self, sock: socket.socket, grant: dict, send: Send) -> None:
        runner = next((r for r in self._runners() if r.task.job_id == grant["job"]), None)
        if runner is None:
            _end(send, REFUSED, "the job runs no task on this node now")
            return
        proc = runner.exec(str(grant.get("command") or ""), wait=JOB_READY_WAIT)
        if proc is None:
            _end(send, REFUSED, "the job's task on this node is not prepared yet, or is over")
            return
        self._relay_pipes(sock, proc, send, lambda: runner.reap(proc))

    # -- a port forward ------------------------------------------------------------------------
    def _forward(self, sock: socket.socket, grant: dict, send: Send) -> None:
        host, port = str(grant.get("host")), int(grant.get("port") or 0)
        try:
            target = socket.create_connection((host, port), timeout=FORWARD_CONNECT_TIMEOUT)
        except OSError as exc:
            _end(send, REFUSED, f"cannot connect to {host}:{port} from the node: {exc}")
            return
        log.info("user session: a forward to %s:%d", host, port)
        with target:
            target.settimeout(None)
            if not send(b"k", b""):
                return
            splice(sock, target)


def splice(a: socket.socket, b: socket.socket) -> None:
    """Relay bytes both ways until both sides have finished sending (each end passed on as a half-close)."""

    def one_way(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    other = threading.Thread(target=one_way, args=(b, a), daemon=True)
    other.start()
    one_way(a, b)
    other.join()


def _controlling_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _client_frames(sock: socket.socket, proc: subprocess.Popen, on_input: Callable[[bytes, bytes], None]) -> None:
    """Applies the client's frames; a hang-up (or a frame too big or malformed) kills the session's processes."""
    from batchai.agent.exec_server import read_frame

    try:
        while (message := read_frame(sock, MAX_FRAME)) is not None:
            try:
                on_input(*message)
            except (OSError, ValueError, KeyError, TypeError):
                pass  # stdin closed, a bad size: the session goes on
    except (OSError, ValueError):
        pass
    if proc.poll() is None:
        kill_tree([proc.pid])


def _end(send: Send, code: int, error: str | None = None) -> None:
    send(b"x", json.dumps({"exitCode": code, **({"error": error} if error else {})}).encode())
