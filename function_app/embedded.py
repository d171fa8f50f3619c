"""The embedded composition root: the whole control plane in one process, no cloud account.

durabletask's in-memory engine runs the orchestrations, SQLite holds the resources, local node
agents are the machines, and uvicorn serves the same ASGI app the Functions HTTP trigger wraps.
Jobs also arrive by queue message (`queue.db`, consumed in a thread) and by dropping a job file
into `drops/inbox/<workspace>/<experiment>/<job>.json`. Cloud adapters replace embedded ones where
their settings are given (`batchai.adapters.from_env`): the store in Cosmos DB, the queue on a
Service Bus topic, the drop box in a blob container, and jobs' logs and outputs uploaded to a blob
container as they are written.
On start it reconciles: every cluster gets its nodes back and every unfinished job gets a
lifecycle again (every running sweep its orchestration), so a `kill -9` loses nothing (the store is the source of truth).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from activities import bind
from batchai import sweep_runs
from batchai.adapters.durabletask_engine import DurableTaskClient, DurableTaskEngine
from batchai.adapters.from_env import blob_store, drop_store, durable_engine, resource_store, submission_queue
from batchai.adapters.local_compute import LocalCompute
from batchai.adapters.simulated_compute import SimulatedCompute
from batchai.api.app import create_app
from batchai.api.nodes import NodeWaker, PeerWakes
from batchai.background import Serial
from batchai.blob_drop import DropBox
from batchai.job_state import LAUNCHED
from batchai.last_seen import LastSeenWriter
from batchai.lifecycle import controller_instance, restart_grace, sweep_instance
from batchai.node_identity import node_credentials, node_key
from batchai.node_protocol import JOINED, LAST_SEEN_RESOLUTION
from batchai.output_sync import OutputSync
from batchai.ports import Compute
from batchai.queue_consumer import QueueConsumer
from batchai.services import Services, Settings
from batchai.wake import start_lifecycle
from orchestrations import ORCHESTRATIONS

log = logging.getLogger("batchai.host")


def load_token(data_dir: Path) -> str:
    """BATCHAI_TOKEN, else the token generated on first start and kept in the data dir."""
    if os.environ.get("BATCHAI_TOKEN"):
        return os.environ["BATCHAI_TOKEN"]
    path = data_dir / "token"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def private_data_dir(data_dir: Path) -> None:
    """The data dir holds the tokens, keys, databases and jobs' secrets: its owner's alone. Everything
    this process creates from here on is too (umask 077); files of an older data dir are made so."""
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir.chmod(0o700)
    for path in data_dir.iterdir():
        if path.is_file() and not path.is_symlink():
            path.chmod(0o600)


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)


@dataclass
class EmbeddedHost:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    settings: Settings | None = None
    compute: Compute | None = None  # the machines; default: local node agent processes
    simulated_nodes: dict[str, Any] | None = None  # instead, nodes in memory: SimulatedCompute's options
    engine_address: str | None = None  # an API worker: the primary process's engine, which runs everything

    def build(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        private_data_dir(self.data_dir)
        self.settings = self.settings or Settings.from_env(self.data_dir)
        self.store = resource_store(self.data_dir)
        self.token = load_token(self.data_dir)
        self.control_plane_file = self.data_dir / "control-plane.json"
        node_waker = NodeWaker()  # agents long-poll their heartbeats on the API; activities end the polls early
        self.wakes = PeerWakes(self.data_dir / "run" / "wakes", node_waker)  # the polls any process holds
        wake_nodes = self.wakes.wake
        if self.simulated_nodes is not None:  # they call the node protocol in process, with the services below
            self.compute = SimulatedCompute(lambda: self.services, **self.simulated_nodes)
            wake_nodes = self.compute.wake
        elif self.compute is None:
            self.compute = LocalCompute(
                self.data_dir,
                control_plane_file=self.control_plane_file,
                credential=node_credentials(self.store),
                python=sys.executable,
                heartbeat=self.settings.heartbeat_seconds,
            )
        self.engine = DurableTaskClient(self.engine_address) if self.engine_address else durable_engine()
        self.deferred = Serial("engine-calls", log)  # made after the answers that caused them
        self.last_seen = LastSeenWriter(self.store, LAST_SEEN_RESOLUTION * self.settings.node_timeout_seconds)
        blobs = blob_store()
        self.output_sync = OutputSync(self.store, blobs, interval=self.settings.blob_sync_seconds) if blobs else None
        self.services = Services(
            store=self.store,
            compute=self.compute,
            engine=self.engine,
            settings=self.settings,
            wake_nodes=wake_nodes,
            defer=self.deferred,
            note_seen=self.last_seen.note,
            blobs=blobs,
            sync_job_files=self.output_sync.final_sync if self.output_sync else lambda record: None,
        )
        if not self.engine_address:
            for name, fn in ORCHESTRATIONS.items():
                self.engine.register_orchestration(name, fn)
            for name, fn in bind(self.services).items():
                self.engine.register_activity(name, fn)
        self.app = create_app(self.services, token=self.token, node_key=node_key(self.store), node_waker=node_waker)
        if not self.engine_address:  # the primary alone consumes the queue and the drop box
            self.queue = submission_queue(self.data_dir)
            self.consumer = QueueConsumer(self.services, self.queue)
            self.inbox = DropBox(self.services, drop_store(self.data_dir))

    def bind_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        return sock

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reconcile(self) -> None:
        """Give every cluster its nodes and controller, every running sweep, launched job and deletion its orchestration."""
        restart_grace(self.store, time.time())  # agents get a grace period to reconnect
        for workspace in self.store.workspaces("/subscriptions"):
            for cluster in self.store.children(workspace.id, "clusters"):
                self.engine.schedule("cluster_controller", {"clusterId": cluster.id}, controller_instance(cluster))
            for experiment in self.store.children(workspace.id, "experiments"):
                for sweep in self.store.children(experiment.id, "sweeps"):
                    if sweep.properties["executionState"] == "running":
                        self.engine.schedule("sweep", sweep_runs.ref(sweep), sweep_instance(sweep.internal["uuid"]))
        for job in self.store.jobs(states=LAUNCHED):  # queued jobs: their controller launches them
            start_lifecycle(self.services, job)
        for op in self.store.operations("InProgress"):
            if op["kind"] == "delete":
                self.engine.schedule("resource_deletion", {"resourceId": op["resource"], "operationId": op["id"]}, f"delete-{op['id']}")

    def serve(self, sock: socket.socket | None = None) -> None:
        """Run in the foreground until SIGINT/SIGTERM (`build()` first)."""
        sock = sock or self.bind_socket()
        self.engine.start()
        self.wakes.start()
        workers = ApiWorkers(self, sock)
        try:
            if self.simulated_nodes is None and isinstance(self.engine, DurableTaskEngine) and self.engine.runs_backend:
                workers.start(self.services.settings.api_workers, self.engine.address)
            # announced once its workers serve: a burst of requests right after the start would otherwise
            # meet the primary alone, with the workers' imports taking the CPU it needs
            ready = workers.wait_ready()
            # logged before the announcement: whoever finds the control plane finds this line written
            log.info("Batch AI control plane on %s (data dir %s, %d API workers serving)", self.url, self.data_dir, ready)
            self.control_plane_file.write_text(json.dumps({"url": self.url}))
            self.reconcile()
            self.consumer.start()
            self.inbox.start()
            if self.output_sync is not None:
                self.output_sync.start()
            self._run_server(sock)
        finally:
            workers.stop()
            self.consumer.stop()
            self.queue.close()
            self.inbox.stop()
            if self.output_sync is not None:
                self.output_sync.stop()
            self.deferred.stop()  # engine calls: before the engine stops
            self.engine.stop()  # first: a controller pass while the nodes stop would start new ones in their place
            self.stop_local_nodes()
            self.last_seen.close()
            self.wakes.close()
            self.services.compute.close()

    def serve_api(self, sock: socket.socket, lifeline: int, ready: int) -> None:
        """Run as an API worker of the primary process (`engine_address` given) until SIGTERM or until the
        primary is gone (its end of the `lifeline` pipe closes, however it ended). A byte on the `ready`
        pipe tells the primary that it serves."""
        self.engine.start()
        self.wakes.start()
        threading.Thread(target=_exit_when_closed, args=(lifeline,), name="lifeline", daemon=True).start()
        try:
            self._run_server(sock, ready)
        finally:
            self.deferred.stop()
            self.last_seen.close()
            self.wakes.close()
            self.engine.stop()

    def _run_server(self, sock: socket.socket, ready: int | None = None) -> None:
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="on")
        server = _Server(config, ready)
        if threading.current_thread() is threading.main_thread():
            # uvicorn raises the SIGTERM it handled again once it has shut down: with the default
            # action that would end this process before the cleanup after it (the nodes stopped)
            signal.signal(signal.SIGTERM, _exit_on_signal)
        server.run(sockets=[sock])

    def stop_local_nodes(self) -> None:
        """The local agents stop with the control plane (none is left idling behind it). A busy node's
        record stays as it was: the next start finds it silent and its job runs again elsewhere (a lost
        node is not the job's fault). After a kill -9 nothing stops them: the next start adopts them.
        Machines that joined are not the control plane's to stop: they reconnect when it is back."""
        for node in self.store.nodes():
            if node.machine == JOINED:
                continue
            self.services.compute.stop_node(node.handle(), grace=2.0)
            if node.job is None:
                self.store.update_node(node.id, state="starting", boot_id=None, pid=None)


class _Server(uvicorn.Server):
    """uvicorn's server that writes a byte to the `ready` pipe (if any) once it accepts connections."""

    def __init__(self, config: uvicorn.Config, ready: int | None):
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._ready is not None:
            if self.started:
                os.write(self._ready, b"r")
            os.close(self._ready)
            self._ready = None


class ApiWorkers:
    """Processes beside the primary that serve the same listening socket (the kernel hands each new
    connection to one of them): the ARM API and the node door, over the same store, with the
    primary's engine reached over its loopback gRPC port. The primary alone runs the engine, the
    background workers and the machines, so that one process's GIL is not the ceiling of them all.
    A worker ends when the primary ends, even by kill -9: it watches a pipe only the primary holds open."""

    def __init__(self, host: EmbeddedHost, sock: socket.socket):
        self.host, self.sock = host, sock
        self.procs: list[subprocess.Popen] = []
        self._lifelines: list[int] = []
        self._ready: list[int] = []

    def start(self, count: int, engine_address: str) -> None:
        for _ in range(count):
            lifeline, keep = os.pipe()
            ready, tell = os.pipe()
            fds = {"BATCHAI_LISTEN_FD": self.sock.fileno(), "BATCHAI_LIFELINE_FD": lifeline, "BATCHAI_READY_FD": tell}
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "function_app.embedded", "--api-worker", str(self.host.data_dir), engine_address],
                    pass_fds=tuple(fds.values()),
                    env={**os.environ, **{name: str(fd) for name, fd in fds.items()}},
                )
            )
            os.close(lifeline)
            os.close(tell)
            self._lifelines.append(keep)
            self._ready.append(ready)

    def wait_ready(self, timeout: float = 60.0) -> int:
        """Wait until every worker serves, or has ended, or `timeout` passed; returns how many serve. One
        that did not is left to the primary's lifeline (the others and the primary serve without it)."""
        deadline = time.monotonic() + timeout
        serving = 0
        for fd in self._ready:
            readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if readable and os.read(fd, 1):
                serving += 1
            else:
                log.warning("an API worker did not start serving; the others go on without it")
            os.close(fd)
        self._ready = []
        return serving

    def stop(self, timeout: float = 10.0) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for fd in self._lifelines:
            os.close(fd)
        self.procs, self._lifelines = [], []


def _exit_when_closed(fd: int) -> None:
    while os.read(fd, 1):
        pass
    log.warning("the primary process is gone: this API worker stops")
    os._exit(0)


def _api_worker(data_dir: str, engine_address: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    host = EmbeddedHost(Path(data_dir), engine_address=engine_address)
    host.build()
    sock = socket.socket(fileno=int(os.environ.pop("BATCHAI_LISTEN_FD")))
    host.serve_api(sock, int(os.environ.pop("BATCHAI_LIFELINE_FD")), int(os.environ.pop("BATCHAI_READY_FD")))


if __name__ == "__main__" and sys.argv[1:2] == ["--api-worker"]:
    _api_worker(sys.argv[2], sys.argv[3])
