"""Run one orchestration on either durable engine, the same way, for tests written once.

`durabletask`: the real embedded engine (in-memory backend, worker, client) in this process.
`durable-task-scheduler`: the Durable Task Scheduler adapter (the SDK's scheduler worker and client)
against durabletask's in-memory sidecar service on loopback, standing in for the managed scheduler.
`durable-functions`: DF's own replay classes driven by `DFReplay` (the extension's part faked).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from batchai.adapters.durable_functions_flow import as_df_orchestrator
from batchai.adapters.durabletask_engine import DurableTaskEngine, DurableTaskSchedulerEngine, LoopbackBackend
from tests.support.df_replay import DFReplay

ENGINES = ["durabletask", "durable-functions"]


@dataclass
class Outcome:
    output: Any
    error: str | None
    restarts: int


def run_on(
    engine: str,
    orchestration: Callable,
    activities: dict[str, Callable[[Any], Any]],
    input: Any,
    *,
    events: list[tuple[str, Any]] = (),
    timeout: float = 60,
) -> Outcome:
    if engine == "durable-functions":
        replay = DFReplay(as_df_orchestrator("under_test", orchestration), activities)
        for name, data in events:
            replay.raise_event(name, data)
        run = replay.run(input)
        return Outcome(run.output, run.error, len(run.restarts))
    with started_engine(engine, {"under_test": orchestration}, activities) as dt:
        instance = f"test-{uuid.uuid4().hex[:8]}"
        dt.schedule("under_test", input, instance)
        for name, data in events:
            dt.raise_event(instance, name, data)
        status = dt.wait(instance, timeout=timeout)
        restarts = 0
        if status["runtimeStatus"] not in ("COMPLETED", "FAILED"):
            raise AssertionError(f"the orchestration did not end: {status}")
        return Outcome(status["output"], status["failure"], restarts)


@contextmanager
def started_engine(engine: str, orchestrations: dict[str, Callable], activities: dict[str, Callable]) -> Iterator[DurableTaskEngine]:
    """A started durabletask engine (`durabletask` or `durable-task-scheduler`) running these."""
    sidecar = None
    if engine == "durable-task-scheduler":
        sidecar = LoopbackBackend()
        dt: DurableTaskEngine = DurableTaskSchedulerEngine(f"http://{sidecar.start()}", "batchai-tests", None)
    else:
        dt = DurableTaskEngine()
    for name, fn in orchestrations.items():
        dt.register_orchestration(name, fn)
    for name, fn in activities.items():
        dt.register_activity(name, fn)
    dt.start()
    try:
        yield dt
    finally:
        dt.stop()
        if sidecar is not None:
            sidecar.stop(grace=1.0)
