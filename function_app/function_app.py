"""The Azure Functions composition root: the same control plane as a Durable Functions app.

Triggers only. The HTTP trigger serves the same ASGI app as `batchai serve` (every route, ARM
and node protocol); orchestration and activity triggers are registered in a loop from the
same `orchestrations/` and `activities/` as the embedded host, through the Durable Functions
Flow adapter. Nothing happens at import: the services are built on the first invocation, so
the Functions host (and the tests) can index this module freely.

The adapters come from the app settings (`batchai.adapters.from_env`): resources in Cosmos DB
(else SQLite under `BATCHAI_DATA_DIR`, an Azure Files mount, one instance only), nodes as VM scale
set instances (without those settings cluster provisioning fails with a clear error), jobs'
outputs listed from a blob container, and the drop box in a blob container.

Job files dropped into `$BATCHAI_DROP_CONTAINER/inbox/<workspace>/<experiment>/<job>.json` fire
the `job_drops` blob trigger (connection: the `BATCHAI_BLOB_CONNECTION_STRING` setting), which
processes them as the embedded host's drop box does; a timer sweeps the inbox every five minutes
for drops whose trigger gave up.

Jobs also arrive by Service Bus: one topic trigger per priority subscription (see
`batchai.adapters.servicebus_queue`), each calling the embedded consumer's `handle`. The
connection is the `BATCHAI_SERVICEBUS` setting (a connection string, or
`BATCHAI_SERVICEBUS__fullyQualifiedNamespace` for a managed identity); the topic is named by
the `BATCHAI_SERVICEBUS_TOPIC` setting. Each priority is its own trigger with its own scaling,
so draining high first is the embedded consumer's promise, not this one's: give the `high`
subscription's function more instances if it must overtake.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import threading
import time
from functools import lru_cache
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func

from activities import ACTIVITIES
from batchai.adapters.durable_functions_flow import DurableFunctionsEngine, as_df_orchestrator
from batchai.ports import PRIORITIES, QueueMessage
from batchai.queue_consumer import HostSettlement, handle
from orchestrations import ORCHESTRATIONS

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
engine = DurableFunctionsEngine()
_build_lock = threading.RLock()  # the services are built once, whichever trigger comes first
SERVICEBUS_CONNECTION = "BATCHAI_SERVICEBUS"  # the app setting (prefix) of the Service Bus connection
SERVICEBUS_TOPIC = "%BATCHAI_SERVICEBUS_TOPIC%"  # resolved from the app setting by the host


DROPS_CONNECTION = "BATCHAI_BLOB_CONNECTION_STRING"  # the app setting holding the storage connection string
DROPS_PATH = "%BATCHAI_DROP_CONTAINER%/inbox/{name}"
DROPS_SWEEP = "0 */5 * * * *"  # every five minutes


class NoAzureCompute:
    """Compute port placeholder on Azure: says plainly that nodes cannot be provisioned yet."""

    def _unavailable(self, *args, **kwargs):
        raise RuntimeError("no compute adapter is configured: set the BATCHAI_VMSS_* app settings for VM scale sets")

    remote = True
    node_root = start_node = start_nodes = is_alive = stop_node = mount = unmount = evicted = evict = _unavailable

    def close(self) -> None:
        """Nothing held."""


def built_once(build):
    """`build` runs once per host process, on first use, whichever trigger comes first."""
    cached = lru_cache(maxsize=1)(build)

    @functools.wraps(build)
    def get():
        with _build_lock:
            return cached()

    get.cache_clear = cached.cache_clear
    return get


async def with_client(client, work):
    """Hand the trigger's durable client to the engine (a job stored here starts its lifecycle through it),
    then do the synchronous work off the event loop."""
    engine.use_client(client)
    return await asyncio.to_thread(work)


@built_once
def node_waker():
    """Ends agents' long-polling heartbeats early: the services wake nodes with it, the API's node routes wait on it."""
    from batchai.api.nodes import NodeWaker

    return NodeWaker()


@built_once
def services():
    """The control plane's services."""
    from batchai.adapters.from_env import azure_compute, azure_file_servers, blob_store, resource_store
    from batchai.lifecycle import restart_grace
    from batchai.services import Services, Settings

    data_dir = Path(os.environ.get("BATCHAI_DATA_DIR", "/home/data/batchai")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env(data_dir, inline_scheduling=False)  # instances scale out: the controller alone schedules
    store = resource_store(data_dir)
    restart_grace(store, time.time())  # a restart or redeploy: nodes get a node timeout to reach this host again
    compute = azure_compute(store, data_dir, settings.heartbeat_seconds) or NoAzureCompute()
    return Services(
        store=store,
        compute=compute,
        engine=engine,
        settings=settings,
        wake_nodes=node_waker().wake,
        blobs=blob_store(),
        file_servers=azure_file_servers(),
    )


@built_once
def drop_box():
    from batchai.adapters.from_env import drop_store
    from batchai.blob_drop import DropBox

    svc = services()
    return DropBox(svc, drop_store(svc.settings.data_dir))


@built_once
def asgi() -> func.AsgiMiddleware:
    from batchai.api.app import create_app
    from batchai.node_identity import node_key

    svc = services()
    token = os.environ.get("BATCHAI_TOKEN") or svc.store.setting("api_token", lambda: secrets.token_urlsafe(32))
    return func.AsgiMiddleware(create_app(svc, token=token, node_key=node_key(svc.store), node_waker=node_waker()))


@app.function_name("http_api")
@app.route(route="{*route}", methods=["GET", "PUT", "POST", "PATCH", "DELETE"])
@app.durable_client_input(client_name="client")
async def http_api(req: func.HttpRequest, context: func.Context, client) -> func.HttpResponse:
    engine.use_client(client)
    middleware = await asyncio.to_thread(asgi)  # the first call builds the services: store connections, not on the loop
    # AsgiMiddleware never runs the app's lifespan, where the embedded host gives the waker its loop
    node_waker().loop = asyncio.get_running_loop()
    return await middleware.handle_async(req, context)


def _register_orchestration(name: str, fn) -> None:
    orchestrator = as_df_orchestrator(name, fn)
    app.function_name(name)(app.orchestration_trigger(context_name="context")(orchestrator))


def _register_activity(name: str, fn) -> None:
    async def activity(payload, client):
        return await with_client(client, lambda: fn(services(), payload))

    activity.__name__ = name
    app.function_name(name)(app.activity_trigger(input_name="payload")(app.durable_client_input(client_name="client")(activity)))


for _name, _fn in ORCHESTRATIONS.items():
    _register_orchestration(_name, _fn)
for _name, _fn in ACTIVITIES.items():
    _register_activity(_name, _fn)


def queue_message(message: func.ServiceBusMessage, priority: str) -> QueueMessage:
    """The trigger's message as the consumer's handler takes it (the host reports delivery counts from 1)."""
    return QueueMessage(
        id=message.message_id,
        body=message.get_body().decode("utf-8", errors="replace"),
        priority=priority,
        delivery_count=message.delivery_count or 1,
        lock_token=message.lock_token or "",
    )


def _register_submissions(priority: str) -> None:
    async def submissions(message: func.ServiceBusMessage, client) -> None:
        await with_client(client, lambda: handle(services(), HostSettlement(), queue_message(message, priority)))

    name = f"submissions_{priority}"
    submissions.__name__ = name
    trigger = app.service_bus_topic_trigger(
        arg_name="message", connection=SERVICEBUS_CONNECTION, topic_name=SERVICEBUS_TOPIC, subscription_name=priority
    )
    app.function_name(name)(trigger(app.durable_client_input(client_name="client")(submissions)))


for _priority in PRIORITIES:
    _register_submissions(_priority)


@app.function_name("job_drops")
@app.blob_trigger(arg_name="drop", path=DROPS_PATH, connection=DROPS_CONNECTION)
@app.durable_client_input(client_name="client")
async def job_drops(drop: func.InputStream, client) -> None:
    """A new blob in the drop container's inbox: submit it (status files and sidecars are ignored)."""
    await with_client(client, lambda: drop_box().process(drop_name(drop.name)))


@app.function_name("job_drops_sweep")
@app.timer_trigger(arg_name="timer", schedule=DROPS_SWEEP)
@app.durable_client_input(client_name="client")
async def job_drops_sweep(timer: func.TimerRequest, client) -> None:
    """Drops the blob trigger gave up on (the store was down for all its tries) are still in the inbox:
    scan it now and then, so none is stranded there."""
    await with_client(client, lambda: drop_box().scan())


def drop_name(trigger_name: str) -> str:
    """The trigger's `<container>/inbox/...` as the drop box names it: `inbox/...`."""
    return trigger_name.split("/", 1)[1] if "/" in trigger_name else trigger_name
