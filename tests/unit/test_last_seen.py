"""Nodes' last_seen times are written in batches: one store call per interval, the latest time of each
node, what a failed write held kept for the next batch, and what is left written on close."""

from __future__ import annotations

from batchai.adapters.sqlite_store import SqliteStore
from batchai.last_seen import LastSeenWriter
from batchai.ports import NodeRecord
from tests.support.waiting import until

CL = "/subscriptions/s/resourceGroups/r/providers/Microsoft.BatchAI/workspaces/w/clusters/c"


class CountingStore(SqliteStore):
    def __init__(self, path):
        super().__init__(path)
        self.batches: list[dict] = []
        self.fail_next = False

    def touch_nodes(self, seen):
        if self.fail_next:
            self.fail_next = False
            raise OSError("disk full")
        self.batches.append(dict(seen))
        super().touch_nodes(seen)


def test_notes_are_written_in_one_batch_with_each_nodes_latest_time(tmp_path):
    store = CountingStore(tmp_path / "store.db")
    for i in range(3):
        store.put_node(NodeRecord(f"n{i}", CL, f"node-{i}", "idle"))
    writer = LastSeenWriter(store, interval=3600)  # the thread's first batch is at once; the next an hour later
    writer.note("n0", 5.0)
    until(lambda: store.batches, 10, "the first batch")
    for node, when in [("n1", 7.0), ("n2", 8.0), ("n1", 9.0), ("n2", 6.0)]:
        writer.note(node, when)
    assert store.batches == [{"n0": 5.0}]  # nothing more until the interval is up
    writer.close()
    assert store.batches == [{"n0": 5.0}, {"n1": 9.0, "n2": 8.0}]
    assert {n.id: n.last_seen for n in store.nodes(CL)} == {"n0": 5.0, "n1": 9.0, "n2": 8.0}


def test_a_batch_that_fails_is_kept_for_the_next(tmp_path):
    store = CountingStore(tmp_path / "store.db")
    store.put_node(NodeRecord("n0", CL, "node-0", "idle"))
    writer = LastSeenWriter(store, interval=3600)
    store.fail_next = True
    writer.note("n0", 5.0)  # its thread's first batch fails (logged)
    until(lambda: not store.fail_next, 10, "the failed batch")
    writer.note("n0", 4.0)
    writer.close()
    assert store.batches == [{"n0": 5.0}] and store.get_node("n0").last_seen == 5.0
