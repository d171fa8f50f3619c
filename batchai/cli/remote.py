"""The user's end of a node session: a command or a shell relayed over the agent's exec service, and
`-L LOCAL:HOST:PORT` port forwards, each connection with a ticket the control plane issued
(batchai/exec_tickets.py; the node's end is batchai/agent/remote_login.py)."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from batchai.agent.exec_server import frame, read_frame
from batchai.agent.remote_login import splice
from batchai.cli.client import CliError

CONNECT_TIMEOUT = 10.0
MAX_FORWARDED = 64  # connections relayed at once per command; more wait in the listen backlog
TICKET_MARGIN = 30.0  # a forward ticket is renewed this long before it expires
STDIN_CHUNK = 32 * 1024


@dataclass
class Forward:
    local_port: int
    host: str
    port: int

    @classmethod
    def parse(cls, spec: str) -> Forward:
        """ssh's `-L [bind:]LOCAL:HOST:PORT` (only the loopback binds: a forward is the user's own)."""
        parts = spec.split(":")
        if len(parts) == 4 and parts[0] in ("127.0.0.1", "localhost"):
            parts = parts[1:]
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit() or not parts[1]:
            raise CliError(f"-L {spec}: use LOCAL_PORT:HOST:PORT, e.g. 8888:localhost:8888")
        local, port = int(parts[0]), int(parts[2])
        if not (0 <= local < 65536 and 0 < port < 65536):
            raise CliError(f"-L {spec}: ports go from 1 to 65535 (0 for the local one: any free port)")
        return cls(local, parts[1], port)


Session = Callable[[dict], dict]  # an execSession body -> {"ipAddress", "port", "ticket", "expiresAt"}


def _connect(answer: dict) -> socket.socket:
    try:
        sock = socket.create_connection((answer["ipAddress"], int(answer["port"])), timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise CliError(f"cannot reach the node agent at {answer['ipAddress']}:{answer['port']}: {exc}") from None
    sock.settimeout(None)
    return sock


def execute(session: Session, command: str | None) -> int:
    """Run `command` (None: a login shell) on the node; its exit code. Our stdin goes to it; a shell on
    a terminal gets a pseudo-terminal there."""
    tty = command is None and sys.stdin.isatty() and sys.stdout.isatty()
    answer = session({"command": command})
    sock = _connect(answer)
    request = {"ticket": answer["ticket"], "tty": tty, "term": os.environ.get("TERM", "xterm")}
    sock.sendall(json.dumps(request).encode() + b"\n")
    lock = threading.Lock()

    def send(kind: bytes, payload: bytes) -> None:
        with lock:
            sock.sendall(frame(kind, payload))

    restore = _raw_terminal(send) if tty else None
    threading.Thread(target=_pump_stdin, args=(send,), daemon=True).start()
    try:
        while (message := read_frame(sock)) is not None:
            kind, payload = message
            if kind == b"x":
                result = json.loads(payload)
                if result.get("error"):
                    raise CliError(f"the node refused: {result['error']}", exit_code=int(result.get("exitCode", 255)))
                return int(result["exitCode"])
            stream = sys.stdout.buffer if kind == b"o" else sys.stderr.buffer
            stream.write(payload)
            stream.flush()
        raise CliError("the node agent closed the connection", exit_code=255)
    finally:
        if restore:
            restore()
        sock.close()


def _pump_stdin(send: Callable[[bytes, bytes], None]) -> None:
    try:
        while data := os.read(sys.stdin.fileno(), STDIN_CHUNK):
            send(b"i", data)
        send(b"c", b"")
    except (OSError, ValueError):
        pass


def _raw_terminal(send: Callable[[bytes, bytes], None]) -> Callable[[], None]:
    """Our terminal raw (keys go to the remote shell as typed), its size sent now and on each resize."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)

    def size(*_args) -> None:
        cols, rows = os.get_terminal_size(sys.stdout.fileno())
        try:
            send(b"w", json.dumps({"rows": rows, "cols": cols}).encode())
        except OSError:
            pass

    size()
    previous = signal.signal(signal.SIGWINCH, size)

    def restore() -> None:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous)

    return restore


class Forwarder:
    """Listens on 127.0.0.1 for each forward; each connection is relayed to HOST:PORT as the node sees it."""

    def __init__(self, session: Session, forwards: list[Forward]):
        self.session = session
        self.forwards = forwards
        self._tickets: dict[int, dict] = {}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_FORWARDED)
        self.listeners: list[tuple[socket.socket, Forward]] = []
        for forward in forwards:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind(("127.0.0.1", forward.local_port))
            except OSError as exc:
                raise CliError(f"cannot listen on 127.0.0.1:{forward.local_port}: {exc}") from None
            listener.listen(MAX_FORWARDED)
            self.listeners.append((listener, forward))

    def bound(self) -> list[tuple[int, Forward]]:
        return [(listener.getsockname()[1], forward) for listener, forward in self.listeners]

    def _ticket(self, index: int, forward: Forward) -> dict:
        with self._lock:
            answer = self._tickets.get(index)
            if answer is None or answer["_expires"] - TICKET_MARGIN < time.time():
                answer = dict(self.session({"forward": {"host": forward.host, "port": forward.port}}))
                answer["_expires"] = _epoch(answer["expiresAt"])
                self._tickets[index] = answer
            return answer

    def serve(self, stop: threading.Event) -> None:
        by_socket = {listener: (i, forward) for i, (listener, forward) in enumerate(self.listeners)}
        while not stop.is_set():
            ready, _, _ = select.select(list(by_socket), [], [], 0.2)
            for listener in ready:
                conn, _ = listener.accept()
                if not self._slots.acquire(blocking=False):
                    conn.close()
                    continue
                threading.Thread(target=self._relay, args=(conn, *by_socket[listener]), daemon=True).start()
        for listener, _ in self.listeners:
            listener.close()

    def _relay(self, conn: socket.socket, index: int, forward: Forward) -> None:
        try:
            with conn:
                try:
                    answer = self._ticket(index, forward)
                    agent = _connect(answer)
                except CliError as exc:
                    print(f"forward to {forward.host}:{forward.port}: {exc}", file=sys.stderr, flush=True)
                    return
                with agent:
                    agent.sendall(json.dumps({"ticket": answer["ticket"]}).encode() + b"\n")
                    reply = read_frame(agent)
                    if reply is None or reply[0] != b"k":
                        error = json.loads(reply[1]).get("error") if reply and reply[0] == b"x" else "the agent hung up"
                        print(f"forward to {forward.host}:{forward.port}: {error}", file=sys.stderr, flush=True)
                        return
                    splice(conn, agent)
        finally:
            self._slots.release()


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
