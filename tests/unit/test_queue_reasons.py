"""Why a queued job waits: what `plan` reports through `why` (the queue view's source), and that
asking changes nothing about what it places."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from batchai.scheduling import QueuedJob, plan

HOUR = 3600.0


def test_the_head_gets_a_reservation_a_later_gang_too_big_and_a_long_job_behind_it_are_told_why():
    jobs = [
        QueuedJob("big", 3, seq=1, max_seconds=HOUR),
        QueuedJob("bigger", 4, seq=2, max_seconds=HOUR),
        QueuedJob("long", 1, seq=3, max_seconds=2 * HOUR),
        QueuedJob("short", 1, seq=4, max_seconds=60),
    ]
    why: dict = {}
    placed = plan(jobs, ["a", "b"], [HOUR / 2, HOUR], why=why)[0]
    assert placed == [("short", ["a"])]  # ends before the head's reservation: backfills
    assert why == {"big": ("reserved", HOUR / 2), "bigger": ("gang", 2), "long": ("backfill", HOUR / 2)}


def test_a_head_larger_than_the_cluster_is_reserved_never():
    why: dict = {}
    assert plan([QueuedJob("huge", 5)], ["a"], [10.0], why=why)[0] == []
    assert why == {"huge": ("reserved", math.inf)}


def test_jobs_reached_after_the_idle_nodes_ran_out_get_no_reason_from_place():
    why: dict = {}
    placed = plan([QueuedJob("one", 1, seq=1), QueuedJob("two", 1, seq=2)], ["a"], why=why)[0]
    assert placed == [("one", ["a"])] and why == {}


job = st.builds(
    QueuedJob,
    id=st.uuids().map(str),
    node_count=st.integers(1, 4),
    priority=st.sampled_from(["low", "normal", "high"]),
    seq=st.integers(0, 1000),
    experiment=st.sampled_from(["e1", "e2", "e3"]),
    max_seconds=st.sampled_from([60.0, HOUR, 10 * HOUR]),
    gpus=st.sampled_from([0, 0, 1, 2]),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(job, max_size=12),
    st.integers(0, 5),
    st.lists(st.sampled_from([0.0, 30.0, HOUR, 5 * HOUR]), max_size=5),
    st.lists(st.integers(0, 4), max_size=5),
)
def test_asking_why_never_changes_what_is_placed(jobs, idle, busy, free_gpus):
    nodes = [f"n{i}" for i in range(idle)]
    shareable = {f"n{i}": [str(g) for g in range(count)] for i, count in enumerate(free_gpus)}
    why: dict = {}
    asked = plan(jobs, nodes, busy, shareable, why)
    assert asked == plan(jobs, nodes, busy, shareable)
    placed = {job_id for job_id, _ in asked[0]}
    assert not placed & set(why)  # a job is either placed or told why it waits
    assert sum(1 for reason, _ in why.values() if reason == "reserved") <= 1  # one head
