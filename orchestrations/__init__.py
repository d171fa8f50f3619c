"""Deterministic workflows, written once against the Flow port (`batchai.flow`).

No clock, random, I/O or global state here: everything that touches the world is an activity.
"""

from orchestrations.cluster_controller import cluster_controller
from orchestrations.file_server_creation import file_server_creation
from orchestrations.job_lifecycle import job_lifecycle
from orchestrations.resource_deletion import resource_deletion
from orchestrations.sweep import sweep

ORCHESTRATIONS = {
    "job_lifecycle": job_lifecycle,
    "cluster_controller": cluster_controller,
    "resource_deletion": resource_deletion,
    "file_server_creation": file_server_creation,
    "sweep": sweep,
}
