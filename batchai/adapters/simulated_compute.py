"""Simulated compute: nodes that exist only in memory, for driving the scheduler at scale.

Each simulated node speaks the real node protocol (batchai/node_protocol.py) in process:
it registers when started, heartbeats, takes its tasks when woken, "runs" each one for the
time its command says (`sleep N` anywhere in the command line; `default_seconds` otherwise)
and reports it finished with exit code 0 (or 137 when killed). So the controller, the
scheduling pass, the job lifecycles and the store all run for real, on thousands of nodes,
without a process per node. One thread drives their timers (heartbeats, ends of tasks) from a
time-ordered queue; a wake goes to the threads the nodes act on at once.

Like a cloud adapter, it knows a node by the machine it answered from `start_node`, which the
control plane keeps in the store and hands back (`NodeRecord.handle()`): a call site that lost
it finds no node here, so the simulated-cluster tests catch it.

The nodes reach the control plane through `control_plane`, given at construction: a callable that
answers the services they call the node protocol with (an agent process finds its control plane by
URL instead, when it runs). It is called when a node acts, never before, so the composition root can
build this compute first and then the services that hold it. Nodes are woken through `wake`, which
the composition root gives the services as their `wake_nodes`.
"""

from __future__ import annotations

import itertools
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from batchai import node_protocol
from batchai.background import TimerThread
from batchai.ports import start_each

if TYPE_CHECKING:
    from batchai.services import Services

_SLEEP = re.compile(r"\bsleep\s+([0-9]*\.?[0-9]+)")


def task_seconds(spec: dict, default: float) -> float:
    """How long a simulated task runs: the largest `sleep N` of its processes."""
    found = [float(m) for p in spec.get("processes") or [] for m in _SLEEP.findall(p.get("command", ""))]
    return max(found) if found else default


class _Node:
    def __init__(self, node_id: str, name: str):
        self.id, self.name = node_id, name
        self.boot = uuid.uuid4().hex
        self.running: dict[str, float] = {}  # task id -> end time
        self.finished: list[dict] = []
        self.alive = True
        self.lock = threading.Lock()


