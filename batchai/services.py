"""The container of ports that composition roots build and activities receive.

Activities never import adapters: the embedded host or the Functions app constructs this once
and binds every activity to it (see `activities.bind`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from batchai.lifecycle import RUNNING_RECHECK_SECONDS
from batchai.ports import BlobStore, Compute, Engine, FileServers, Record, Store


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    python: str = sys.executable  # default interpreter for python toolkits
    heartbeat_seconds: float = 1.0
    node_timeout_seconds: float = 15.0  # missed heartbeats for this long: the node is unusable
    max_attempts: int = 3  # a job whose nodes fail is retried this often in all (evictions do not count)
    kill_grace_seconds: float = 30.0  # a terminating job whose processes will not report is ended anyway
    autoscale_idle_seconds: float = 300.0  # auto scale removes nodes idle this long
    # freed nodes take their next job in the request that freed them (one control-plane process);
    # off where several instances serve requests: their passes could overlap, so the controller alone runs them
    inline_scheduling: bool = True
    blob_sync_seconds: float = 1.0  # with blob storage: how often running jobs' new output is uploaded
    # A launched job's lifecycle (its watchdog: deadline, terminate grace, a recheck every 30 s) starts this
    # long after the launch, or at the job's deadline if sooner, if the job still runs then (where
    # `Services.defer` can wait: the embedded host). Node reports end jobs by themselves, and a lost node or
    # a terminate starts the lifecycle at once, so until then it would only wait: a job that ends sooner
    # costs the engine nothing, as Slurm checks time limits in its main loop, not with a watcher per job.
    lifecycle_start_delay_seconds: float = RUNNING_RECHECK_SECONDS
    # embedded host: processes beside the primary serving the API (one per core beyond the first, at most 3)
    api_workers: int = field(default_factory=lambda: max(0, min(os.cpu_count() or 1, 4) - 1))

    @classmethod
    def from_env(cls, data_dir: Path, environ=os.environ, **defaults) -> Settings:
        """`defaults` (the composition root's), overridden by BATCHAI_<FIELD> variables (e.g.
        BATCHAI_AUTOSCALE_IDLE_SECONDS=5, BATCHAI_INLINE_SCHEDULING=false)."""
        overrides: dict = dict(defaults)  # each field's own type, from its annotation
        for f in fields(cls):
            value = environ.get(f"BATCHAI_{f.name.upper()}")
            if value is None or f.name in ("data_dir", "python"):
                continue
            if f.type in ("bool", bool):
                overrides[f.name] = value.strip().lower() in ("1", "true", "yes", "on")
            else:
                overrides[f.name] = int(value) if f.type in ("int", int) else float(value)
        return cls(data_dir=data_dir, **overrides)

    def cluster_mount_root(self, cluster_uuid: str) -> Path:
        return self.data_dir / "clusters" / cluster_uuid / "mounts"

    def job_dir(self, job_uuid: str) -> Path:
        return self.data_dir / "jobs" / job_uuid


@dataclass
class Services:
    """Everything is given here, by the composition root; nothing is set on it afterwards."""

    store: Store
    compute: Compute
    engine: Engine
    settings: Settings
    # nodes whose orders changed heartbeat now: agents' long polls (the API's NodeWaker), or simulated nodes
    wake_nodes: Callable[[list[str]], None] = field(default=lambda node_ids: None)
    # a node was heard from at a time (`batchai.last_seen.LastSeenWriter.note`: written in batches); None: the
    # node report writes it itself
    note_seen: Callable[[str, float], None] | None = None
    blobs: BlobStore | None = None  # where job logs and outputs are listed from; None: the local disk
    file_servers: FileServers | None = None  # NFS server VMs; None: a file server is a directory of the data dir
    sync_job_files: Callable[[Record], None] = field(default=lambda record: None)  # an ending job's last upload
    # Engine calls that only inform an orchestration (a lifecycle started after launch, woken at its job's
    # end), which a node's answer need not wait for: the embedded host makes them after the answer (and
    # any `delay`), in order, on one thread (its restart reconciles what a crash loses); by default they
    # are made at once, whatever the delay.
    defer: Callable[..., None] = field(default=lambda call, delay=0.0: call())
