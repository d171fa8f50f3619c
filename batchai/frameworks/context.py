"""Where a job runs: the placement and the directory layout a launch plan is computed from.

Locally, `job_dir` (the job mount root and the shared job temp) and `cluster_mount_root` are
directories under the data dir that every node of the job sees at the same path, as shared
storage is on real clusters; each node's own disk is its `root`. Nodes that joined from other
machines (`node_local`) see nothing of the control plane's disk: their mount root and job dirs are
under their own roots, and what the job writes reaches the control plane through the agent.
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
    gpus: tuple[str, ...] = ()  # the indices (as nvidia-smi numbers them) of the node's GPUs the job gets


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
    node_local: bool = False  # the nodes are other machines: every path of the job is under the node's root
    shared_volume: str | None = None  # other machines: a cluster volume all nodes mount, for the shared job temp

    @property
    def master(self) -> PlacedNode:
        return self.nodes[0]

    @property
    def job_mount_root(self) -> str:
        return f"{self.job_dir}/mounts"

    @property
    def shared_job_temp(self) -> str:
        return f"{self.job_dir}/shared"

    def mount_root(self, node: PlacedNode) -> str:
        return f"{node.root}/mounts" if self.node_local else self.cluster_mount_root

    def job_dir_of(self, node: PlacedNode) -> str:
        return f"{node.root}/job-dirs/{self.job_uuid}" if self.node_local else self.job_dir

    def binds(self, node: PlacedNode) -> tuple[str, ...]:
        return (node.root,) if self.node_local else (*self.container_binds, self.job_temp(node))

    def shared_job_temp_of(self, node: PlacedNode) -> str:
        """AZ_BATCHAI_SHARED_JOB_TEMP: one directory all the job's nodes see (on other machines, on the cluster's
        shared volume; without one, each node has its own)."""
        if self.node_local and self.shared_volume:
            return f"{self.mount_root(node)}/{self.shared_volume}/.batchai/jobs/{self.job_uuid}/shared"
        return f"{self.job_dir_of(node)}/shared"

    def job_temp(self, node: PlacedNode) -> str:
        return f"{node.root}/jobs/{self.job_uuid}"