class SimulatedCompute:
    """The Compute port for simulated nodes, which call the node protocol with `control_plane()`."""

    remote = False

    def __init__(
        self, control_plane: Callable[[], Services], *, heartbeat_seconds: float = 5.0, default_seconds: float = 1.0, workers: int = 4
    ):
        self.heartbeat_seconds = heartbeat_seconds
        self.default_seconds = default_seconds
        self._control_plane = control_plane
        self._nodes: dict[str, _Node] = {}
        self._machines: dict[str, str] = {}  # machine -> node id
        self._evicted: set[str] = set()  # machines an eviction took, until stop_node
        self._machine_numbers = itertools.count()
        self._closed = False
        # what the nodes do, done by `workers` threads (a plain queue: submitting to an executor cost the
        # scheduling pass, which wakes the nodes it launched on, more than the waking itself)
        self._actions: queue.SimpleQueue[tuple[str, _Node] | None] = queue.SimpleQueue()
        self._workers = [threading.Thread(target=self._work, name=f"simnode_{i}", daemon=True) for i in range(workers)]
        for worker in self._workers:
            worker.start()
        self._timers = TimerThread("simulated-compute", logging.getLogger("batchai.simulated"))

    # ----- the Compute port -----------------------------------------------------------------

    def node_root(self, cluster_key: str, node_name: str) -> str:
        return f"/simulated/{cluster_key}/{node_name}"

    def start_nodes(self, *, cluster_id: str, cluster_key: str, nodes: list[tuple[str, str]]) -> list[dict | Exception]:
        return start_each(self, cluster_id=cluster_id, cluster_key=cluster_key, nodes=nodes)

    def start_node(self, *, node_id: str, cluster_id: str, cluster_key: str, name: str) -> dict:
        machine = f"simulated-{next(self._machine_numbers)}"
        self._nodes[node_id] = _Node(node_id, name)
        self._machines[machine] = node_id
        self._at(time.time(), "register", node_id)
        return {"id": node_id, "pid": None, "address": "127.0.0.1", "root": self.node_root(cluster_key, name), "machine": machine}

    def _node_of(self, node: dict) -> _Node | None:
        node_id = self._machines.get(node.get("machine") or "")
        return self._nodes.get(node_id) if node_id else None

    def is_alive(self, node: dict) -> bool:
        n = self._node_of(node)
        return bool(n and n.alive)

    def stop_node(self, node: dict, *, grace: float = 5.0) -> None:
        machine = node.get("machine") or ""
        n = self._nodes.pop(self._machines.pop(machine, ""), None)
        self._evicted.discard(machine)
        if n is not None:
            n.alive = False

    def kill_node(self, node: dict) -> None:
        self.stop_node(node)

    def evict(self, node: dict) -> None:
        """The node vanishes at once, its tasks unreported; `evicted` reports it until stop_node."""
        n = self._node_of(node)
        if n is not None:
            n.alive = False
            self._nodes.pop(n.id, None)
            self._evicted.add(node["machine"])

    def evicted(self, nodes: list[dict]) -> list[str]:
        return [n["id"] for n in nodes if n.get("machine") in self._evicted]

    def mount(self, root: str, mount_volumes, file_server_export) -> list[str]:
        return []  # simulated nodes read no files

    def unmount(self, root: str, mount_volumes) -> None:
        pass

    def wake(self, node_ids: list[str]) -> None:
        """Something changed for these nodes (a task, a kill): they heartbeat now."""
        for node_id in node_ids:
            self._dispatch("beat", node_id)

    def close(self) -> None:
        """Stops the threads that drive the nodes (they stop acting: simulated machines die with them)."""
        self._closed = True
        self._timers.stop()
        for _ in self._workers:
            self._actions.put(None)

    # ----- the nodes ------------------------------------------------------------------------

    def _at(self, when: float, action: str, node_id: str) -> None:
        self._timers.at(when, lambda: self._dispatch(action, node_id))

    def _dispatch(self, action: str, node_id: str) -> None:
        node = self._nodes.get(node_id)
        if node is not None and node.alive and not self._closed:
            self._actions.put((action, node))

    def _work(self) -> None:
        while (item := self._actions.get()) is not None:
            if not self._closed:
                self._act(*item)

    def _act(self, action: str, node) -> None:
        try:
            if action == "tick":  # before anything can fail: a node whose control plane is away keeps trying
                self._at(time.time() + self.heartbeat_seconds, "tick", node.id)
            svc = self._control_plane()
            if action == "register":
                node_protocol.register(svc, node.id, {"bootId": node.boot, "address": "127.0.0.1", "pid": None})
                stored = svc.store.get_node(node.id)
                if stored is None or stored.boot_id != node.boot:  # started before the controller stored it
                    self._at(time.time() + 0.05, "register", node.id)
                    return
                self._at(time.time() + self.heartbeat_seconds, "tick", node.id)
                self._beat(svc, node)
            else:  # "tick", "beat" (woken) and "finish" (a task's time is up)
                self._beat(svc, node)
        except Exception:  # noqa: BLE001 - a simulated node that fails a beat tries again on its next tick
            pass

    def _beat(self, svc: Services, node: _Node) -> None:
        now = time.time()
        with node.lock:
            done = [t for t, end in node.running.items() if end <= now]
            for task_id in done:
                del node.running[task_id]
                node.finished.append(_result(task_id, 0, None))
            body = {"bootId": node.boot, "running": sorted(node.running), "finished": list(node.finished)}
        answer = node_protocol.beat(svc, node.id, body)
        with node.lock:
            acked = set(answer.get("ack") or [])
            node.finished = [f for f in node.finished if f["taskId"] not in acked]
            for spec in answer.get("start") or []:
                if spec["task_id"] not in node.running:
                    holds = not any(not p.get("daemon") for p in spec.get("processes") or [])
                    end = float("inf") if holds else time.time() + task_seconds(spec, self.default_seconds)
                    node.running[spec["task_id"]] = end  # a holding task runs until it is killed
                    if not holds:
                        self._at(end, "finish", node.id)
            for task_id in answer.get("kill") or []:
                end = node.running.pop(task_id, -1.0)
                if end >= 0:  # a killed holding task ends with 0, as on a real node
                    node.finished.append(_result(task_id, 0 if end == float("inf") else 137, None if end == float("inf") else "terminated"))
                    self._dispatch("beat", node.id)
        if answer.get("action") == "register":
            node_protocol.register(svc, node.id, {"bootId": node.boot, "address": "127.0.0.1", "pid": None})


def _result(task_id: str, code: int, error: str | None) -> dict:
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return {"taskId": task_id, "exitCode": code, "error": error, "startTime": now, "endTime": now}
