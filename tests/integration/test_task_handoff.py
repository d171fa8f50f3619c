"""A launch hands each task to the boot its node had when the pass read it (no write of its own when the
node takes it), and the node protocol keeps that safe: a task to stop that the boot never took ends at once,
and a task handed to a boot that is gone is lost with it, as the node's register would have found it.

The cluster's simulated nodes are stopped once idle; the test then speaks for one of them
(`node_protocol.beat`), so that what it reports and when is the test's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batchai import jobs, node_protocol, scheduling_pass
from batchai.lifecycle import NODE_LOST
from tests.support.naming import unique_name
from tests.support.paused_host import V, paused_host, simulated_job, workspace_path
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def launched(tmp_path) -> Iterator[tuple]:
    """A job launched on one of the paused cluster's two idle nodes, which stopped acting: (host, job, task)."""
    workspace, experiment = unique_name("ws"), unique_name("exp")
    with paused_host(tmp_path, workspace, experiment) as host:
        cluster_id = f"{workspace_path(workspace)}/clusters/c"
        until(lambda: sum(n.state == "idle" for n in host.store.nodes(cluster_id)) == 2, 30, "both nodes idle")
        host.compute.close()  # from here on, the test is the node
        job_id = f"{workspace_path(workspace)}/experiments/{experiment}/jobs/j"
        host.http.put(job_id, params=V, json=simulated_job(cluster_id, "sleep 30")).raise_for_status()
        assert scheduling_pass.run_pass(host.services, host.store.get(cluster_id)) == [host.store.get(job_id).id]
        [task] = jobs.attempt_tasks(host.services, host.store.get(job_id))
        yield host, host.store.get(job_id), task


def beat(host, task, boot: str | None = None, running=(), finished=()) -> dict:
    node = host.store.get_node(task.node)
    return node_protocol.beat(
        host.services, node.id, {"bootId": boot or node.boot_id, "running": list(running), "finished": list(finished)}
    )


def test_the_node_takes_a_launched_task_on_its_next_report_without_a_write(launched):
    host, job, task = launched
    node = host.store.get_node(task.node)
    assert (task.state, task.boot_id) == ("running", node.boot_id)  # handed at launch
    assert [s["task_id"] for s in beat(host, task)["start"]] == [task.id]
    assert host.store.get_task(task.id) == task  # taking it wrote nothing
    assert beat(host, task)["start"] != []  # an answer lost on the way: the start is sent again
    assert beat(host, task, running=[task.id]) == {"start": [], "kill": [], "ack": [], "action": "ok"}


def test_a_terminate_before_the_node_took_the_task_ends_the_job_on_the_nodes_next_report(launched):
    host, job, task = launched
    jobs.terminate(host.services, job.id)
    assert host.store.get_task(task.id).state == "killing"
    answer = beat(host, task)  # it runs nothing: the start never reached it
    assert answer["start"] == [] and answer["kill"] == []
    after = host.store.get_task(task.id)
    assert (after.state, after.error) == ("finished", "terminated")
    assert host.store.get(job.id).properties["executionState"] in ("succeeded", "failed")
    assert host.store.get_node(task.node).job is None  # its node is free again at once, not after the kill grace


def test_a_terminate_after_the_node_took_the_task_kills_it_there(launched):
    host, job, task = launched
    beat(host, task)
    jobs.terminate(host.services, job.id)
    assert beat(host, task, running=[task.id])["kill"] == [task.id]
    assert host.store.get_task(task.id).state == "killing"  # until the node reports it killed


def test_a_task_handed_to_a_boot_that_is_gone_is_lost_with_it(launched):
    """The node registered again while the launch was on its way: its new boot is not given the task."""
    host, job, task = launched
    host.store.update_node(task.node, boot_id="the-next-boot")
    assert beat(host, task, boot="the-next-boot")["start"] == []
    after = host.store.get_task(task.id)
    assert (after.state, after.error) == ("finished", NODE_LOST)


def test_the_report_that_decides_the_job_ends_it_and_a_report_sent_again_changes_nothing(launched):
    host, job, task = launched
    beat(host, task)
    result = {
        "taskId": task.id,
        "exitCode": 0,
        "error": None,
        "startTime": "2026-01-01T00:00:00.000Z",
        "endTime": "2026-01-01T00:00:01.000Z",
    }
    assert beat(host, task, finished=[result])["ack"] == [task.id]
    after = host.store.get_task(task.id)
    assert (after.state, after.exit_code, after.end_time) == ("finished", 0, result["endTime"])
    ended = host.store.get(job.id)
    assert ended.properties["executionState"] == "succeeded" and host.store.get_node(task.node).job is None
    assert beat(host, task, finished=[{**result, "exitCode": 1}])["ack"] == [task.id]  # its answer was lost: sent again
    assert host.store.get_task(task.id).exit_code == 0 and host.store.get(job.id).etag == ended.etag
