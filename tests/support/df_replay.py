"""A stand-in for the Durable Functions extension that drives DF's own replay machinery.

The orchestrator runs exactly as in Azure: a `DurableOrchestrationContext` built from a history
JSON, the real `Orchestrator.handle` replaying the generator over it. This class plays the
extension's part: it reads the tasks the orchestrator left open, executes them (activities are
plain callables, timers fire on a fake clock, events come from a queue), appends the matching
history events (TaskScheduled/TaskCompleted/TaskFailed, TimerCreated/TimerFired, EventRaised)
as a new episode, and replays again until the orchestration completes, fails, or continues as
new (then it starts over with the new input, as the extension does).

Each round runs every open activity; if none is open it delivers one queued event that someone
waits for; otherwise it fires the earliest timer, advancing the clock to it.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.durable_functions import Orchestrator
from azure.durable_functions.models import DurableOrchestrationContext
from azure.durable_functions.models.actions.CallActivityAction import CallActivityAction
from azure.durable_functions.models.actions.CallActivityWithRetryAction import CallActivityWithRetryAction
from azure.durable_functions.models.actions.CreateTimerAction import CreateTimerAction
from azure.durable_functions.models.actions.NoOpAction import NoOpAction
from azure.durable_functions.models.actions.WaitForExternalEventAction import WaitForExternalEventAction
from azure.durable_functions.models.history.HistoryEventType import HistoryEventType as H

CONTINUE_AS_NEW = 4  # ActionType


@dataclass
class Run:
    output: Any = None
    error: str | None = None
    custom_status: Any = None
    restarts: list = field(default_factory=list)  # the inputs of each continue-as-new
    calls: list = field(default_factory=list)  # (activity name, input) in the order they ran
    timers_fired: int = 0
    events_delivered: list = field(default_factory=list)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DFReplay:
    def __init__(
        self,
        orchestrator: Callable,
        activities: dict[str, Callable[[Any], Any]],
        *,
        instance_id: str = "df-test",
        start: datetime = datetime(2026, 1, 1, tzinfo=UTC),
    ):
        self.orchestrator = orchestrator
        self.activities = activities
        self.instance_id = instance_id
        self.clock = start
        self.events: list[tuple[str, Any]] = []  # queued external events

    def raise_event(self, name: str, data: Any = None) -> None:
        self.events.append((name, data))

    # ----- the extension's loop ---------------------------------------------------------------

    def run(self, input: Any, *, max_rounds: int = 2000, max_restarts: int = 20) -> Run:
        run = Run()
        for _ in range(max_restarts + 1):
            restart = self._episode(input, run, max_rounds)
            if restart is None:
                return run
            run.restarts.append(restart)
            input = restart
        raise AssertionError(f"more than {max_restarts} continue-as-new restarts")

    def _episode(self, input: Any, run: Run, max_rounds: int):
        self._history: list[dict] = []
        self._next_event_id = 0
        self._append_episode([self._event(H.EXECUTION_STARTED, Name="orchestrator", Version="", Input=json.dumps(input))])
        for _ in range(max_rounds):
            ctx = DurableOrchestrationContext.from_json(
                json.dumps(
                    {
                        "history": self._history,
                        "instanceId": self.instance_id,
                        "isReplaying": False,
                        "parentInstanceId": None,
                        "input": json.dumps(input),
                    }
                )
            )
            try:
                state = json.loads(Orchestrator(self.orchestrator).handle(ctx))
            except Exception as exc:  # the orchestration failed: DF raises with its state attached
                run.error = str(exc).split("\n\n$OutOfProcData$:", 1)[0]
                return None
            run.custom_status = state.get("customStatus", run.custom_status)
            for action in (a for group in state.get("actions", []) for a in group):
                if action.get("actionType") == CONTINUE_AS_NEW:
                    return json.loads(action["input"]) if isinstance(action.get("input"), str) else action.get("input")
            if state.get("isDone"):
                run.output = state.get("output")
                return None
            new = self._progress(ctx, run)
            if not new:
                raise AssertionError(f"the orchestration waits for nothing this fake can deliver: {ctx.open_tasks}")
            self._append_episode(new)
        raise AssertionError(f"no end after {max_rounds} rounds")

    def _progress(self, ctx: DurableOrchestrationContext, run: Run) -> list[dict]:
        open_tasks = [(key, t) for key, value in ctx.open_tasks.items() for t in (value if isinstance(value, list) else [value])]
        new: list[dict] = []
        timers = []
        for key, task in open_tasks:
            action = task.action_repr[0] if isinstance(task.action_repr, list) else task.action_repr
            if isinstance(action, NoOpAction) and task.parent is not None:
                if "timer" in (action.metadata or ""):  # "-WithRetry timer": the pause before a retry
                    new += [self._event(H.TIMER_CREATED, EventId=key), self._event(H.TIMER_FIRED, TimerId=key, FireAt=_iso(self.clock))]
                else:
                    original = task.parent.children[0].action_repr
                    new += self._call(key, original[0] if isinstance(original, list) else original, run)
            elif isinstance(action, (CallActivityAction, CallActivityWithRetryAction)):
                new += self._call(key, action, run)
            elif isinstance(action, CreateTimerAction):
                if not action.is_cancelled:
                    timers.append((action.fire_at, key))
            elif not isinstance(action, WaitForExternalEventAction):
                raise AssertionError(f"this fake does not run {type(action).__name__}")
        if new:
            return new
        waiting = {
            key
            for key, task in open_tasks
            if isinstance(task.action_repr[0] if isinstance(task.action_repr, list) else task.action_repr, WaitForExternalEventAction)
        }
        for i, (name, data) in enumerate(self.events):
            if name in waiting:
                del self.events[i]
                run.events_delivered.append(name)
                return [self._event(H.EVENT_RAISED, Name=name, Input=json.dumps(data))]
        if timers:
            fire_at, key = min(timers, key=lambda t: (t[0], t[1]))
            self.clock = max(self.clock, fire_at if fire_at.tzinfo else fire_at.replace(tzinfo=UTC))
            run.timers_fired += 1
            return [self._event(H.TIMER_CREATED, EventId=key), self._event(H.TIMER_FIRED, TimerId=key, FireAt=_iso(self.clock))]
        return []

    def _call(self, key: int, action, run: Run) -> list[dict]:
        name = action.function_name
        payload = json.loads(action.input_) if action.input_ is not None else None
        run.calls.append((name, payload))
        scheduled = self._event(H.TASK_SCHEDULED, EventId=key, Name=name)
        try:
            result = self.activities[name](payload)
        except Exception as exc:  # noqa: BLE001 - becomes a TaskFailed, as in Azure
            return [scheduled, self._event(H.TASK_FAILED, TaskScheduledId=key, Reason=str(exc), Details=traceback.format_exc())]
        return [scheduled, self._event(H.TASK_COMPLETED, TaskScheduledId=key, Result=json.dumps(result))]

    # ----- history ----------------------------------------------------------------------------

    def _event(self, kind: H, **fields) -> dict:
        return {"EventType": int(kind), "EventId": fields.pop("EventId", -1), "IsPlayed": False, "Timestamp": _iso(self.clock), **fields}

    def _append_episode(self, events: list[dict]) -> None:
        if self._history:
            self._history.append(self._event(H.ORCHESTRATOR_COMPLETED))
        for old in self._history:
            old["IsPlayed"] = True
        self._history.append(self._event(H.ORCHESTRATOR_STARTED))
        self._history.extend(events)
