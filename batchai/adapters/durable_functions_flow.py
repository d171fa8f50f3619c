"""The Flow port and the Engine port on Azure Durable Functions (azure-functions-durable 1.x).

`DurableFunctionsFlow` maps the Flow calls onto a `DurableOrchestrationContext`; the
differences from durabletask that matter (see the engine notes) are absorbed here:
- retries: `RetryOptions` has a first interval and a number of attempts, no backoff, so a
  declared backoff is not applied on this engine (the interval stays constant);
- timers take an absolute time: now (replay-safe) + delay;
- `any`: DF can cancel timers but not event waits, so only losing timers are cancelled;
- a failed task is thrown in as a bare `Exception("Reason \\n Details")`; the reason is kept.

`DurableFunctionsEngine` is the Engine port over a `DurableOrchestrationClient`, made from the
durable client binding of the current invocation (the extension's management endpoints).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.durable_functions as df
from azure.durable_functions.models.Task import TimerTask

from batchai.flow import ContextFlow, FlowTask, FlowTaskFailed, Orchestration, Retry, drive

DETAILS_SEPARATOR = " \n "  # how DF joins a failure's reason and details


def retry_options(retry: Retry) -> df.RetryOptions:
    return df.RetryOptions(
        first_retry_interval_in_milliseconds=max(1, int(retry.first_interval.total_seconds() * 1000)),
        max_number_of_attempts=retry.max_attempts,
    )


class DurableFunctionsFlow(ContextFlow):
    def activity(self, name: str, input: Any = None, *, retry: Retry | None = None) -> FlowTask:
        if retry is None:
            return FlowTask(self._ctx.call_activity(name, input))
        return FlowTask(self._ctx.call_activity_with_retry(name, retry_options(retry), input))

    def child(self, name: str, input: Any, instance_id: str) -> FlowTask:
        return FlowTask(self._ctx.call_sub_orchestrator(name, input, instance_id))

    def timer(self, delay: timedelta) -> FlowTask:
        return FlowTask(self._ctx.create_timer(self._ctx.current_utc_datetime + delay))

    def event(self, name: str) -> FlowTask:
        return FlowTask(self._ctx.wait_for_external_event(name))

    def all(self, tasks: Sequence[FlowTask]) -> FlowTask:
        return FlowTask(
            self._ctx.task_all([t.task for t in tasks]), lambda raw: [t.post(value) for t, value in zip(tasks, raw, strict=True)]
        )

    def any(self, tasks: Sequence[FlowTask]) -> FlowTask:
        def post(winner):
            index = next(i for i, t in enumerate(tasks) if t.task is winner)
            for i, t in enumerate(tasks):
                if i != index and isinstance(t.task, TimerTask) and not t.task.is_completed:
                    t.task.cancel()
            return index, tasks[index].post(winner.result)

        return FlowTask(self._ctx.task_any([t.task for t in tasks]), post)

    def now(self) -> datetime:
        now = self._ctx.current_utc_datetime
        return now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)

    def failure(self, exc: BaseException) -> FlowTaskFailed:
        return FlowTaskFailed(str(exc).split(DETAILS_SEPARATOR, 1)[0].strip())


def as_df_orchestrator(name: str, fn: Orchestration) -> Callable:
    """`fn` as a Durable Functions orchestrator (they take only the context; input comes from it)."""

    def orchestrator(context: df.DurableOrchestrationContext):
        return drive(DurableFunctionsFlow(context), fn, context.get_input())

    orchestrator.__name__ = name
    return orchestrator


class DurableFunctionsEngine:
    """Engine port over the Durable Functions client of the current host.

    Functions get a client only through a durable client input binding; it names the
    extension's management endpoints, which are the same for the whole host, so every trigger
    hands its client over (`use_client`) and the latest one serves activities too.

    The client's calls are coroutines over one module-wide aiohttp session, which belongs to the
    event loop it was first used on: they all run on the worker's own loop (the one the triggers
    run on), submitted from the worker threads where the port is called. A fresh loop per call
    (`asyncio.run`) leaves the session on a closed loop and fails every call after the first.
    """

    def __init__(self, timeout: float = 60.0):
        self._client: df.DurableOrchestrationClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeout = timeout

    def use_client(self, client: df.DurableOrchestrationClient) -> None:
        """Called by a trigger, on the worker's event loop."""
        self._client = client
        self._loop = asyncio.get_running_loop()

    def _call(self, work: Callable[[df.DurableOrchestrationClient], Coroutine[Any, Any, Any]]) -> Any:
        if self._client is None or self._loop is None:
            raise RuntimeError("no durable client binding has been seen yet in this host")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:  # waiting here for the loop would block the loop forever
            raise RuntimeError("the engine port was called on the event loop: call it from a worker thread")
        return asyncio.run_coroutine_threadsafe(work(self._client), self._loop).result(self._timeout)

    def schedule(self, name: str, input: Any, instance_id: str) -> bool:
        """Start `name` as `instance_id`; False (and nothing done) when that instance already exists."""
        if self.status(instance_id) is not None:
            return False
        try:
            self._call(lambda client: client.start_new(name, instance_id, input))
        except Exception:
            if self.status(instance_id) is not None:  # started meanwhile by another caller
                return False
            raise
        return True

    def raise_event(self, instance_id: str, name: str, data: Any = None) -> bool:
        """Deliver an event; False when there is no such running instance (events are only hints)."""
        try:
            self._call(lambda client: client.raise_event(instance_id, name, data))
            return True
        except Exception as exc:  # the client raises plain Exceptions, with these texts for 404 and 410
            if f"No instance with ID {instance_id} found" in str(exc) or "is gone" in str(exc):
                return False
            raise

    def status(self, instance_id: str) -> dict | None:
        state = self._call(lambda client: client.get_status(instance_id))
        if state is None or state.runtime_status is None:
            return None
        failed = state.runtime_status.name == "Failed"
        return {
            "instanceId": instance_id,
            "runtimeStatus": state.runtime_status.name.upper(),
            "customStatus": state.custom_status,
            "output": None if failed else state.output,
            "failure": str(state.output) if failed else None,
        }
