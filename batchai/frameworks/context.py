"""Where a job runs: the placement and the directory layout a launch plan is computed from.

Locally, `job_dir` (the job mount root and the shared job temp) and `cluster_mount_root` are
directories under the data dir that every node of the job sees at the same path, as shared
storage is on real clusters; each node's own disk is its `root`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlacedNode:
    id: str
    name: str
    address: str
    root: str
    exec_port: int = 0  # the node agent's exec service, where peers' mpirun launches go


@dataclass(frozen=True)
class LaunchContext:
    job_id: str
    job_name: str
    job_uuid: str
    attempt: int
    output_segment: str  # jobOutputDirectoryPathSegment
    cluster_mount_root: str  # AZ_BATCHAI_MOUNT_ROOT
    job_dir: str  # shared: mounts/ is AZ_BATCHAI_JOB_MOUNT_ROOT, shared/ is AZ_BATCHAI_SHARED_JOB_TEMP
    nodes: tuple[PlacedNode, ...]
    master_port: int  # a free port on the first node, for rendezvous
    python: str = "python3"  # interpreter when the job names none
    gpus_per_node: int = 0
    mpirun: str = "mpirun"  # the MPI launcher with its options for these nodes
    exec_secret: str = ""  # lets this job's mpirun start daemons on its other nodes
    container_binds: tuple[str, ...] = ()  # host paths a job's container sees (at the same paths)

    @property
    def master(self) -> PlacedNode:
        return self.nodes[0]

    @property
    def job_mount_root(self) -> str:
        return f"{self.job_dir}/mounts"

    @property
    def shared_job_temp(self) -> str:
        return f"{self.job_dir}/shared"

    def job_temp(self, node: PlacedNode) -> str:
        return f"{node.root}/jobs/{self.job_uuid}"
