"""The container of ports that composition roots build and activities receive.

Activities never import adapters: the embedded host or the Functions app constructs this once
and binds every activity to it (see `activities.bind`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from batchai.ports import Compute, Engine, Store


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    python: str = sys.executable  # default interpreter for python toolkits
    heartbeat_seconds: float = 1.0
    node_timeout_seconds: float = 15.0  # missed heartbeats for this long: the node is unusable
    max_attempts: int = 3  # a job whose nodes fail is retried this often in all
    kill_grace_seconds: float = 30.0  # a terminating job whose processes will not report is ended anyway

    def cluster_mount_root(self, cluster_uuid: str) -> Path:
        return self.data_dir / "clusters" / cluster_uuid / "mounts"

    def job_dir(self, job_uuid: str) -> Path:
        return self.data_dir / "jobs" / job_uuid


@dataclass
class Services:
    store: Store
    compute: Compute
    engine: Engine
    settings: Settings
    wake_nodes: Callable[[list[str]], None] = field(default=lambda node_ids: None)
