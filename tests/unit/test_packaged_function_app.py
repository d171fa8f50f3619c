"""The deployable Functions app: `scripts/package_functionapp.sh` builds it, and the Python worker's own
library (`azure_functions_runtime`, which the host's worker runs) indexes it as the host would at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from activities import ACTIVITIES
from batchai.ports import PRIORITIES
from orchestrations import ORCHESTRATIONS

ROOT = Path(__file__).resolve().parents[2]

# Run as the worker runs: the app's folder is the working directory and the first entry on the path,
# and nothing of this checkout is importable (the package `function_app/` would shadow the file).
INDEX = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("function_rpc", sys.argv[1])
rpc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rpc)
from azure_functions_runtime import handle_event
handle_event.protos = rpc.protos
handle_event.load_binding_registry()  # as worker_init_request does, before it indexes
handle_event.load_function_metadata(".", caller_info="worker_init_request")
print(json.dumps([
    {"name": m.name, "script_file": m.script_file, "bindings": [json.loads(b) for b in m.raw_bindings]}
    for m in handle_event._metadata_result
]))
"""


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "functionapp"
    subprocess.run(["bash", "scripts/package_functionapp.sh", str(out)], cwd=ROOT, check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def indexed(app_dir) -> dict[str, dict]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(app_dir)}
    done = subprocess.run(
        [sys.executable, "-c", INDEX, str(ROOT / "tests" / "support" / "function_rpc.py")],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {f["name"]: f for f in json.loads(done.stdout.splitlines()[-1])}


def test_the_package_has_the_layout_the_host_loads(app_dir):
    names = {p.name for p in app_dir.iterdir()}
    assert names == {"function_app.py", "host.json", "requirements.txt", ".funcignore", "batchai", "orchestrations", "activities"}
    assert not list(app_dir.rglob("__pycache__")) and not list(app_dir.rglob("test_*.py"))
    pins = [line for line in (app_dir / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert all("==" in line for line in pins), pins
    names = {line.split("==")[0] for line in pins}
    assert {"azure-functions", "azure-functions-durable", "durabletask", "fastapi", "azure-cosmos"} <= names
    assert "pytest" not in names and "batchai-serverless" not in names
    assert json.loads((app_dir / "host.json").read_text())["extensions"]["durableTask"]["hubName"] == "BatchAI"


def test_the_worker_indexes_every_function_with_the_bindings_the_host_needs(indexed):
    def types(name: str) -> dict[str, str]:
        return {b["name"]: b["type"] for b in indexed[name]["bindings"]}

    assert set(indexed) == {
        "http_api",
        "job_drops",
        "job_drops_sweep",
        *ORCHESTRATIONS,
        *ACTIVITIES,
        *(f"submissions_{p}" for p in PRIORITIES),
    }
    assert {f["script_file"] for f in indexed.values()} == {"function_app.py"}
    assert types("http_api") == {"req": "httpTrigger", "client": "durableClient", "$return": "http"}
    for name in ORCHESTRATIONS:
        assert types(name) == {"context": "orchestrationTrigger"}
    for name in ACTIVITIES:
        assert types(name) == {"payload": "activityTrigger", "client": "durableClient"}
    for priority in PRIORITIES:
        (trigger,) = [b for b in indexed[f"submissions_{priority}"]["bindings"] if b["type"] == "serviceBusTrigger"]
        assert trigger["subscriptionName"] == priority and trigger["connection"] == "BATCHAI_SERVICEBUS"
        assert types(f"submissions_{priority}")["client"] == "durableClient"
    (blob,) = [b for b in indexed["job_drops"]["bindings"] if b["type"] == "blobTrigger"]
    assert blob["path"] == "%BATCHAI_DROP_CONTAINER%/inbox/{name}" and blob["connection"] == "BATCHAI_BLOB_CONNECTION_STRING"
    (timer,) = [b for b in indexed["job_drops_sweep"]["bindings"] if b["type"] == "timerTrigger"]
    assert timer["schedule"] == "0 */5 * * * *"
