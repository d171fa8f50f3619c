"""The Azure Functions entry: triggers and bindings registered from the same orchestrations and activities."""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func
import pytest
from azure.functions.servicebus import ServiceBusMessage
from azure.functions.timer import TimerRequest

from activities import ACTIVITIES
from batchai import queue_consumer
from batchai.ports import PRIORITIES
from orchestrations import ORCHESTRATIONS
from tests.support.function_app import call_client_trigger, registered_functions, user_code

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def functions():
    return registered_functions()


def bindings(fn) -> dict[str, str]:
    return {b.name: b.type for b in fn.get_bindings()}


def test_every_orchestration_and_activity_has_one_trigger(functions):
    names = list(functions)
    assert len(names) == len(set(names))
    assert set(names) == {
        "http_api",
        "job_drops",
        "job_drops_sweep",
        *ORCHESTRATIONS,
        *ACTIVITIES,
        *(f"submissions_{p}" for p in PRIORITIES),
    }
    for name in ORCHESTRATIONS:
        assert bindings(functions[name]) == {"context": "orchestrationTrigger"}
    for name in ACTIVITIES:
        assert bindings(functions[name]) == {"payload": "activityTrigger", "client": "durableClient"}


def test_the_http_trigger_takes_every_route_and_method_with_a_durable_client(functions):
    fn = functions["http_api"]
    assert bindings(fn) == {"req": "httpTrigger", "client": "durableClient", "$return": "http"}
    trigger = next(b for b in fn.get_bindings() if b.type == "httpTrigger")
    assert trigger.route == "{*route}"
    assert {str(m).split(".")[-1].upper() for m in trigger.methods} >= {"GET", "PUT", "POST", "PATCH", "DELETE"}
    assert str(trigger.auth_level).split(".")[-1].upper() == "ANONYMOUS"  # the API checks its own bearer token


def test_binding_names_are_the_python_parameter_names(functions):
    for name, fn in functions.items():
        params = set(inspect.signature(user_code(fn)).parameters)
        declared = set(bindings(fn)) - {"$return"}
        assert declared <= params, (name, declared, params)


def test_orchestrators_replay_the_shared_orchestration_code(functions):
    handle = functions["job_lifecycle"].get_user_function()
    assert handle.orchestrator_function.__name__ == "job_lifecycle"


def test_importing_has_no_side_effects(tmp_path):
    """The Functions host indexes the module: no files, no threads, no database at import."""
    code = "import threading, function_app.function_app as m; print(threading.active_count())"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BATCHAI_DATA_DIR": str(tmp_path / "data")}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
    assert list(tmp_path.iterdir()) == []


def sb_message(body: bytes, message_id: str = "m1", delivery_count: int = 1) -> func.ServiceBusMessage:
    return ServiceBusMessage(body=body, message_id=message_id, delivery_count=delivery_count, application_properties={}, user_properties={})


class ClientSeen:
    """Stands in for the engine: which durable client a trigger handed over."""

    def __init__(self):
        self.clients = []

    def use_client(self, client):
        self.clients.append(client)


@pytest.fixture
def trigger_call(monkeypatch):
    """Calls a client trigger's user code as the host would (async, with a durable client)."""
    module = importlib.import_module("function_app.function_app")
    seen = ClientSeen()
    monkeypatch.setattr(module, "engine", seen)

    def call(fn, argument):
        asyncio.run(call_client_trigger(fn, argument))
        assert isinstance(seen.clients[-1], df.DurableOrchestrationClient)  # starting a job's lifecycle needs it
        assert seen.clients[-1]._orchestration_bindings.task_hub_name == "BatchAI"

    return call


def test_one_service_bus_trigger_per_priority_subscription_with_a_durable_client(functions):
    for priority in PRIORITIES:
        fn = functions[f"submissions_{priority}"]
        assert bindings(fn) == {"message": "serviceBusTrigger", "client": "durableClient"}
        trigger = next(b for b in fn.get_bindings() if b.type == "serviceBusTrigger")
        assert trigger.subscription_name == priority
        assert trigger.connection == "BATCHAI_SERVICEBUS" and trigger.topic_name == "%BATCHAI_SERVICEBUS_TOPIC%"


@pytest.mark.parametrize("priority", PRIORITIES)
def test_the_service_bus_triggers_call_the_consumer_handler(functions, monkeypatch, trigger_call, priority):
    module = importlib.import_module("function_app.function_app")
    svc, calls = object(), []
    monkeypatch.setattr(module, "services", lambda: svc)
    monkeypatch.setattr(module, "handle", lambda *args: calls.append(args) or "completed")
    trigger_call(functions[f"submissions_{priority}"], sb_message(b'{"jobName": "j"}', "key-7", 3))
    ((got_svc, settlement, message),) = calls
    assert got_svc is svc and isinstance(settlement, queue_consumer.HostSettlement)
    assert (message.id, message.body, message.priority, message.delivery_count) == ("key-7", '{"jobName": "j"}', priority, 3)


def test_a_never_valid_message_is_logged_and_raised_so_the_subscription_dead_letters_it_and_loses_nothing(
    functions, monkeypatch, caplog, trigger_call
):
    module = importlib.import_module("function_app.function_app")
    monkeypatch.setattr(module, "services", object)
    trigger = functools.partial(trigger_call, functions["submissions_normal"])
    with pytest.raises(queue_consumer.Redeliver, match="rejected: MalformedMessage"):
        trigger(sb_message(b"{not json", "malformed"))  # the Python trigger cannot dead-letter: the broker will
    assert "malformed" in caplog.text and "MalformedMessage" in caplog.text

    def store_busy(*args, **kwargs):
        raise RuntimeError("the store is busy")

    monkeypatch.setattr(queue_consumer, "submit_message", store_busy)
    with pytest.raises(queue_consumer.Redeliver, match="delivered again"):
        trigger(sb_message(b'{"jobName": "j"}', "transient"))


def test_a_blob_trigger_on_the_drop_container_inbox_with_a_durable_client(functions):
    fn = functions["job_drops"]
    assert bindings(fn) == {"drop": "blobTrigger", "client": "durableClient"}
    trigger = next(b for b in fn.get_bindings() if b.type == "blobTrigger")
    assert trigger.path == "%BATCHAI_DROP_CONTAINER%/inbox/{name}"
    assert trigger.connection == "BATCHAI_BLOB_CONNECTION_STRING"


def test_the_blob_trigger_processes_the_drop_by_its_name_in_the_container(functions, monkeypatch, trigger_call):
    module = importlib.import_module("function_app.function_app")
    processed = []

    class Box:
        def process(self, name):
            processed.append(name)

    monkeypatch.setattr(module, "drop_box", Box)
    trigger_call(functions["job_drops"], func.blob.InputStream(data=b"{}", name="drops/inbox/ws/exp/j.json"))
    assert processed == ["inbox/ws/exp/j.json"]


def test_a_timer_sweeps_the_drop_inbox_for_drops_the_blob_trigger_gave_up_on(functions, monkeypatch, trigger_call):
    fn = functions["job_drops_sweep"]
    assert bindings(fn) == {"timer": "timerTrigger", "client": "durableClient"}
    assert next(b for b in fn.get_bindings() if b.type == "timerTrigger").schedule == "0 */5 * * * *"
    module = importlib.import_module("function_app.function_app")
    scans = []

    class Box:
        def scan(self):
            scans.append(1)
            return 0

    monkeypatch.setattr(module, "drop_box", Box)
    trigger_call(fn, TimerRequest())
    assert scans == [1]
