"""What a job runs on each node: the contract between launch plans, the control plane and node agents.

A launch plan is pure data. The control plane computes it once per attempt, stores it with the
node's task, and the node agent executes it literally: it never interprets job properties itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from batchai.frameworks.container import ContainerSpec


def _plain(value):
    """A dataclass as JSON-ready dicts and lists, copied (not `dataclasses.asdict`: it deep-copies every
    string, a quarter of a busy scheduling pass)."""
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(v) for k, v in vars(value).items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Process:
    """One OS process of a job on a node; its exit code counts toward the job's."""

    name: str  # log stem suffix: "" -> stdout.txt, "0" -> stdout-0.txt, "wk-0" -> stdout-wk-0.txt
    command: str  # run with /bin/bash -c
    stdout: str  # absolute file paths, opened for append
    stderr: str
    env: dict[str, str] = field(default_factory=dict)  # on top of NodeTask.env
    daemon: bool = False  # a server (e.g. a TensorFlow parameter server): stopped when the others end


@dataclass(frozen=True)
class NodeTask:
    """Everything one node does for one job attempt."""

    task_id: str
    job_id: str
    node_id: str
    cwd: str
    env: dict[str, str]  # AZ_BATCHAI_*, user variables and secrets: never logged
    execution_log: str  # the agent appends its lifecycle lines here
    dirs: list[str] = field(default_factory=list)  # created (mkdir -p) before anything runs
    files: dict[str, str] = field(default_factory=dict)  # path -> content, e.g. the MPI host file
    preparation: Process | None = None  # jobPreparation: runs first; non-zero fails the task
    processes: list[Process] = field(default_factory=list)  # started together after preparation
    after: str | None = None  # a task of the same node whose preparation must finish first
    container: ContainerSpec | None = None  # run preparation and processes in this container
    uploads: dict[str, str] = field(default_factory=dict)  # output directory id -> its path here, sent to the control plane
    # the job's own volumes on a VM (batchai.mounting, rendered; they hold keys: never logged): run by the
    # agent before anything else, and `unmounts` once the task is over
    mounts: str = ""
    unmounts: str = ""

    @property
    def holds_only(self) -> bool:
        """No process of its own to wait for: the task holds its node until the job ends."""
        return not any(not p.daemon for p in self.processes)

    def to_json(self) -> dict:
        return _plain(self)

    @classmethod
    def from_json(cls, data: dict) -> NodeTask:
        prep = data.get("preparation")
        container = data.get("container")
        return cls(
            **{k: v for k, v in data.items() if k not in ("preparation", "processes", "container")},
            preparation=Process(**prep) if prep else None,
            processes=[Process(**p) for p in data.get("processes", [])],
            container=ContainerSpec(**container) if container else None,
        )
