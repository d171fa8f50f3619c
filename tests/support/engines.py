"""Run one orchestration on either durable engine, the same way, for tests written once.

`durabletask`: the real embedded engine (in-memory backend, worker, client) in this process.
`durable-functions`: DF's own replay classes driven by `DFReplay` (the extension's part faked).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchai.adapters.durable_functions_flow import as_df_orchestrator
from batchai.adapters.durabletask_engine import DurableTaskEngine
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
    dt = DurableTaskEngine()
    dt.register_orchestration("under_test", orchestration)
    for name, fn in activities.items():
        dt.register_activity(name, fn)
    dt.start()
    try:
        instance = f"test-{uuid.uuid4().hex[:8]}"
        dt.schedule("under_test", input, instance)
        for name, data in events:
            dt.raise_event(instance, name, data)
        status = dt.wait(instance, timeout=timeout)
        restarts = 0
        if status["runtimeStatus"] not in ("COMPLETED", "FAILED"):
            raise AssertionError(f"the orchestration did not end: {status}")
        return Outcome(status["output"], status["failure"], restarts)
    finally:
        dt.stop()
