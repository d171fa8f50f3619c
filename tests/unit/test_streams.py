"""The API's event streams (batchai.api.live): bounded in number, each sends only what changed and ends."""

from __future__ import annotations

import asyncio

import pytest

from batchai.api import live
from batchai.errors import ApiError


def run(response) -> list[bytes]:
    sent: list[bytes] = []

    async def receive():
        await asyncio.sleep(3600)  # the client never leaves

    async def send(message):
        if message["type"] == "http.response.body":
            sent.append(message.get("body", b""))

    asyncio.run(response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send))
    return sent


def test_a_stream_sends_changes_only_and_ends_when_its_source_is_done(monkeypatch):
    monkeypatch.setattr(live, "TICK_SECONDS", 0.0)
    latest = live._Latest()
    values = iter([1, 1, 2, 2, 3])

    def tick():
        value = next(values)
        done = value == 3
        return ([("n", value)] if latest.changed(value) else []), done

    body = b"".join(run(live.stream(tick)))
    assert body.count(b"event: n") == 3 and b"data: 2" in body and body.startswith(b"retry: ")


def test_streams_are_bounded_and_give_their_slot_back_however_they_end(monkeypatch):
    monkeypatch.setenv("BATCHAI_MAX_STREAMS", "1")
    monkeypatch.setattr(live, "TICK_SECONDS", 0.0)
    first = live.stream(lambda: ([], True))
    with pytest.raises(ApiError) as refused:
        live.stream(lambda: ([], True))
    assert refused.value.status == 503
    run(first)
    run(live.stream(lambda: ([], True)))  # the slot is free again


def test_behind_the_functions_host_a_stream_is_one_snapshot(monkeypatch):
    monkeypatch.setenv("FUNCTIONS_WORKER_RUNTIME", "python")
    monkeypatch.delenv("BATCHAI_STREAM_SECONDS", raising=False)
    ticks = []
    run(live.stream(lambda: (ticks.append(1) or [("n", len(ticks))], False)))
    assert ticks == [1]
