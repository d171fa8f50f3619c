"""Job arrays' pure parts (batchai.arrays): the tasks an array is stored with, its outcome, maxParallel."""

from __future__ import annotations

from collections import Counter

from batchai import arrays, job_state
from batchai.adapters.record_fields import cluster_of
from batchai.ports import JobSummary, Record

NOW = "2026-12-01T00:00:00.000Z"
EXP = "/subscriptions/s/resourcegroups/rg/providers/microsoft.batchai/workspaces/ws/experiments/e"
ARRAY = EXP + "/jobs/a"


def array(count: int = 3, **settings) -> Record:
    props = {
        "cluster": {"id": "/c"},
        "nodeCount": 1,
        "creationTime": NOW,
        "jobOutputDirectoryPathSegment": "s/rg/workspaces/ws/experiments/e/jobs/a/u1",
        "environmentVariables": [{"name": "A", "value": "1"}, {"name": "AZ_BATCHAI_TASK_INDEX", "value": "spoofed"}],
        "arraySettings": {"count": count, "maxTaskRetries": 2, **settings},
    }
    return job_state.new_job(Record(ARRAY, "jobs", "a", EXP, {"properties": props}), NOW, uuid="u1")


def summary(job_id: str, parent: str) -> JobSummary:
    return JobSummary(job_id, 1, parent, "queued", 1, "normal", None, None)


def test_an_array_is_stored_with_its_tasks_each_told_its_index():
    tasks = arrays.new_tasks(array())
    assert [t.id for t in tasks] == [f"{ARRAY}/tasks/{i}" for i in range(3)]
    assert {t.parent for t in tasks} == {ARRAY} and len({t.internal["uuid"] for t in tasks}) == 3
    env = {e["name"]: e["value"] for e in tasks[2].properties["environmentVariables"]}
    assert env == {"A": "1", "AZ_BATCHAI_TASK_INDEX": "2", "AZ_BATCHAI_TASK_COUNT": "3"}
    assert tasks[2].properties["jobOutputDirectoryPathSegment"].endswith("/jobs/a/u1/tasks/2")
    assert tasks[2].properties["executionState"] == "queued" and "arraySettings" not in tasks[2].properties
    assert arrays.array_of(tasks[2]) == ARRAY and tasks[2].internal["arrayTask"]["index"] == 2
    # the store queues the tasks on the cluster, never the array itself
    assert cluster_of(array()) is None and cluster_of(tasks[0]) == "/c"


def test_a_failed_task_is_retried_while_it_has_retries():
    task = arrays.new_tasks(array())[0]
    assert arrays.retries_left(task, {"exitCode": 1})
    assert not arrays.retries_left(task, {"exitCode": 0})
    task.internal["retries"] = 2
    assert not arrays.retries_left(task, {"exitCode": 1})
    assert not arrays.retries_left(array(), {"exitCode": 1})  # the array itself is never retried


def test_the_array_ends_with_its_last_task_succeeded_only_if_every_task_did():
    assert arrays.outcome({"succeeded": 3, "running": 1}) is None
    assert arrays.outcome({"succeeded": 3, "terminating": 1}) is None
    assert arrays.outcome({"succeeded": 4}) == {"exitCode": 0}
    assert arrays.outcome({"succeeded": 3, "failed": 1}) == {"error": "1 of 4 tasks failed."}


def test_max_parallel_holds_back_the_tasks_past_it_in_queue_order():
    other = summary(EXP + "/jobs/plain", EXP)
    queued = [summary(f"{ARRAY}/tasks/{i}", ARRAY) for i in range(4)]
    kept = arrays.hold_back([queued[0], other, *queued[1:]], {ARRAY: 3}, Counter({ARRAY: 1}))
    assert kept == [queued[0], other, queued[1]]
    assert arrays.hold_back(queued, {ARRAY: 2}, Counter({ARRAY: 2})) == []
    assert arrays.is_task_parent(ARRAY) and not arrays.is_task_parent(EXP)
