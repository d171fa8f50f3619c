"""The Azure Functions entry: triggers and bindings registered from the same orchestrations and activities."""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from activities import ACTIVITIES
from orchestrations import ORCHESTRATIONS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def functions():
    module = importlib.import_module("function_app.function_app")
    return {f.get_function_name(): f for f in module.app.get_functions()}


def bindings(fn) -> dict[str, str]:
    return {b.name: b.type for b in fn.get_bindings()}


def user_code(fn):
    code = fn.get_user_function()
    return getattr(code, "client_function", None) or getattr(code, "orchestrator_function", None) or code


def test_every_orchestration_and_activity_has_one_trigger(functions):
    names = list(functions)
    assert len(names) == len(set(names))
    assert set(names) == {"http_api", *ORCHESTRATIONS, *ACTIVITIES}
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
