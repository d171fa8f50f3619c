"""The ports of the control plane: what orchestrations' activities and the API need from the world.

One port, several adapters (ARCHITECTURE.md). The embedded adapters live in `batchai.adapters`.
Records are plain dataclasses so adapters stay interchangeable and easy to fake.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import BinaryIO, NamedTuple, Protocol


class Conflict(Exception):
    """A create found the resource already there, or a conditional write lost its race."""


@dataclass
class Record:
    """A stored resource: the wire body (with secrets: responses redact them) plus internals."""

    id: str  # ARM id as first spelled
    type: str  # workspaces | clusters | fileServers | experiments | jobs
    name: str
    parent: str | None  # ARM id of the parent resource (resource group for workspaces)
    body: dict  # full wire JSON: {"location"?, "tags"?, "properties": {...}}
    internal: dict = field(default_factory=dict)  # never on the wire: uuid, attempt, paths, ...
    etag: str = ""
    seq: int = 0  # creation order: paging and FIFO

    @property
    def properties(self) -> dict:
        return self.body.setdefault("properties", {})


@dataclass
class NodeRecord:
    id: str
    cluster: str  # cluster ARM id
    name: str
    state: str  # starting | idle | running | unusable | leaving
    job: str | None = None  # job ARM id while reserved
    pid: int | None = None
    boot_id: str | None = None
    address: str | None = None
    root: str | None = None
    last_seen: float = 0.0
    error: str | None = None
    exec_port: int | None = None  # the agent's exec service (peers' mpirun launches arrive there)
    idle_since: float = 0.0  # when it last became idle (autoscale shrinks nodes idle for long)
    machine: str | None = None  # the compute adapter's name for the node's machine (a scale set instance)
    gpus: str | None = None  # JSON list of its GPUs as its agent reported them ({"index", "name", "memoryMiB", "uuid"})
    # JSON {job key: [GPU indices]}: the jobs that share the node's GPUs (`gpusPerNode`); the node is
    # running, held by no one job, while any do
    shares: str | None = None

    def may_take_jobs(self) -> bool:
        """Holds no job and is idle, or runs GPU sharers beside which others may fit (whether it is alive and
        has GPUs free is the pass's to judge: `batchai.scheduling_pass.usable`, `shareable`)."""
        return self.job is None and (self.state == "idle" or (self.state == "running" and self.gpus is not None))

    def gpu_list(self) -> list[dict]:
        return json.loads(self.gpus) if self.gpus else []

    def share_map(self) -> dict[str, list[str]]:
        return json.loads(self.shares) if self.shares else {}

    def free_gpus(self) -> list[str]:
        """The indices of its GPUs no sharing job holds."""
        taken = {i for held in self.share_map().values() for i in held}
        return [g["index"] for g in self.gpu_list() if g["index"] not in taken]

    def handle(self) -> dict:
        """What the compute port is given to act on this node: kept in the store, so any control-plane
        process can reach a machine another one started."""
        return {"id": self.id, "pid": self.pid, "root": self.root, "machine": self.machine}


# a task's states from which a node's report of its end is taken (a finished one keeps its first result)
REPORTABLE = ("pending", "running", "killing")


@dataclass
class TaskRecord:
    id: str
    job: str  # job ARM id
    node: str  # node id
    attempt: int
    spec: dict  # NodeTask JSON
    # pending (given to no boot yet: a node's setup task) | running (given to `boot_id`; a launch gives a job's
    # tasks to the boot it found, and that boot's reports start it) | killing | finished
    state: str = "pending"
    boot_id: str | None = None  # the agent boot it was given to
    exit_code: int | None = None
    error: str | None = None
    start_time: str | None = None
    end_time: str | None = None


Mutation = Callable[[Record], "Record | None"]


class JobSummary(NamedTuple):
    """What scheduling reads of a job, without its body. A tuple: a pass reads ten thousand of them."""

    id: str
    seq: int
    parent: str  # the experiment's key
    state: str
    node_count: int | None
    priority: str | None
    max_wall_clock: str | None  # constraints.maxWallClockTime as given
    start_time: str | None  # executionInfo.startTime
    gpus_per_node: int | None = None  # gpusPerNode: the GPUs it takes of each node, sharing it (None: whole nodes)


class Launch(NamedTuple):
    """A queued job's start, as a scheduling pass hands it to `Store.start_jobs`."""

    job: str
    node_ids: list[str]
    change: Mutation  # the job's transition to running
    tasks: list[TaskRecord]
    gpus: dict[str, list[str]] | None = None  # node id -> the GPU indices it takes there, sharing the node (None: whole nodes)


class Store(Protocol):
    """The resource hierarchy, nodes, per-node tasks and long-running operations."""

    # resources
    def create(self, record: Record) -> Record: ...  # raises Conflict when the id exists
    # all of them or, when an id exists (Conflict), none: an array job and its tasks
    def create_many(self, records: Sequence[Record]) -> list[Record]: ...
    def get(self, resource_id: str) -> Record | None: ...
    def children(self, parent_id: str, type: str, *, after_seq: int = 0, limit: int | None = None) -> list[Record]: ...
    def workspaces(self, prefix: str, *, after_seq: int = 0, limit: int | None = None) -> list[Record]: ...
    def mutate(self, resource_id: str, change: Mutation) -> Record | None: ...
    def delete_tree(self, resource_id: str) -> list[Record]: ...
    def jobs(self, *, states: Iterable[str], cluster: str | None = None) -> list[Record]: ...

    # nodes
    def put_node(self, node: NodeRecord) -> None: ...
    def get_node(self, node_id: str) -> NodeRecord | None: ...
    def nodes(self, cluster: str | None = None) -> list[NodeRecord]: ...
    # the cluster's nodes a pass may place jobs on (`NodeRecord.may_take_jobs`), in nodes()' order: a node
    # report's pass reads these, not the whole cluster
    def placeable_nodes(self, cluster: str) -> list[NodeRecord]: ...
    def update_node(self, node_id: str, **fields) -> NodeRecord | None: ...
    # each node's last_seen raised to its time in `seen` (never lowered; nodes no longer stored are skipped)
    def touch_nodes(self, seen: Mapping[str, float]) -> None: ...
    def claim_nodes(self, cluster: str, job: str, node_ids: list[str]) -> bool: ...
    # a pass's launches, in order: each claims its nodes, applies its change (the start) and puts its tasks,
    # or, when a node is taken or the change refuses, changes nothing (its answer: None). SQLite: one
    # transaction for the batch; Cosmos: in turn, a refused launch's claim given back.
    def start_jobs(self, cluster: str, launches: Sequence[Launch]) -> list[Record | None]: ...
    def release_nodes(self, job: str) -> list[str]: ...
    # a job's end: its change and, when the change applies, its nodes released and its tasks stopped, as one
    # operation (SQLite: one transaction; Cosmos: the change, then the rest): of the tasks `ending`, those still
    # pending or running are finished ("terminated", ended now), of `killing` those running are to be killed;
    # answers the job as changed (None: refused, nothing else done) and the freed nodes. `finished`: (a task id,
    # its result's fields) a node reported and that decides the job, stored first, if the task is still pending,
    # running or killing; if it is not, nothing else is done (None), and a refused change leaves it stored
    def end_job(
        self,
        job: str,
        change: Mutation,
        *,
        ending: Sequence[str] = (),
        killing: Sequence[str] = (),
        finished: tuple[str, dict] | None = None,
    ) -> tuple[Record | None, list[str]]: ...
    def delete_node(self, node_id: str) -> None: ...
    def delete_nodes(self, cluster: str) -> list[NodeRecord]: ...

    # tasks
    def put_tasks(self, tasks: list[TaskRecord]) -> None: ...
    def tasks(self, *, job: str | None = None, node: str | None = None, states: Iterable[str] | None = None) -> list[TaskRecord]: ...
    def get_task(self, task_id: str) -> TaskRecord | None: ...
    def update_task(self, task_id: str, *, only_if_state: Iterable[str] | None = None, **fields) -> bool: ...

    # long-running operations
    def create_operation(self, op_id: str, kind: str, resource_id: str) -> None: ...
    def get_operation(self, op_id: str) -> dict | None: ...
    def operations(self, status: str) -> list[dict]: ...
    def finish_operation(self, op_id: str, status: str, error: str | None = None) -> None: ...

    # a cluster's jobs in `states` as scheduling needs them, in submission order
    def job_summaries(self, cluster: str, states: Iterable[str]) -> list[JobSummary]: ...

    # how many of the jobs under `parent` (an array job's tasks) are in each state
    def job_counts(self, parent: str) -> dict[str, int]: ...

    # the queued jobs that can be among the first `depth` of the cluster's queue order
    # (`batchai.scheduling.queue_order`), in submission order: of each priority and experiment
    # the oldest jobs, as many as `batchai.scheduling.head_limits` says. A pass reads this, not the
    # whole queue, so its cost does not grow with the queue.
    def queue_head(self, cluster: str, depth: int) -> list[JobSummary]: ...

    # flags: set_flag is true only for the caller that raised it (debouncing wake-ups)
    def set_flag(self, name: str) -> bool: ...
    def clear_flag(self, name: str) -> None: ...

    # settings that must survive restarts (signing key)
    def setting(self, name: str, default: Callable[[], str]) -> str: ...

    # API tokens (`batchai.access`): JSON objects with at least "id" and "created" (a time); put replaces
    # by id; tokens() in creation order; revoke sets "revoked": true and answers the token (None: no such id)
    def put_token(self, token: dict) -> None: ...
    def get_token(self, token_id: str) -> dict | None: ...
    def tokens(self) -> list[dict]: ...
    def revoke_token(self, token_id: str) -> dict | None: ...

    # the audit log, append-only: an entry has "ts" (epoch seconds), "principal", "action", "resource" and
    # "result" (an HTTP status) besides what else the caller puts in; each gets a "seq" that grows in the
    # order entries were recorded. audit_log answers the entries after `after_seq`, in that order, at most
    # `limit`, filtered by equal principal, action and result, `resource` (that resource and everything
    # under it, in any case), and `since` <= ts < `until`.
    def record_audit(self, entry: dict) -> None: ...
    def audit_log(self, *, after_seq: int = 0, limit: int = 100, **filters) -> list[dict]: ...


class Engine(Protocol):
    """The durable engine, as the control plane's triggers and activities use it."""

    def schedule(self, name: str, input: dict, instance_id: str) -> bool: ...  # False: that instance exists already
    def raise_event(self, instance_id: str, name: str, data=None) -> bool: ...
    def status(self, instance_id: str) -> dict | None: ...


class Unsupported(Exception):
    """The adapter cannot do this at all (not a passing failure): e.g. `Compute.evict` on machines that
    have no low-priority eviction. The API answers 409 Conflict with the message."""


class Compute(Protocol):
    """Machines for cluster nodes: local agent processes, in-memory simulated nodes, or VM scale set instances.

    A node is known by its handle, `NodeRecord.handle()`: `{"id", "pid", "root", "machine"}` as
    `start_node` answered them. The control plane keeps it in the store and hands it back to any of
    its processes, so an adapter must find a machine from the handle alone, not from its own memory.
    Calls come from several threads at once (activities, the API).
    """

    # The machines are other machines (VMs): nothing of the control plane's disk reaches them, so a job's
    # paths are under each node's root, its agent sends what it writes (logs, outputs) to the control plane,
    # and its volumes are mounted there.
    remote: bool

    def node_root(self, cluster_key: str, node_name: str) -> str | os.PathLike:
        """The node's root directory on its machine (its disk and mount root). The same arguments always
        give the same path; no other node of the cluster gets it."""
        ...

    def start_node(self, *, node_id: str, cluster_id: str, cluster_key: str, name: str) -> dict:
        """Starts a machine whose agent joins the cluster as `node_id` (it registers by itself, later).
        Answers the handle's fields: `{"id": node_id, "pid", "address", "root", "machine"}`, every key
        present; `pid`, `address` and `machine` may be None (an address is reported when the agent
        registers), `root` is `node_root(cluster_key, name)`."""
        ...

    def start_nodes(self, *, cluster_id: str, cluster_key: str, nodes: list[tuple[str, str]]) -> list[dict | Exception]:
        """`start_node` for each `(node id, name)`, as one request where the machines allow (VM scale sets:
        one capacity update of +N). One answer per node, in order: its handle, or the error that kept it
        from starting (its machine is gone). Raises, with no machine started, when none could be."""
        ...

    def is_alive(self, node: dict) -> bool:
        """Whether the node's machine is running (a booting one is). False once stopped or evicted, and
        for a handle this adapter cannot place."""
        ...

    def stop_node(self, node: dict, *, grace: float = 5.0) -> None:
        """Stops the node's machine and its tasks: `grace` seconds to stop them gently, where the adapter
        can. Returns once it is gone. A node already stopped, evicted or unknown is no error."""
        ...

    def evict(self, node: dict) -> None:
        """Takes the node's machine back as the platform does to a low-priority node: no grace, its tasks
        die unreported. The machine goes at once or soon after (VM scale sets: the platform acts on its own
        time); from then on `evicted` reports the node. An unknown node is no error. Raises `Unsupported`
        where the machines cannot be evicted."""
        ...

    def evicted(self, nodes: list[dict]) -> list[str]:
        """Ids of the given nodes whose machines an eviction took back, reported on every call until the
        node is stopped. A node stopped with `stop_node` is not asked about (callers leave out the nodes
        they stop themselves): what is answered for it is not part of the contract."""
        ...

    def mount(self, root: str, mount_volumes: dict | None, file_server_export: Callable[[str], str | None]) -> list[str]:
        """Makes the wire `mountVolumes` appear under `root` on the nodes (or plans them, where the machines
        mount at boot); answers the mount paths. `file_server_export(file server id)` is the directory a
        file server exports (None: no such file server). No volumes (None): nothing, `[]`. Repeating it is
        harmless."""
        ...

    def unmount(self, root: str, mount_volumes: dict | None) -> None:
        """Undoes `mount` for `root`. No volumes (None), or nothing mounted: nothing."""
        ...

    def close(self) -> None:
        """Releases what the adapter holds in this process (threads, clients). It stops no machine: nodes outlive
        the control plane (stop them with `stop_node`), save in-memory ones, which end with it. Call nothing
        else after it; closing again is harmless."""
        ...


class FileServers(Protocol):
    """File servers as machines of their own (NFS server VMs). Without one, a file server is a directory
    of the control plane's data dir, which local nodes link."""

    def create(self, file_server_key: str, properties: dict) -> dict:
        """Makes the file server's machine from its wire properties and returns once it serves; answers its
        `mountSettings` (`mountPoint`, `fileServerInternalIP`, `fileServerPublicIP`). Raises ValueError for
        properties it cannot serve (naming the field), anything else for the platform's refusals."""
        ...

    def delete(self, file_server_key: str) -> None:
        """Deletes the machine and its disks; one already gone is no error."""
        ...

    def close(self) -> None: ...


def start_each(compute: Compute, *, cluster_id: str, cluster_key: str, nodes: list[tuple[str, str]]) -> list[dict | Exception]:
    """`Compute.start_nodes` for machines that start one at a time."""
    answers: list[dict | Exception] = []
    for node_id, name in nodes:
        try:
            answers.append(compute.start_node(node_id=node_id, cluster_id=cluster_id, cluster_key=cluster_key, name=name))
        except Exception as exc:  # noqa: BLE001 - that node's answer
            answers.append(exc)
    return answers


PRIORITIES = ("high", "normal", "low")  # the order a submission queue is drained in


@dataclass
class QueueMessage:
    """A received submission message, locked for this receiver until completed, abandoned or dead-lettered."""

    id: str  # the message id: the submission's idempotency key when it has one
    body: str  # JSON text as published (maybe malformed: the consumer decides)
    priority: str
    delivery_count: int  # 1 on the first delivery
    lock_token: str = ""


class SubmissionQueue(Protocol):
    """Job submissions by message: priority-ordered, peek-lock, dead-letter with a reason.

    Adapters: SQLite (embedded) and Service Bus (a topic with one subscription per priority).
    """

    def publish(self, body: str, *, priority: str = "normal", message_id: str | None = None) -> str: ...
    def receive(self, *, max_messages: int = 10, lock_seconds: float = 30.0) -> list[QueueMessage]: ...  # high first
    def complete(self, message: QueueMessage) -> None: ...
    def abandon(self, message: QueueMessage) -> None: ...
    def dead_letter(self, message: QueueMessage, reason: str, description: str) -> None: ...
    def depth(self) -> dict[str, int]: ...  # active messages per priority
    def dead_letters(self) -> list[dict]: ...  # {"id", "priority", "reason", "description", "body"}

    def close(self) -> None:
        """Releases the adapter's connections; messages received and not settled are delivered again once
        their locks expire. Call nothing else after it; closing again is harmless."""
        ...


@dataclass(frozen=True)
class BlobInfo:
    name: str  # the full name, prefix included
    size: int
    last_modified: datetime


class BlobStore(Protocol):
    """Named byte strings in one container: where job logs and outputs go when the files must
    outlive the nodes. Names are relative paths with `/` separators; the directory adapter refuses
    a segment starting with `.` (ValueError: such paths are its staging area, and files being
    copied into a drop box).

    Adapters: a directory on disk, and Azure Blob Storage (append blobs for logs).
    """

    def put(self, name: str, data: bytes | BinaryIO) -> None: ...  # create or replace; a file is read in chunks, never whole
    def append(self, name: str, data: bytes) -> None: ...  # create on first use; logs grow by appends
    def get(self, name: str) -> bytes | None: ...
    def list(self, prefix: str) -> list[BlobInfo]: ...  # every blob under prefix, by name
    def delete(self, name: str) -> None: ...  # absent is fine
    def download_url(self, name: str, expires_in: timedelta) -> str: ...  # read-only, no other credential
