"""The Functions app's registered functions, by name.

`FunctionApp.get_functions()` may be called once per process (a second call reports every
function as a duplicate name), so every test asks here.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import azure.functions as func
from azure.durable_functions.models.utils import http_utils

from tests.support.durable_extension import DurableExtension


@lru_cache(maxsize=1)
def registered_functions() -> dict:
    module = importlib.import_module("function_app.function_app")
    return {f.get_function_name(): f for f in module.app.get_functions()}


def user_code(fn):
    """The function as written: under the durable client wrapper or the orchestrator handle, if any."""
    code = fn.get_user_function()
    return getattr(code, "client_function", None) or getattr(code, "orchestrator_function", None) or code


# What the Functions host hands a durable client binding: the task hub's endpoints, as JSON.
CLIENT_BINDING = (
    '{"taskHubName": "BatchAI", "creationUrls": {"createNewInstancePostUri": "http://127.0.0.1:7071/runtime/webhooks/durabletask/orchestrators/{functionName}[/{instanceId}]"}, '
    '"managementUrls": {"id": "INSTANCEID", "statusQueryGetUri": "http://127.0.0.1:7071/runtime/webhooks/durabletask/instances/INSTANCEID"}, '
    '"rpcBaseUrl": "http://127.0.0.1:17071/durabletask/"}'
)


async def call_client_trigger(fn, argument) -> None:
    """Run a client trigger as the host does: through Durable Functions' wrapper, which turns the binding JSON
    into a DurableOrchestrationClient."""
    await fn.get_user_function()(argument, client=CLIENT_BINDING)


class WorkerLoop:
    """The Functions worker's event loop: one per process, in its own thread; every async trigger runs on it
    (and the durable client's module-wide HTTP session belongs to it)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="worker-loop", daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.run(http_utils._close_session())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@dataclass
class FunctionsHost:
    """The Functions app's triggers called as the host calls them: on the worker's loop, with the durable
    client binding of `extension` (the HTTP API with the API token `t`)."""

    module: Any
    extension: DurableExtension
    loop: WorkerLoop

    def http(self, method: str, path: str, body: dict | None = None, token: str = "t") -> tuple[int, dict]:
        response = self.request(method, path, body, token)
        return response.status_code, json.loads(response.get_body() or b"{}")

    def request(self, method: str, path: str, body: dict | None = None, token: str = "t") -> func.HttpResponse:
        request = func.HttpRequest(
            method=method,
            url=f"https://app.example{path}?api-version=2018-05-01",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            params={"api-version": "2018-05-01"},
            body=json.dumps(body).encode() if body is not None else b"",
        )
        handler = registered_functions()["http_api"].get_user_function()
        return self.loop.run(handler(request, context=None, client=self.extension.binding()))

    def trigger(self, name: str, argument):
        """What the function returns (an activity's output, as the host hands it to its orchestration)."""
        return self.loop.run(registered_functions()[name].get_user_function()(argument, client=self.extension.binding()))

    def clear_caches(self) -> None:
        for built in (self.module.services, self.module.drop_box, self.module.asgi, self.module.node_waker):
            built.cache_clear()
