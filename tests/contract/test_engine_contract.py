"""The Engine port's contract (schedule, raise_event, status), the same on every adapter:

- `durabletask`: the embedded in-memory engine;
- `durable-task-scheduler`: the Durable Task Scheduler adapter, at its gRPC boundary: durabletask's
  own sidecar service (the in-memory backend) on loopback stands in for the managed scheduler;
- `durable-functions`: the Durable Functions client adapter, on the worker's event loop, against a
  stand-in of the extension's HTTP API (which records, and runs no orchestration).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import azure.durable_functions as df
import pytest

from batchai.adapters.durable_functions_flow import DurableFunctionsEngine
from tests.support.durable_extension import durable_extension
from tests.support.engines import started_engine

pytestmark = pytest.mark.timeout(60)
ADAPTERS = ["durabletask", "durable-task-scheduler", "durable-functions"]


def waiter(flow, input):
    """Waits for one "wake" and returns what it brought."""
    return (yield flow.event("wake"))


@contextmanager
def engine_on(adapter: str, worker_loop) -> Iterator:
    if adapter != "durable-functions":
        with started_engine(adapter, {"waiter": waiter}, {}) as engine:
            yield engine
        return
    with durable_extension() as extension:
        engine = DurableFunctionsEngine()

        async def trigger():  # what every trigger does first, on the worker's loop
            engine.use_client(df.DurableOrchestrationClient(extension.binding()))

        worker_loop.run(trigger())
        yield engine


@pytest.fixture(params=ADAPTERS)
def engine(request, worker_loop):
    with engine_on(request.param, worker_loop) as engine:
        yield engine


def test_an_unknown_instance_has_no_status_and_takes_no_event(engine):
    instance = f"nobody-{uuid.uuid4().hex[:8]}"
    assert engine.status(instance) is None
    assert engine.raise_event(instance, "wake", {"x": 1}) is False


def test_an_instance_starts_once_and_takes_events(engine):
    instance = f"w-{uuid.uuid4().hex[:8]}"
    assert engine.schedule("waiter", {"n": 1}, instance) is True
    assert engine.schedule("waiter", {"n": 2}, instance) is False
    assert engine.status(instance)["runtimeStatus"] in ("PENDING", "RUNNING")
    assert engine.raise_event(instance, "wake", {"x": 1}) is True


def test_the_engine_refuses_a_call_from_the_event_loop_it_serves(worker_loop):
    """The Durable Functions client runs on the worker's loop: waiting there for it would hang the worker."""
    with engine_on("durable-functions", worker_loop) as engine:

        async def inline():
            return engine.status("x")

        with pytest.raises(RuntimeError, match="worker thread"):
            worker_loop.run(inline())
