"""Which queued jobs start now, and on which nodes. Pure: the cluster controller and tests call it.

Order: schedulingPriority (high, normal, low), then submission order. Gang placement: a job gets
`nodeCount` idle nodes at once or waits. The head of the queue is never overtaken: when it does
not fit, nothing behind it starts, so a big job cannot be starved by a stream of small ones.
"""

from __future__ import annotations

from dataclasses import dataclass

PRIORITY_RANK = {"high": 0, "normal": 1, "low": 2}


@dataclass(frozen=True)
class QueuedJob:
    id: str
    node_count: int
    priority: str = "normal"
    seq: int = 0  # submission order


def queue_order(jobs: list[QueuedJob]) -> list[QueuedJob]:
    return sorted(jobs, key=lambda j: (PRIORITY_RANK.get(j.priority, 1), j.seq))


def place(jobs: list[QueuedJob], idle_nodes: list[str]) -> list[tuple[str, list[str]]]:
    """Placements `(job id, node ids)` in start order; nodes are handed out in the order given."""
    free = list(idle_nodes)
    placed: list[tuple[str, list[str]]] = []
    for job in queue_order(jobs):
        if job.node_count > len(free):
            break
        placed.append((job.id, free[: job.node_count]))
        free = free[job.node_count:]
    return placed
