"""A loopback stand-in of the Durable Functions extension's HTTP API, as the Python client calls it.

The documented webhook endpoints under the host's `rpcBaseUrl`: start an orchestration
(`POST orchestrators/{name}/{instanceId}`), raise an event (`POST instances/{id}/raiseEvent/{event}`),
get an instance's status (`GET instances/{id}`) and terminate it (`POST instances/{id}/terminate`),
with the extension's status codes (202 accepted; 404 no such instance; 410 instance ended).
Orchestrations are not run: the stand-in records what it was asked, so tests can count starts
and events. `refuse_starts` (`refuse_events`) makes the next N starts (events) fail as the extension
fails (HTTP 500).
A start for an instance that is running is refused with 409.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

PREFIX = "/durabletask/"


class DurableExtension:
    def __init__(self):
        self.instances: dict[str, dict] = {}
        self.starts: list[tuple[str, str]] = []  # (orchestration, instance id), accepted ones
        self.events: list[tuple[str, str]] = []  # (instance id, event), delivered ones
        self.refuse_starts = self.refuse_events = 0
        self.lock = threading.Lock()
        self.url = ""

    def binding(self, task_hub: str = "BatchAI") -> str:
        """The durable client binding as the host passes it to a function: the task hub's endpoints, as JSON."""
        return json.dumps(
            {
                "taskHubName": task_hub,
                "creationUrls": {},
                "managementUrls": {},
                "rpcBaseUrl": self.url + PREFIX,
            }
        )

    def started(self, name: str) -> list[str]:
        return [instance for orchestration, instance in self.starts if orchestration == name]

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        parts = [unquote(p) for p in path[len(PREFIX) :].split("/")]
        now = datetime.now(UTC).isoformat()
        with self.lock:
            if method == "POST" and parts[0] == "orchestrators" and len(parts) == 3:
                name, instance_id = parts[1], parts[2]
                if self.refuse_starts:
                    self.refuse_starts -= 1
                    return 500, {"Message": "An error has occurred.", "ExceptionMessage": "the task hub is unavailable"}
                current = self.instances.get(instance_id)
                if current is not None and current["runtimeStatus"] in ("Pending", "Running"):
                    return 409, {"Message": f"An instance with ID '{instance_id}' already exists."}
                self.instances[instance_id] = {
                    "name": name,
                    "instanceId": instance_id,
                    "runtimeStatus": "Running",
                    "input": json.loads(body) if body else None,
                    "customStatus": None,
                    "output": None,
                    "createdTime": now,
                    "lastUpdatedTime": now,
                }
                self.starts.append((name, instance_id))
                return 202, {"id": instance_id, "statusQueryGetUri": f"{self.url}{PREFIX}instances/{instance_id}"}
            if parts[0] != "instances" or len(parts) < 2:
                return 404, None
            current = self.instances.get(parts[1])
            if method == "GET" and len(parts) == 2:
                return (404, None) if current is None else (200 if current["runtimeStatus"] != "Running" else 202, current)
            if current is None:
                return 404, None
            if current["runtimeStatus"] != "Running":
                return 410, None
            if method == "POST" and len(parts) == 4 and parts[2] == "raiseEvent":
                if self.refuse_events:
                    self.refuse_events -= 1
                    return 500, {"Message": "An error has occurred."}
                self.events.append((parts[1], parts[3]))
                return 202, None
            if method == "POST" and len(parts) == 3 and parts[2] == "terminate":
                current["runtimeStatus"] = "Terminated"
                return 202, None
        return 404, None


@contextmanager
def durable_extension():
    extension = DurableExtension()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, answer = extension.handle(self.command, urlsplit(self.path).path, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    extension.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="durable-extension", daemon=True)
    thread.start()
    try:
        yield extension
    finally:
        server.shutdown()
        server.server_close()
