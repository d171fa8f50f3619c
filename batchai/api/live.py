"""Read-only additions for people watching a cluster (the dashboard, scripts): ours, beyond 2018-05-01.

GET .../clusters/{c}/nodes               each node: state, job (or the jobs sharing its GPUs), GPUs, address
GET .../clusters/{c}/queue               each queued job's position and why it waits (batchai.queue_view)
GET .../clusters/{c}/stream              server-sent events: `cluster` {cluster, nodes, queue} on change
GET .../experiments/{e}/stream           `jobs` (the experiment's first jobs, with their state) on change
GET .../experiments/{e}/jobs/{j}/stream  `job` on change, `files` (its log files' names), `log` {file, offset, next, text}, `end`
GET .../experiments/{e}/sweeps/{s}/stream  `sweep` on change, `end` once it has ended

They pass the ARM gate like every read. A stream polls the store off the event loop every second,
sends only what changed, ends after `BATCHAI_STREAM_SECONDS` (the client reconnects: `retry`), and
at most `BATCHAI_MAX_STREAMS` are open in a process (503 beyond). Behind the Functions HTTP trigger,
which buffers whole responses, the default length is 0: one snapshot per request.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from batchai import queue_view, render, sweep_runs
from batchai.api.clusters import CLUSTER, cluster_path
from batchai.api.deps import WS, require, services
from batchai.api.jobs import JOB, job_path
from batchai.api.sweeps import SWEEP, sweep_path
from batchai.api.workspaces import experiment_path
from batchai.errors import ApiError
from batchai.job_state import TERMINAL, state_of
from batchai.lifecycle import node_state
from batchai.output_sync import STDOUTERR, blob_prefix
from batchai.ports import Record
from batchai.services import Services

router = APIRouter()
TICK_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
LOG_CHUNK = 256 * 1024  # the most of one log file a stream sends per tick
LOG_TAIL = 64 * 1024  # where a stream that asks for the tail starts
EXPERIMENT_JOBS = 200  # the jobs an experiment's stream shows (the oldest; the API lists them all)
Tick = Callable[[], tuple[list[tuple[str, object]], bool]]  # (events to send, whether the stream is done)


class _Slots:
    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.open = 0

    def take(self, limit: int) -> bool:
        with self.mutex:
            if self.open >= limit:
                return False
            self.open += 1
            return True

    def give(self) -> None:
        with self.mutex:
            self.open -= 1


_slots = _Slots()


def _seconds() -> float:
    default = "0" if os.environ.get("FUNCTIONS_WORKER_RUNTIME") else "300"
    return float(os.environ.get("BATCHAI_STREAM_SECONDS", default))


class _Stream(StreamingResponse):
    """Gives its slot back however the response ends (finished, client gone, cancelled)."""

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            _slots.give()


def _event(name: str, data: object) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def stream(tick: Tick) -> StreamingResponse:
    if not _slots.take(int(os.environ.get("BATCHAI_MAX_STREAMS", "64"))):
        raise ApiError(503, "ServerBusy", "Too many open streams on this server; retry in a moment.")
    length = _seconds()

    async def body() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        deadline = time.monotonic() + length
        quiet_since = time.monotonic()
        while True:
            events, done = await run_in_threadpool(tick)
            for name, data in events:
                yield _event(name, data)
            if events:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                yield b": keep-alive\n\n"
                quiet_since = time.monotonic()
            if done or time.monotonic() >= deadline:
                return
            await asyncio.sleep(TICK_SECONDS)

    return _Stream(body(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


class _Latest:
    """What a stream sent last of one kind, so that it sends only changes."""

    def __init__(self) -> None:
        self.text = ""

    def changed(self, data: object) -> bool:
        text = json.dumps(data, sort_keys=True)
        if text == self.text:
            return False
        self.text = text
        return True


def nodes_view(svc: Services, cluster_id: str) -> list[dict]:
    now, timeout = time.time(), svc.settings.node_timeout_seconds
    return [
        {
            "name": n.name,
            "state": node_state(n, now, timeout),
            "job": n.job,
            **({"sharedBy": n.share_map()} if n.shares else {}),  # job -> the GPU indices it holds (gpusPerNode)
            "address": n.address or "127.0.0.1",
            "gpus": n.gpu_list(),
            "lastSeenSecondsAgo": round(now - n.last_seen, 1) if n.last_seen else None,
            **({"error": n.error} if n.error else {}),
        }
        for n in sorted(svc.store.nodes(cluster_id), key=lambda n: n.name)
    ]


@router.get(CLUSTER + "/nodes")
def list_nodes(request: Request, sub: str, rg: str, ws: str, cluster: str):
    svc = services(request)
    record = require(svc, cluster_path(sub, rg, ws, cluster), "cluster")
    return {"value": nodes_view(svc, record.id)}


@router.get(CLUSTER + "/queue")
def cluster_queue(request: Request, sub: str, rg: str, ws: str, cluster: str):
    svc = services(request)
    return queue_view.explain(svc, require(svc, cluster_path(sub, rg, ws, cluster), "cluster"))


def watch(svc: Services, rid: str, name: str, snapshot: Callable[[Record], dict], ended: Callable[[dict], str | None] = lambda _: None):
    """A stream of the resource's `snapshot` as event `name` whenever it changes; `gone` once the
    resource is deleted, `end` once `ended(snapshot)` names a final state."""
    latest = _Latest()

    def tick():
        record = svc.store.get(rid)
        if record is None:
            return [("gone", {"id": rid})], True
        body = snapshot(record)
        events: list[tuple[str, object]] = [(name, body)] if latest.changed(body) else []
        final = ended(body)
        if final:
            events.append(("end", {"executionState": final}))
        return events, bool(final)

    return stream(tick)


@router.get(CLUSTER + "/stream")
def cluster_stream(request: Request, sub: str, rg: str, ws: str, cluster: str):
    svc = services(request)
    rid = require(svc, cluster_path(sub, rg, ws, cluster), "cluster").id

    def snapshot(record: Record) -> dict:
        body = render.cluster(record, svc.store, svc.settings.node_timeout_seconds)
        return {"cluster": body, "nodes": nodes_view(svc, rid), "queue": queue_view.explain(svc, record)}

    return watch(svc, rid, "cluster", snapshot)


@router.get(WS + "/experiments/{exp}/stream")
def experiment_stream(request: Request, sub: str, rg: str, ws: str, exp: str):
    svc = services(request)
    rid = require(svc, experiment_path(sub, rg, ws, exp), "experiment").id

    def snapshot(record: Record) -> dict:
        jobs = svc.store.children(rid, "jobs", limit=EXPERIMENT_JOBS)
        return {"value": [_job_row(j) for j in jobs], "more": len(jobs) >= EXPERIMENT_JOBS}

    return watch(svc, rid, "jobs", snapshot)


def _job_row(record) -> dict:
    """What a list of jobs shows of one."""
    body = render.job(record)
    keep = ("executionState", "executionStateTransitionTime", "schedulingPriority", "nodeCount", "creationTime", "executionInfo", "cluster")
    body["properties"] = {k: v for k, v in body["properties"].items() if k in keep}
    return body


class _LogTail:
    """New bytes of a job's log files, whole lines only while the job runs."""

    def __init__(self, svc: Services, file: str, offset: int):
        self.svc, self.file, self.offset = svc, file, offset

    def files(self, record) -> dict[str, int]:
        """name -> size of the job's log files (the execution scripts excepted)."""
        if self.svc.blobs is not None:
            prefix = blob_prefix(record, STDOUTERR)
            return {b.name[len(prefix) :]: b.size for b in self.svc.blobs.list(prefix) if "/" not in b.name[len(prefix) :]}
        paths = record.internal.get("paths")
        root = Path(paths["stdouterr"]) if paths else None
        if root is None or not root.is_dir():
            return {}
        return {
            p.name: p.stat().st_size
            for p in sorted(root.iterdir())
            if p.is_file() and not p.is_symlink() and not p.name.startswith("execution")
        }

    def read(self, record, size: int, ended: bool) -> dict | None:
        if self.offset < 0:
            self.offset = max(0, size - LOG_TAIL)
        if size <= self.offset:
            return None
        end = min(size, self.offset + LOG_CHUNK)
        if self.svc.blobs is not None:
            data = (self.svc.blobs.get(blob_prefix(record, STDOUTERR) + self.file) or b"")[self.offset : end]
        else:
            with open(Path(record.internal["paths"]["stdouterr"]) / self.file, "rb") as f:
                f.seek(self.offset)
                data = f.read(end - self.offset)
        if not ended and end == size and b"\n" in data:
            data = data[: data.rindex(b"\n") + 1]  # a line still being written comes whole, later
        elif not ended and end == size:
            return None
        start = self.offset
        self.offset += len(data)
        return {"file": self.file, "offset": start, "next": self.offset, "text": data.decode(errors="replace")}


