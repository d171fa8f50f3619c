"""Which queued jobs start now, and on which nodes. Pure: the cluster controller and tests call it.

Order: `schedulingPriority` (high, normal, low); within a priority, experiments take turns
(round-robin: the k-th queued job of every experiment before the (k+1)-th of any), and each
experiment's jobs keep their submission order. So one sweep of thousands of jobs does not starve
a single job submitted after it, and a lone experiment is plain FIFO.

Gang placement: a job gets `nodeCount` idle nodes at once or waits.

Backfill (EASY): the first job that does not fit is the head; it gets a reservation, the
earliest time enough nodes are free for it if every running job used its whole
`maxWallClockTime`. A job behind it may start now only if it cannot delay that time: it ends
(at the latest) before the reservation, or it uses only nodes the head will not need then.

GPU sharing (`gpusPerNode`, beyond Batch AI): such a job takes that many GPUs of each of its
nodes, and jobs like it share a node with disjoint GPUs. It goes on the nodes already shared
first, the fullest first, so that whole nodes stay whole. A whole-node job waits until every job
sharing its node ended; sharing jobs behind a waiting whole-node head wait too (they would keep
its nodes shared forever), unless the head can never fit.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter, itemgetter
from typing import NamedTuple

PRIORITY_RANK = {"high": 0, "normal": 1, "low": 2}
_SEQ = attrgetter("seq")
_TURN_SEQ = itemgetter(0, 1)
DEFAULT_MAX_SECONDS = 7 * 24 * 3600.0  # the service's default maxWallClockTime


class QueuedJob(NamedTuple):  # a tuple: a pass builds ten thousand of them
    id: str
    node_count: int
    priority: str = "normal"
    seq: int = 0  # submission order
    experiment: str = ""
    max_seconds: float = DEFAULT_MAX_SECONDS  # maxWallClockTime: the longest it can hold its nodes
    gpus: int = 0  # gpusPerNode: the GPUs it takes of each node, sharing it (0: whole nodes)


def queue_order(jobs: Iterable[QueuedJob]) -> list[QueuedJob]:
    """Priority, then round-robin between experiments, then submission order."""
    buckets: dict[int, list[QueuedJob]] = {}
    for job in jobs:
        buckets.setdefault(PRIORITY_RANK.get(job.priority, 1), []).append(job)
    ordered: list[QueuedJob] = []
    for rank in sorted(buckets):
        turns: dict[str, int] = {}
        keyed = []
        for job in sorted(buckets[rank], key=_SEQ):
            turn = turns.get(job.experiment, 0)
            turns[job.experiment] = turn + 1
            keyed.append((turn, job.seq, job))
        if len(turns) > 1:  # one experiment: its submission order is the order
            keyed.sort(key=_TURN_SEQ)
        ordered.extend(job for _, _, job in keyed)
    return ordered


def head_limits(groups: Iterable[tuple[str | None, str, int, int]], depth: int) -> list[tuple[str | None, str, int]]:
    """How many of each group's oldest jobs can be among the first `depth` of `queue_order`, given the
    queue's `(priority, experiment, oldest seq, size)` groups: `(priority, experiment, limit)` for the
    groups that can have any there. Together at most about `depth` jobs, however long the queue.

    The order takes whole priorities in turn; within the one it stops in, experiments take turns, so
    t full turns take min(size, t) of each. Of the turn it stops in, each experiment's next job is
    taken (which of them come first is not known without reading them), except in the first turn,
    where the oldest jobs decide. Priorities of one rank (None and "normal") are one experiment's
    queue in the order, so a group's limit is its pair's, at most its size."""
    pairs: dict[tuple[int, str], list] = {}
    for priority, experiment, oldest, size in groups:
        pair = pairs.setdefault((PRIORITY_RANK.get(priority or "normal", 1), experiment), [math.inf, 0, []])
        pair[0] = min(pair[0], oldest)
        pair[1] += size
        pair[2].append((priority, size))
    ranks: dict[int, list[tuple[str, float, int]]] = {}
    for (rank, experiment), (oldest, size, _) in pairs.items():
        ranks.setdefault(rank, []).append((experiment, oldest, size))
    limits: dict[tuple[int, str], int] = {}
    remaining = depth
    for rank in sorted(ranks):
        if remaining <= 0:
            break
        members = ranks[rank]
        if sum(size for _, _, size in members) <= remaining:
            limits.update({(rank, e): size for e, _, size in members})
            remaining -= sum(size for _, _, size in members)
            continue
        turns = _full_turns([size for _, _, size in members], remaining)
        if turns == 0:  # not one job each: the oldest first jobs
            limits.update({(rank, e): 1 for e, _, _ in sorted(members, key=lambda m: m[1])[:remaining]})
        else:
            limits.update({(rank, e): min(size, turns + 1) for e, _, size in members})
        break
    return [(priority, e, min(size, limit)) for (rank, e), limit in limits.items() for priority, size in pairs[(rank, e)][2]]


def _full_turns(sizes: list[int], budget: int) -> int:
    """The most turns t with sum(min(size, t)) <= budget (round-robin over queues of these sizes)."""
    low, high = 0, max(sizes)
    while low < high:
        mid = (low + high + 1) // 2
        if sum(min(size, mid) for size in sizes) <= budget:
            low = mid
        else:
            high = mid - 1
    return low


def reservation(need: int, free: int, ends: Sequence[float]) -> tuple[float, float]:
    """(when the head can start, how many nodes will be spare then) given sorted busy-node ends.

    A head that can never fit (the cluster is too small for it) protects nothing: (inf, inf).
    """
    missing = need - free
    if missing <= 0:
        return 0.0, float(free - need)
    if missing > len(ends):
        return math.inf, math.inf
    start = ends[missing - 1]
    available = free + bisect.bisect_right(ends, start)
    return start, float(available - need)


def place(jobs: Iterable[QueuedJob], idle_nodes: list[str], busy_until: Sequence[float] = ()) -> list[tuple[str, list[str]]]:
    """Placements `(job id, node ids)` in start order; nodes are handed out in the order given.

    `busy_until` has, for every node that is not idle but will be, the seconds until it is free
    at the latest (a running job's remaining maxWallClockTime; 0 for a node still starting).
    """
    return plan(jobs, idle_nodes, busy_until)[0]


GpuShares = dict[str, dict[str, list[str]]]  # job id -> node id -> the GPU indices it takes there


def plan(
    jobs: Iterable[QueuedJob],
    idle_nodes: list[str],
    busy_until: Sequence[float] = (),
    shareable: Mapping[str, Sequence[str]] | None = None,
    why: dict[str, tuple[str, float]] | None = None,
) -> tuple[list[tuple[str, list[str]]], GpuShares]:
    """`place`, and the GPUs of the jobs that share nodes: `shareable` has, for each node whose GPUs jobs
    may share (an idle one, also in `idle_nodes`, or one shared already), the indices of its free GPUs.

    `why`, when given, gets why each job it passes over waits (what the queue view shows): `("reserved",
    seconds until its reservation, inf if never)` for the head, `("gang", idle nodes then)` for a later
    job too big for them, `("backfill", the head's start)` for one that would delay the head (a GPU
    sharer behind a head included), `("gpus", GPUs it needs per node)` for a sharer that finds too few.
    Jobs reached after the idle nodes and free GPUs ran out get nothing."""
    free = list(idle_nodes)
    gpus_free = {node: list(indices) for node, indices in (shareable or {}).items() if indices}
    ends = sorted(busy_until)
    placed: list[tuple[str, list[str]]] = []
    shares: GpuShares = {}
    head: tuple[float, float] | None = None  # (reserved start, spare nodes then)
    for job in queue_order(jobs):
        if not free and not gpus_free:
            break
        if job.gpus:
            if head is not None and head[0] != math.inf:
                _note(why, job.id, "backfill", head[0])
                continue
            chosen = _share(job, gpus_free, set(free))
            if chosen is not None:
                free = [n for n in free if n not in chosen]  # shared now: no whole-node job there
                placed.append((job.id, list(chosen)))
                shares[job.id] = chosen
            else:
                _note(why, job.id, "gpus", job.gpus)
            continue
        if job.node_count > len(free):
            if head is None:
                head = reservation(job.node_count, len(free), ends)
                _note(why, job.id, "reserved", head[0])
            else:
                _note(why, job.id, "gang", len(free))
            continue
        if head is not None:
            start, spare = head
            if job.max_seconds > start:
                if job.node_count > spare:
                    _note(why, job.id, "backfill", start)
                    continue
                head = (start, spare - job.node_count)
        placed.append((job.id, free[: job.node_count]))
        for node in free[: job.node_count]:
            gpus_free.pop(node, None)
        free = free[job.node_count :]
        if head is None:
            for _ in range(job.node_count):
                bisect.insort(ends, job.max_seconds)
    return placed, shares


def _share(job: QueuedJob, gpus_free: dict[str, list[str]], idle: set[str]) -> dict[str, list[str]] | None:
    """The job's GPUs on `node_count` nodes with enough free (taken out of `gpus_free`), or None: shared
    nodes first, the fullest first, then idle ones."""
    fits = sorted((n for n, indices in gpus_free.items() if len(indices) >= job.gpus), key=lambda n: (n in idle, len(gpus_free[n]), n))
    if len(fits) < job.node_count:
        return None
    chosen = {}
    for node in fits[: job.node_count]:
        chosen[node], gpus_free[node] = gpus_free[node][: job.gpus], gpus_free[node][job.gpus :]
        if not gpus_free[node]:
            del gpus_free[node]
    return chosen


def _note(why: dict[str, tuple[str, float]] | None, job_id: str, reason: str, detail: float) -> None:
    if why is not None:
        why[job_id] = (reason, detail)
