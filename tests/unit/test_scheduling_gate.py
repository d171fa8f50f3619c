"""scheduling_pass.schedule: one pass of a cluster at a time in a process, and a pass asked for
while one runs is run by it once more, never lost."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from batchai import scheduling_pass
from batchai.ports import Record
from tests.support.waiting import until


class Store:
    def __init__(self, paused: bool = False):
        self.cluster = Record(id="/c", type="clusters", name="c", parent="/w", body={}, internal={"paused": paused})

    def get(self, resource_id: str) -> Record:
        return self.cluster


@pytest.fixture
def passes(monkeypatch):
    """run_pass replaced by one that blocks until released, counting the passes that ran."""
    state = SimpleNamespace(count=0, running=threading.Event(), release=threading.Semaphore(0), kinds=[])

    def run_pass(svc, cluster, *, thorough):
        state.count += 1
        state.kinds.append("thorough" if thorough else "quick")
        state.running.set()
        state.release.acquire()
        return ["job"]

    monkeypatch.setattr(scheduling_pass, "run_pass", run_pass)
    return state


def test_a_request_during_a_pass_is_folded_into_one_more_pass(passes):
    svc = SimpleNamespace(store=Store())
    first = threading.Thread(target=lambda: setattr(passes, "started", scheduling_pass.schedule(svc, "/gate-a")))
    first.start()
    until(passes.running.is_set, 10, "the first pass to run")
    assert scheduling_pass.schedule(svc, "/gate-a") == 0  # folded, not run here
    assert scheduling_pass.schedule(svc, "/gate-a") == 0  # and folded again into the same one
    passes.release.release()
    until(lambda: passes.count == 2, 10, "the folded pass")
    passes.release.release()
    first.join(10)
    assert passes.started == 2 and passes.count == 2
    passes.release.release()
    assert scheduling_pass.schedule(svc, "/gate-a") == 1  # the gate is open again


def test_a_thorough_pass_asked_for_during_a_quick_one_is_thorough(passes):
    """Quick passes (node reports') skip the stale-claim sweep: a controller's request folded into one must not."""
    svc = SimpleNamespace(store=Store())
    first = threading.Thread(target=lambda: scheduling_pass.schedule(svc, "/gate-d", thorough=False))
    first.start()
    until(passes.running.is_set, 10, "the first pass to run")
    assert scheduling_pass.schedule(svc, "/gate-d", thorough=False) == 0
    assert scheduling_pass.schedule(svc, "/gate-d") == 0
    assert scheduling_pass.schedule(svc, "/gate-d", thorough=False) == 0  # does not make it quick again
    passes.release.release()
    until(lambda: passes.count == 2, 10, "the folded pass")
    passes.release.release()
    first.join(10)
    assert passes.kinds == ["quick", "thorough"]


def test_a_paused_cluster_runs_no_pass(passes):
    assert scheduling_pass.schedule(SimpleNamespace(store=Store(paused=True)), "/gate-b") == 0
    assert passes.count == 0


def test_a_failing_pass_opens_the_gate(monkeypatch):
    def broken(svc, cluster, *, thorough):
        raise RuntimeError("store down")

    monkeypatch.setattr(scheduling_pass, "run_pass", broken)
    svc = SimpleNamespace(store=Store())
    for _ in range(2):
        with pytest.raises(RuntimeError):
            scheduling_pass.schedule(svc, "/gate-c")
