"""The node agents' side door: the node protocol (batchai/node_protocol.py) over HTTP.

    POST /internal/v1/nodes/{node}/register    POST /internal/v1/nodes/{node}/heartbeat
    POST /internal/v1/nodes/{node}/files       POST /internal/v1/nodes/_enroll

Agents authenticate with their node's own credential (batchai/node_identity.py), not the user's
token; a machine that joins an attached cluster enrolls with the cluster's enrollment token first.
A credential is good only for its node's paths and only while that node exists (403 otherwise). A heartbeat is a long poll: with
nothing to say either way, the answer waits until there is something for the node (a task, a
kill) or its `waitSeconds` pass.

A plain ASGI app, not FastAPI routes: at a few hundred heartbeats a second, FastAPI's routing,
middleware and dependency machinery cost the control plane more than the protocol itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections import defaultdict
from pathlib import Path
from urllib.parse import unquote

import orjson
from starlette.concurrency import run_in_threadpool

from batchai import node_identity
from batchai import node_protocol as protocol
from batchai.api.arm import json_object, read_body
from batchai.errors import ApiError

log = logging.getLogger("batchai.api.nodes")

PREFIX = "/internal/v1/nodes/"
ENROLL = "_enroll"
ACTIONS = ("register", "heartbeat", "files")
MAX_WAIT_SECONDS = 30.0
MAX_BODY_BYTES = 1 << 20  # a heartbeat names a node's tasks and results: far below this


class NodeWaker:
    """Wakes long-polling heartbeats from any thread (activities run on the engine's threads)."""

    def __init__(self):
        self.loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def event(self, node_id: str) -> asyncio.Event:
        return self._events[node_id]

    def wake(self, node_ids: list[str]) -> None:
        if self.loop is None:
            return
        for node_id in node_ids:
            self.loop.call_soon_threadsafe(self._events[node_id].set)


class PeerWakes:
    """Node wakes across the embedded host's processes, any of which may hold a node's long poll.

    Each process listens on a datagram socket `<directory>/<pid>.sock`; `wake` wakes its own
    process's polls and sends the node ids to every other socket there. A socket whose process
    is gone (a kill -9) is removed by the first wake that finds it dead.
    """

    MAX_DATAGRAM = 32 * 1024  # node ids per datagram: a large wake is sent in parts

    def __init__(self, directory: Path, waker: NodeWaker, name: str | None = None):
        self.directory = Path(directory)
        self.waker = waker
        self.path = self.directory / f"{name or os.getpid()}.sock"
        self._socket: socket.socket | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path.unlink(missing_ok=True)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(self.path))
        threading.Thread(target=self._receive, args=(self._socket,), name="peer-wakes", daemon=True).start()

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
            self.path.unlink(missing_ok=True)

    def wake(self, node_ids: list[str]) -> None:
        self.waker.wake(node_ids)
        if self._socket is None or not node_ids:
            return
        parts: list[bytes] = []
        part: list[bytes] = []
        size = 0
        for node_id in node_ids:
            encoded = node_id.encode()
            if part and size + len(encoded) + 1 > self.MAX_DATAGRAM:
                parts.append(b"\n".join(part))
                part, size = [], 0
            part.append(encoded)
            size += len(encoded) + 1
        parts.append(b"\n".join(part))
        for peer in self.directory.glob("*.sock"):
            if peer == self.path:
                continue
            try:
                for data in parts:
                    self._socket.sendto(data, str(peer))
            except (ConnectionRefusedError, FileNotFoundError):
                peer.unlink(missing_ok=True)  # its process is gone
            except OSError:
                log.warning("waking nodes through %s failed", peer, exc_info=True)

    def _receive(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(self.MAX_DATAGRAM + 1024)
            except OSError:
                return  # closed
            self.waker.wake([node_id.decode() for node_id in data.split(b"\n") if node_id])


class NodeDoor:
    """The ASGI app for paths under PREFIX."""

    def __init__(self, services, node_key: bytes, waker: NodeWaker):
        self.services = services
        self.key = node_key
        self.waker = waker

    async def __call__(self, scope, receive, send) -> None:
        try:
            answer = await self._handle(scope, receive)
            status = 200
        except ApiError as exc:
            answer, status = exc.to_body(), exc.status
        except Exception:  # a fault of ours, not the node's: logged without the body (it may hold secrets)
            log.exception("node call %s %s failed", scope["method"], scope["path"][:200])
            answer, status = ApiError(500, "InternalServerError", "The server failed to process the node call.").to_body(), 500
        body = orjson.dumps(answer)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope, receive) -> dict:
        node_id, _, action = scope["path"][len(PREFIX) :].partition("/")
        enrolling = node_id == ENROLL and not action
        if scope["method"] != "POST" or not (enrolling or (action in ACTIONS and node_id)):
            raise ApiError.not_found(f"No such node operation: {scope['method']} {scope['path']}")
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"").decode("latin-1")
        scheme, _, presented = header.partition(" ")
        if scheme != "Bearer" or not presented:
            raise ApiError(401, "AuthenticationFailed", "A node call needs its node's credential (Authorization: Bearer).")
        node_id = unquote(node_id)
        if not enrolling and not node_identity.credential_matches(self.key, node_id, presented):
            raise ApiError(403, "AuthorizationFailed", "This credential is not the node's.")
        body = await _json_object(receive)
        if action in ("register", "files") and await run_in_threadpool(self.services.store.get_node, node_id) is None:
            raise _removed()
        try:
            if enrolling:
                return await run_in_threadpool(protocol.enroll, self.services, self.key, presented, body)
            if action == "register":
                return await run_in_threadpool(protocol.register, self.services, node_id, body)
            if action == "files":
                return await run_in_threadpool(protocol.receive_file, self.services, node_id, body)
            return await self._heartbeat(node_id, body)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ApiError.bad_request(f"A malformed node {action}: {type(exc).__name__}: {exc}") from None

    async def _heartbeat(self, node_id: str, body: dict) -> dict:
        event = self.waker.event(node_id)
        event.clear()
        answer = await run_in_threadpool(protocol.beat, self.services, node_id, body)
        if answer["action"] == "shutdown":  # the protocol's answer to a node that does not exist
            raise _removed()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(float(body.get("waitSeconds", 0)), MAX_WAIT_SECONDS)
        quiet = {**body, "finished": []}
        # A wake with nothing new for this node (its task already rode back on its report's answer) is
        # looked at here: answering it would cost the node a round trip for nothing.
        while not (answer["start"] or answer["kill"] or answer["action"] != "ok" or answer["ack"]):
            try:
                await asyncio.wait_for(event.wait(), timeout=max(0.0, deadline - loop.time()))
            except TimeoutError:
                break
            event.clear()
            answer = await run_in_threadpool(protocol.beat, self.services, node_id, quiet)
        return answer


def _removed() -> ApiError:
    return ApiError(403, "AuthorizationFailed", "The node is not in any cluster (it was removed).")


async def _json_object(receive) -> dict:
    return json_object(await read_body(receive, MAX_BODY_BYTES, "A node request"))
