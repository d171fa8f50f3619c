"""The embedded durable engine: durabletask's in-memory backend, worker and client, in process.

`DurableTaskFlow` is the Flow port over a durabletask `OrchestrationContext`;
`DurableTaskEngine` is the Engine port (schedule, raise_event, status) plus registration.
The backend is a real gRPC server on a loopback port chosen by the OS, so two control
planes (or two test runs) never collide. `DurableTaskSchedulerEngine` is the same port on
Azure's managed Durable Task Scheduler instead of the in-memory backend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from azure.core.credentials import TokenCredential
from durabletask import client as dt_client
from durabletask import task as dt
from durabletask import worker as dt_worker
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker
from durabletask.internal import helpers
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as stubs
from durabletask.testing import InMemoryOrchestrationBackend

from batchai.background import TimerThread
from batchai.flow import ContextFlow, FlowTask, FlowTaskFailed, Orchestration, Retry, drive


def retry_policy(retry: Retry | None) -> dt.RetryPolicy | None:
    if retry is None:
        return None
    return dt.RetryPolicy(
        first_retry_interval=retry.first_interval, max_number_of_attempts=retry.max_attempts, backoff_coefficient=retry.backoff
    )


class DurableTaskFlow(ContextFlow):
    def activity(self, name: str, input: Any = None, *, retry: Retry | None = None) -> FlowTask:
        return FlowTask(self._ctx.call_activity(name, input=input, retry_policy=retry_policy(retry)))

    def child(self, name: str, input: Any, instance_id: str) -> FlowTask:
        return FlowTask(self._ctx.call_sub_orchestrator(name, input=input, instance_id=instance_id))

    def timer(self, delay: timedelta) -> FlowTask:
        return FlowTask(self._ctx.create_timer(delay))

    def event(self, name: str) -> FlowTask:
        return FlowTask(self._ctx.wait_for_external_event(name))

    def all(self, tasks: Sequence[FlowTask]) -> FlowTask:
        return FlowTask(dt.when_all([t.task for t in tasks]), lambda raw: [t.post(value) for t, value in zip(tasks, raw, strict=True)])

    def any(self, tasks: Sequence[FlowTask]) -> FlowTask:
        def post(winner):
            index = next(i for i, t in enumerate(tasks) if t.task is winner)
            for i, t in enumerate(tasks):
                if i != index and isinstance(t.task, dt.CancellableTask):
                    t.task.cancel()  # an abandoned event wait would otherwise take the next event
            return index, tasks[index].post(winner.get_result())

        return FlowTask(dt.when_any([t.task for t in tasks]), post)

    def now(self) -> datetime:
        return self._ctx.current_utc_datetime.replace(tzinfo=UTC)

    def failure(self, exc: BaseException) -> FlowTaskFailed:
        if isinstance(exc, dt.TaskFailedError):
            details = exc.details
            return FlowTaskFailed(f"{details.error_type}: {details.message}")
        return FlowTaskFailed(str(exc))


def as_orchestrator(name: str, fn: Orchestration) -> Callable:
    """`fn` as a durabletask orchestrator function (they take `(ctx, input)`)."""

    def orchestrator(ctx: dt.OrchestrationContext, input: Any):
        return drive(DurableTaskFlow(ctx), fn, input)

    orchestrator.__name__ = name
    return orchestrator


def as_activity(name: str, fn: Callable[[Any], Any]) -> Callable:
    """A one-argument activity as a durabletask activity (they take `(ctx, input)`)."""

    def activity(ctx: dt.ActivityContext, input: Any):
        return fn(input)

    activity.__name__ = name
    return activity


class LoopbackBackend(InMemoryOrchestrationBackend):
    """The in-memory backend, listening on 127.0.0.1 on a port the OS picks. Its timers fire from one
    thread: the backend starts a sleeping thread per durable timer, and with a lifecycle per running job
    (and the timers a won wake leaves behind) a busy control plane held 1,400 threads."""

    def start(self) -> str:
        self._shutdown_event.clear()
        self._timers = TimerThread("durable-timers", logging.getLogger("batchai.engine"))
        server = grpc.server(ThreadPoolExecutor(max_workers=10))
        stubs.add_TaskHubSidecarServiceServicer_to_server(self, server)
        self._port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        self.address = f"127.0.0.1:{self._port}"
        return self.address

    def stop(self, grace: float | None = None) -> None:
        self._timers.stop()
        super().stop(grace)

    def _enqueue_orchestration(self, instance_id: str) -> None:
        """As the backend's own, but the work-item streams are told even when the instance is queued already.
        A stream that found it in flight put it back in the queue and slept until its next 0.1 s look: the
        backend's own told nobody of the events that came meanwhile, and a controller's wake waited 100 ms."""
        super()._enqueue_orchestration(instance_id)
        self._work_available.set()

    def _process_create_timer_action(self, instance, action) -> None:
        """As the backend's own, but the timer is an entry in one heap, not a thread."""
        timer_id, fire_at = action.id, action.createTimer.fireAt.ToDatetime(tzinfo=UTC)
        instance.history.append(helpers.new_timer_created_event(timer_id, fire_at))
        if instance.status == pb.ORCHESTRATION_STATUS_PENDING:
            instance.status = pb.ORCHESTRATION_STATUS_RUNNING

        def fire() -> None:
            with self._lock:
                current = self._instances.get(instance.instance_id)
                if current and not self._is_terminal_status(current.status):
                    current.pending_events.append(helpers.new_timer_fired_event(timer_id, fire_at))
                    current.last_updated_at = datetime.now(UTC)
                    self._enqueue_orchestration(instance.instance_id)

        self._timers.at(fire_at.timestamp(), fire)


