"""The Flow port: what an orchestration may do, the same on durabletask and Durable Functions.

An orchestration is a generator `fn(flow, input)` that yields `FlowTask`s made by a `Flow`:

    view = yield flow.activity("observe_job", {"jobId": job_id}, retry=STEP_RETRY)
    index, value = yield flow.any([flow.event("wake"), flow.timer(timedelta(seconds=5))])

Each engine adapter implements the primitive calls and registers `drive(flow, fn, input)` as
the engine's own orchestrator generator. `drive` is a trampoline between the two: it yields
the engine's task, post-processes the engine's answer (so `any` gives `(index, value)` on
both engines and the losers are cancelled), and turns each engine's own failure type into
`FlowTaskFailed`, so error handling in orchestrations is written once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Retry:
    """A declared retry policy for an activity: the engine retries, the orchestration does not."""

    first_interval: timedelta
    max_attempts: int
    backoff: float = 1.0


class FlowTaskFailed(Exception):
    """An activity or child orchestration failed (after its retries)."""


class FlowTask:
    """An engine task and what to do with its raw result before the orchestration sees it."""

    def __init__(self, task: Any, post: Callable[[Any], Any] | None = None):
        self.task = task
        self.post = post or (lambda raw: raw)


class Flow(ABC):
    """The engine-neutral orchestration context. Adapters subclass it; orchestrations use it."""

    @abstractmethod
    def activity(self, name: str, input: Any = None, *, retry: Retry | None = None) -> FlowTask: ...

    @abstractmethod
    def child(self, name: str, input: Any, instance_id: str) -> FlowTask: ...

    @abstractmethod
    def timer(self, delay: timedelta) -> FlowTask: ...

    @abstractmethod
    def event(self, name: str) -> FlowTask:
        """Wait for an external event. Names are lower-case: durabletask casefolds them."""

    @abstractmethod
    def all(self, tasks: Sequence[FlowTask]) -> FlowTask: ...

    @abstractmethod
    def any(self, tasks: Sequence[FlowTask]) -> FlowTask:
        """The first task to finish, as `(index, value)`; the others are cancelled where the engine can."""

    @abstractmethod
    def now(self) -> datetime:
        """The replay-safe current time, timezone-aware UTC."""

    @abstractmethod
    def status(self, value: Any) -> None: ...

    @abstractmethod
    def restart(self, input: Any) -> None:
        """Continue as new with `input`; the orchestration must return right after."""

    @property
    @abstractmethod
    def instance_id(self) -> str: ...

    @property
    @abstractmethod
    def replaying(self) -> bool: ...

    def failure(self, exc: BaseException) -> FlowTaskFailed:
        """The engine's task failure as `FlowTaskFailed`; adapters refine the message."""
        return FlowTaskFailed(str(exc))


class ContextFlow(Flow, ABC):
    """A Flow over an engine context object; both engines' contexts share these four names."""

    def __init__(self, ctx: Any):
        self._ctx = ctx

    def status(self, value: Any) -> None:
        self._ctx.set_custom_status(value)

    def restart(self, input: Any) -> None:
        self._ctx.continue_as_new(input)

    @property
    def instance_id(self) -> str:
        return self._ctx.instance_id

    @property
    def replaying(self) -> bool:
        return self._ctx.is_replaying


Orchestration = Callable[[Flow, Any], Generator[FlowTask, Any, Any]]


def drive(flow: Flow, fn: Orchestration, input: Any) -> Generator[Any, Any, Any]:
    """Run orchestration `fn` as an engine orchestrator generator (see module docstring)."""
    gen = fn(flow, input)
    send: Any = None
    failed: FlowTaskFailed | None = None
    while True:
        try:
            item = gen.throw(failed) if failed is not None else gen.send(send)
        except StopIteration as stop:
            return stop.value
        if not isinstance(item, FlowTask):
            raise TypeError(f"orchestrations yield FlowTasks made by the flow, not {type(item).__name__}")
        send, failed = None, None
        try:
            send = item.post((yield item.task))
        except Exception as exc:  # the engine's own failure type, whatever it is
            failed = flow.failure(exc)
