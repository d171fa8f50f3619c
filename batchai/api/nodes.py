"""The node agents' side door: the node protocol (batchai/node_protocol.py) over HTTP.

Agents authenticate with the node token, not the user's. A heartbeat is a long poll: with
nothing to say either way, the answer waits until there is something for the node (a task, a
kill) or its `waitSeconds` pass.
"""

from __future__ import annotations

import asyncio
import hmac
from collections import defaultdict

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from batchai import node_protocol as protocol
from batchai.errors import ApiError

router = APIRouter(prefix="/internal/v1/nodes")
MAX_WAIT_SECONDS = 30.0


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


def _authorize(request: Request) -> None:
    header = request.headers.get("authorization", "")
    if not hmac.compare_digest(header, f"Bearer {request.app.state.node_token}"):
        raise ApiError(401, "AuthenticationFailed", "The node token is missing or wrong.")


@router.post("/{node_id}/register")
async def register(request: Request, node_id: str):
    _authorize(request)
    body = await request.json()
    return await run_in_threadpool(protocol.register, request.app.state.services, node_id, body)


@router.post("/{node_id}/heartbeat")
async def heartbeat(request: Request, node_id: str):
    _authorize(request)
    body = await request.json()
    svc, waker = request.app.state.services, request.app.state.node_waker
    event = waker.event(node_id)
    event.clear()
    answer = await run_in_threadpool(protocol.beat, svc, node_id, body)
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
        answer = await run_in_threadpool(protocol.beat, svc, node_id, quiet)
    return answer