class AbandonedTimers(logging.Filter):
    """Waiting for "an event or a timer" that the event wins leaves the timer to fire later, and durabletask
    warns about each such timer. Every wake-up does this, so those warnings say nothing and are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Ignoring unexpected timerFired event" not in record.getMessage()


def _quiet_logger(name: str) -> logging.Logger:
    """durabletask logs every raised event and connection at INFO: keep warnings and errors."""
    logger = logging.getLogger(name)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
    if not any(isinstance(f, AbandonedTimers) for f in logger.filters):
        logger.addFilter(AbandonedTimers())
    return logger


class DurableTaskEngine:
    """Engine port over durabletask, in process. Register everything, then `start()`."""

    def __init__(self, *, max_history_size: int = 100_000):
        self._max_history_size = max_history_size
        self._backend: LoopbackBackend | None = None
        self._orchestrations: dict[str, Callable] = {}
        self._activities: dict[str, Callable] = {}
        self._worker: dt_worker.TaskHubGrpcWorker | None = None
        self._client: dt_client.TaskHubGrpcClient | None = None

    def register_orchestration(self, name: str, fn: Orchestration) -> None:
        self._orchestrations[name] = as_orchestrator(name, fn)

    def register_activity(self, name: str, fn: Callable[[Any], Any]) -> None:
        self._activities[name] = as_activity(name, fn)

    def _connect(self) -> tuple[dt_worker.TaskHubGrpcWorker, dt_client.TaskHubGrpcClient]:
        """The worker and client, on the in-memory backend started here (kept across a stop and start)."""
        if self._backend is None:
            self._backend = LoopbackBackend(max_history_size=self._max_history_size)
        address = self._backend.start()
        worker = dt_worker.TaskHubGrpcWorker(host_address=address, emit_trace_spans=False, logger=_quiet_logger("durabletask.worker"))
        return worker, dt_client.TaskHubGrpcClient(host_address=address, logger=_quiet_logger("durabletask.client"))

    def _disconnect(self) -> None:
        if self._backend is not None:
            self._backend.stop(grace=1.0)

    def start(self) -> None:
        self._worker, self._client = self._connect()
        for name, fn in self._orchestrations.items():
            self._worker._registry.add_named_orchestrator(name, fn)
        for name, fn in self._activities.items():
            self._worker._registry.add_named_activity(name, fn)
        self._worker.start()

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()
        self._disconnect()
        self._worker = self._client = None

    @property
    def client(self) -> dt_client.TaskHubGrpcClient:
        if self._client is None:
            raise RuntimeError("the engine is not started")
        return self._client

    @property
    def runs_backend(self) -> bool:
        """Whether the backend is this process's own (the in-memory one), not a service or another process's."""
        return self._backend is not None

    @property
    def address(self) -> str:
        """Where the started engine's backend listens: `DurableTaskClient`s of other processes connect there."""
        if self._backend is None:
            raise RuntimeError("the engine is not started")
        return self._backend.address

    def schedule(self, name: str, input: Any, instance_id: str) -> bool:
        """Start `name` as `instance_id`; False (and nothing done) when that instance already exists."""
        try:
            self.client.schedule_new_orchestration(name, input=input, instance_id=instance_id)
            return True
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
                return False
            raise

    def raise_event(self, instance_id: str, name: str, data: Any = None) -> bool:
        """Deliver an event; False when there is no such running instance (events are only hints)."""
        try:
            self.client.raise_orchestration_event(instance_id, name, data=data)
            return True
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                return False
            raise

    def status(self, instance_id: str) -> dict | None:
        state = self.client.get_orchestration_state(instance_id)
        if state is None:
            return None
        return {
            "instanceId": instance_id,
            "runtimeStatus": state.runtime_status.name,
            "customStatus": state.get_custom_status(),
            "output": state.get_output(),
            "failure": state.failure_details.message if state.failure_details else None,
        }

    def wait(self, instance_id: str, timeout: float = 60.0) -> dict | None:
        self.client.wait_for_orchestration_completion(instance_id, timeout=int(timeout))
        return self.status(instance_id)

    def terminate(self, instance_id: str) -> None:
        self.client.terminate_orchestration(instance_id)


