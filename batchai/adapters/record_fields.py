"""What a store indexes of a resource's body, derived on every write so queries never parse bodies.

Shared by the adapters so that SQLite columns and Cosmos DB item fields can never disagree on
what "a job's state" or "a job's cluster" is.
"""

from __future__ import annotations

from batchai import ids
from batchai.ports import Record


def state_of(record: Record) -> str | None:
    props = record.body.get("properties", {})
    return props.get("executionState") if record.type == "jobs" else props.get("provisioningState")


def cluster_of(record: Record) -> str | None:
    """The lookup key of a job's cluster (None for other resources, and for an array job: its tasks are
    queued on the cluster, not it)."""
    props = record.body.get("properties", {})
    if record.type != "jobs" or "arraySettings" in props:
        return None
    cluster = props.get("cluster") or {}
    return ids.key(cluster["id"]) if cluster.get("id") else None


def scheduling_of(record: Record) -> tuple:
    """(node count, priority, max wall clock, start time, GPUs per node): what a scheduling pass reads of a job."""
    if record.type != "jobs":
        return (None,) * 5
    props = record.body.get("properties", {})
    return (
        props.get("nodeCount"),
        props.get("schedulingPriority"),
        (props.get("constraints") or {}).get("maxWallClockTime"),
        (props.get("executionInfo") or {}).get("startTime"),
        props.get("gpusPerNode"),
    )