@router.get(JOB + "/stream")
def job_stream(request: Request, sub: str, rg: str, ws: str, exp: str, job: str, file: str = "stdout.txt", offset: int = -1):
    """`offset`: where in `file` to start (-1: its last 64 KiB); a client that reconnects passes the
    `next` of the last `log` event it got."""
    svc = services(request)
    if "/" in file or file.startswith("."):
        raise ApiError.bad_request("file must be the name of one of the job's log files.", target="file")
    rid = require(svc, job_path(sub, rg, ws, exp, job), "job").id
    tail = _LogTail(svc, file, offset)
    latest_job, latest_files = _Latest(), _Latest()

    def tick():
        record = svc.store.get(rid)
        if record is None:
            return [("gone", {"id": rid})], True
        ended = state_of(record) in TERMINAL
        body = render.job(record)
        events: list[tuple[str, object]] = [("job", body)] if latest_job.changed(body) else []
        files = tail.files(record)
        if latest_files.changed(sorted(files)):  # new files, not every write
            events.append(("files", sorted(files)))
        chunk = tail.read(record, files[file], ended) if file in files else None
        if chunk is not None:
            events.append(("log", chunk))
        done = ended and (file not in files or tail.offset >= files[file])
        if done:
            events.append(("end", {"executionState": record.properties.get("executionState")}))
        return events, done

    return stream(tick)


@router.get(SWEEP + "/stream")
def sweep_stream(request: Request, sub: str, rg: str, ws: str, exp: str, sweep: str):
    svc = services(request)
    rid = require(svc, sweep_path(sub, rg, ws, exp, sweep), "sweep").id

    def ended(body: dict) -> str | None:
        state = body["properties"].get("executionState")
        return state if state not in (None, "running") else None

    return watch(svc, rid, "sweep", lambda record: sweep_runs.render(svc, record), ended)