class DurableTaskClient(DurableTaskEngine):
    """The Engine port over the backend a `DurableTaskEngine` of another process runs at `address` (the
    embedded host's API workers): it schedules, raises events and reads status there; it runs nothing."""

    def __init__(self, address: str):
        super().__init__()
        self._address = address

    def start(self) -> None:
        self._client = dt_client.TaskHubGrpcClient(host_address=self._address, logger=_quiet_logger("durabletask.client"))

    def stop(self) -> None:
        self._client = None


class DurableTaskSchedulerEngine(DurableTaskEngine):
    """The same Engine port on Azure's Durable Task Scheduler (the control plane as a container): the
    managed scheduler keeps the orchestrations' state; this process runs them through the same worker
    and client, which add the task hub and an Entra token to every call.

    `endpoint`: the scheduler's, `https://<name>.<region>.durabletask.io` (TLS), or `http://host:port`
    (the local emulator, no TLS); `credential`: None where the endpoint takes no token (the emulator).
    """

    def __init__(self, endpoint: str, taskhub: str, credential: TokenCredential | None):
        super().__init__()  # its in-memory backend is made only by its own _connect
        self._endpoint, self._taskhub, self._credential = endpoint, taskhub, credential

    def _connect(self) -> tuple[dt_worker.TaskHubGrpcWorker, dt_client.TaskHubGrpcClient]:
        worker = DurableTaskSchedulerWorker(
            host_address=self._endpoint,
            taskhub=self._taskhub,
            token_credential=self._credential,
            logger=_quiet_logger("durabletask.worker"),
        )
        client = DurableTaskSchedulerClient(
            host_address=self._endpoint,
            taskhub=self._taskhub,
            token_credential=self._credential,
            logger=_quiet_logger("durabletask.client"),
        )
        return worker, client
