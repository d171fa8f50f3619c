"""How many nodes a cluster wants (pure): manual targets, and auto scale growing and shrinking."""

from __future__ import annotations

from activities.clusters import desired_nodes
from batchai.ports import NodeRecord, Record

NOW = 1000.0


def cluster(scale: dict, **internal) -> Record:
    return Record(id="c", type="clusters", name="c", parent="w", body={"properties": {"scaleSettings": scale}}, internal=internal)


def node(name, state="idle", job=None, idle_since=NOW, error=None):
    return NodeRecord(id=name, cluster="c", name=name, state=state, job=job, idle_since=idle_since, error=error)


def queued(*sizes):
    return [Record(id=f"j{i}", type="jobs", name=f"j{i}", parent="e", body={"properties": {"nodeCount": n}}) for i, n in enumerate(sizes)]


AUTO = {"autoScale": {"minimumNodeCount": 0, "maximumNodeCount": 4, "initialNodeCount": 1}}


def test_manual_is_the_target():
    assert desired_nodes(cluster({"manual": {"targetNodeCount": 3}}), [], queued(5), NOW, 60) == 3


def test_auto_starts_at_the_initial_count_once():
    assert desired_nodes(cluster(AUTO), [], [], NOW, 60) == 1
    assert desired_nodes(cluster(AUTO, initialized=True), [], [], NOW, 60) == 0


def test_auto_grows_to_fit_the_queue_within_the_maximum():
    busy = [node("a", "running", job="x")]
    assert desired_nodes(cluster(AUTO, initialized=True), busy, queued(2), NOW, 60) == 3
    assert desired_nodes(cluster(AUTO, initialized=True), busy, queued(2, 4), NOW, 60) == 4


def test_auto_keeps_recently_idle_nodes_and_drops_long_idle_ones():
    nodes = [node("a", idle_since=NOW - 10), node("b", idle_since=NOW - 100), node("c", "running", job="x")]
    assert desired_nodes(cluster(AUTO, initialized=True), nodes, [], NOW, 60) == 2
    assert desired_nodes(cluster(AUTO, initialized=True), nodes, queued(1), NOW, 60) == 2  # an idle node serves the queue


def test_auto_never_goes_below_the_minimum_and_ignores_dead_nodes():
    scale = {"autoScale": {"minimumNodeCount": 2, "maximumNodeCount": 4}}
    dead = [node("a", "unusable", error="The node stopped responding.")]
    assert desired_nodes(cluster(scale, initialized=True), dead, [], NOW, 60) == 2
