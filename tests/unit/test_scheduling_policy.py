"""The scheduling policy (batchai.scheduling): order, gang placement, backfill, fairness."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from batchai.scheduling import QueuedJob, head_limits, place, plan, queue_order

HOUR = 3600.0


def ids_of(placements):
    return [job for job, _ in placements]


def test_priority_then_fifo():
    jobs = [QueuedJob("low", 1, "low", 1), QueuedJob("n2", 1, "normal", 3), QueuedJob("n1", 1, "normal", 2), QueuedJob("hi", 1, "high", 4)]
    assert ids_of(place(jobs, ["a", "b", "c", "d"])) == ["hi", "n1", "n2", "low"]


def test_gang_placement_is_all_or_nothing():
    jobs = [QueuedJob("big", 3, seq=1), QueuedJob("small", 1, seq=2)]
    assert place(jobs, ["a", "b", "c", "d"]) == [("big", ["a", "b", "c"]), ("small", ["d"])]
    assert place([QueuedJob("big", 3)], ["a", "b"], busy_until=[HOUR]) == []


def test_a_small_job_does_not_take_a_node_the_head_is_about_to_get():
    jobs = [QueuedJob("big", 2, seq=1, max_seconds=HOUR), QueuedJob("small", 1, seq=2, max_seconds=HOUR)]
    assert place(jobs, ["a"], busy_until=[0.0]) == []  # the second node is still starting
    assert place(jobs, ["a"], busy_until=[60.0]) == []  # it frees in a minute; small would hold "a" an hour


def test_a_short_job_backfills_until_the_head_can_start():
    jobs = [
        QueuedJob("big", 2, seq=1, max_seconds=HOUR),
        QueuedJob("long", 1, seq=2, max_seconds=2 * HOUR),
        QueuedJob("short", 1, seq=3, max_seconds=30),
    ]
    assert place(jobs, ["a"], busy_until=[60.0]) == [("short", ["a"])]


def test_nodes_the_head_will_not_need_are_backfilled_with_anything():
    jobs = [QueuedJob("big", 3, seq=1), QueuedJob("long", 1, seq=2, max_seconds=10 * HOUR)]
    # two idle now, two more in a minute: big needs three, so one is spare at its start
    assert place(jobs, ["a", "b"], busy_until=[60.0, 60.0]) == [("long", ["a"])]


def test_a_head_too_big_for_the_cluster_blocks_nothing():
    jobs = [QueuedJob("huge", 8, seq=1), QueuedJob("small", 1, seq=2)]
    assert place(jobs, ["a", "b"], busy_until=[HOUR]) == [("small", ["a"])]


def test_experiments_of_one_priority_take_turns():
    sweep = [QueuedJob(f"sweep-{i}", 1, seq=i, experiment="sweep") for i in range(100)]
    lone = QueuedJob("lone", 1, seq=100, experiment="single")
    assert ids_of(place(sweep + [lone], ["a", "b"])) == ["sweep-0", "lone"]
    order = ids_of([(j.id, None) for j in queue_order(sweep[:3] + [lone] + [QueuedJob("hi", 1, "high", 200, "x")])])
    assert order == ["hi", "sweep-0", "lone", "sweep-1", "sweep-2"]


def test_one_experiment_is_fifo_within_each_priority():
    jobs = [QueuedJob(f"j{i}", 1, ("high", "normal", "low")[i % 3], i, "e") for i in range(30)]
    order = [j.id for j in queue_order(jobs)]
    assert order == [f"j{i}" for r in range(3) for i in range(30) if i % 3 == r]


# ----- properties -------------------------------------------------------------------------------

jobs_strategy = st.lists(
    st.builds(
        lambda n, p, e, m: (n, p, e, m),
        st.integers(1, 4),
        st.sampled_from(["high", "normal", "low"]),
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from([30.0, 600.0, HOUR, 10 * HOUR]),
    ),
    min_size=1,
    max_size=25,
)


def earliest_start(need: int, free_now: int, ends: list[float]) -> float:
    """When `need` nodes are free at once, if every busy node frees at its end (worst case)."""
    if free_now >= need:
        return 0.0
    ends = sorted(ends)
    return ends[need - free_now - 1] if need - free_now <= len(ends) else math.inf


@settings(max_examples=400, deadline=None)
@given(jobs_strategy, st.integers(0, 8), st.lists(st.sampled_from([0.0, 60.0, 900.0, 2 * HOUR]), max_size=8))
def test_backfill_never_delays_the_head(specs, idle, busy):
    jobs = [QueuedJob(f"j{i}", n, p, i, e, m) for i, (n, p, e, m) in enumerate(specs)]
    nodes = [f"n{i}" for i in range(idle)]
    placements = place(jobs, nodes, busy)
    by_id = {j.id: j for j in jobs}

    used = [n for _, ns in placements for n in ns]
    assert len(used) == len(set(used)) and set(used) <= set(nodes)  # no node twice, only idle ones
    assert all(len(ns) == by_id[j].node_count for j, ns in placements)  # gangs whole

    order = queue_order(jobs)
    placed = {j for j, _ in placements}
    head_index = next((i for i, j in enumerate(order) if j.id not in placed), None)
    if head_index is None:
        return
    head = order[head_index]
    ahead = [j for j in order[:head_index]]
    assert ids_of(placements)[: len(ahead)] == [j.id for j in ahead]  # nothing overtakes in order

    ahead_nodes = sum(j.node_count for j in ahead)
    ahead_ends = list(busy) + [j.max_seconds for j in ahead for _ in range(j.node_count)]
    without_backfill = earliest_start(head.node_count, idle - ahead_nodes, ahead_ends)
    backfilled = [by_id[j] for j in ids_of(placements)[len(ahead) :]]
    with_ends = ahead_ends + [j.max_seconds for j in backfilled for _ in range(j.node_count)]
    with_backfill = earliest_start(head.node_count, idle - len(used), with_ends)
    assert with_backfill <= without_backfill


@settings(max_examples=200, deadline=None)
@given(jobs_strategy, st.integers(0, 8))
def test_without_busy_nodes_every_job_that_fits_alone_is_placed_in_order(specs, idle):
    jobs = [QueuedJob(f"j{i}", n, p, i, e, m) for i, (n, p, e, m) in enumerate(specs)]
    placements = place(jobs, [f"n{i}" for i in range(idle)])
    if sum(j.node_count for j in jobs) <= idle:
        assert ids_of(placements) == [j.id for j in queue_order(jobs)]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([None, "low", "normal", "high"]), st.sampled_from("abcdef")), max_size=60),
    st.integers(min_value=1, max_value=20),
)
def test_the_head_limits_hold_the_first_jobs_of_the_queue_order(specs, depth):
    """What a store's queue_head returns (each group's oldest, as many as its limit) holds the queue's
    first `depth`, and not much more."""
    jobs = [QueuedJob(f"j{seq}", 1, priority or "normal", seq, experiment) for seq, (priority, experiment) in enumerate(specs)]
    groups: dict[tuple, list[QueuedJob]] = {}
    for (priority, experiment), job in zip(specs, jobs, strict=True):
        groups.setdefault((priority, experiment), []).append(job)
    limits = head_limits([(p, e, members[0].seq, len(members)) for (p, e), members in groups.items()], depth)
    head = [job for p, e, limit in limits for job in groups[(p, e)][:limit]]
    assert {job.id for job in queue_order(jobs)[:depth]} <= {job.id for job in head}
    # past the depth, at most the next job of each experiment; an experiment queued under both None and
    # "normal" (one queue in the order, two groups in the store) may bring up to its limit from each
    assert len(head) <= 2 * (depth + len("abcdef"))
    if not any(p is None for p, _ in specs) or not any(p == "normal" for p, _ in specs):
        assert len(head) <= depth + len("abcdef")


def test_gpu_sharing_jobs_pack_onto_shared_nodes_first_with_disjoint_gpus():
    four = ["0", "1", "2", "3"]
    jobs = [QueuedJob("a", 1, seq=1, gpus=2), QueuedJob("b", 1, seq=2, gpus=2), QueuedJob("c", 1, seq=3, gpus=1)]
    placements, shares = plan(jobs, ["n0", "n1"], (), {"n0": four, "n1": four})
    assert placements == [("a", ["n0"]), ("b", ["n0"]), ("c", ["n1"])]
    assert shares == {"a": {"n0": ["0", "1"]}, "b": {"n0": ["2", "3"]}, "c": {"n1": ["0"]}}
    # a node shared already is filled before an idle one is broken into
    placements, shares = plan([QueuedJob("d", 1, gpus=1)], ["n1"], (), {"n0": ["3"], "n1": four})
    assert shares == {"d": {"n0": ["3"]}}


def test_a_whole_node_job_does_not_take_a_shared_node_and_sharing_jobs_behind_it_wait():
    jobs = [QueuedJob("whole", 2, seq=1), QueuedJob("share", 1, seq=2, gpus=1), QueuedJob("cpu", 1, seq=3, max_seconds=60)]
    # n0 is shared (not idle), n1 idle: the whole job waits for n0 (its sharer ends within the hour)
    placements, shares = plan(jobs, ["n1"], [HOUR], {"n0": ["2", "3"], "n1": ["0", "1"]})
    assert placements == [("cpu", ["n1"])] and shares == {}  # the short job backfills; the sharing one waits its turn
    # a head that can never fit protects nothing: sharing goes on
    placements, shares = plan([QueuedJob("huge", 5, seq=1), QueuedJob("share", 1, seq=2, gpus=1)], ["n1"], [], {"n1": ["0"]})
    assert placements == [("share", ["n1"])] and shares == {"share": {"n1": ["0"]}}
