"""The cluster controller on local clusters: priority order, auto scale, node failure and eviction,
and a control-plane kill -9 in the middle of 200 jobs."""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from azure.mgmt.batchai import models

from tests.integration.conftest import Server, kill_agents, make_sdk
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(300)
RG, EXP = "rg", "exp"
SUB = "00000000-0000-0000-0000-000000000000"
V = {"api-version": "2018-05-01"}
FAST = {"BATCHAI_NODE_TIMEOUT_SECONDS": "3", "BATCHAI_AUTOSCALE_IDLE_SECONDS": "2", "BATCHAI_HEARTBEAT_SECONDS": "0.5"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("scheduler"), env=FAST).start()
    yield server
    server.stop()
    kill_agents(server.data_dir)


@pytest.fixture(scope="module")
def client(srv):
    return make_sdk(srv)


def base(ws: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.BatchAI/workspaces/{ws}"


def make_cluster(sdk, ws, name, scale, priority="dedicated") -> models.Cluster:
    sdk.workspaces.begin_create(RG, ws, models.WorkspaceCreateParameters(location="eastus")).result()
    sdk.experiments.begin_create(RG, ws, EXP).result()
    return sdk.clusters.begin_create(
        RG,
        ws,
        name,
        models.ClusterCreateParameters(
            vm_size="STANDARD_D1",
            vm_priority=priority,
            scale_settings=scale,
            user_account_settings=models.UserAccountSettings(admin_user_name="u", admin_user_password="pw"),
        ),
    ).result()


def idle(sdk, ws, name, count):
    return until(lambda: sdk.clusters.get(RG, ws, name).node_state_counts.idle_node_count == count, 90, f"{count} idle nodes", interval=0.2)


def job(sdk, ws, cluster, name, command, nodes=1, priority="normal", **extra):
    return sdk.jobs.begin_create(
        RG,
        ws,
        EXP,
        name,
        models.JobCreateParameters(
            cluster=models.ResourceId(id=cluster.id),
            node_count=nodes,
            scheduling_priority=priority,
            std_out_err_path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
            custom_toolkit_settings=models.CustomToolkitSettings(command_line=command),
            **extra,
        ),
    ).result()


def ended(sdk, ws, name, timeout=120):
    return until(
        lambda: (j := sdk.jobs.get(RG, ws, EXP, name)).execution_state in ("succeeded", "failed") and j,
        timeout,
        f"job {name} to end",
        interval=0.2,
    )


def manual(n):
    return models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=n))


def a_controller_pass_ends(sdk, ws, name, nodes):
    """Returns once a controller pass that began after this call has ended: a pass that, unless the
    cluster is paused, starts what fits. A pass shows itself only in what it does to nodes, so: one
    node more (a pass saw the new target), then back to `nodes` (a later pass; the controller runs
    its passes one at a time, so the first had ended). The same `nodes` are idle at the end."""
    sdk.clusters.update(RG, ws, name, models.ClusterUpdateParameters(scale_settings=manual(nodes + 1)))
    idle(sdk, ws, name, nodes + 1)
    sdk.clusters.update(RG, ws, name, models.ClusterUpdateParameters(scale_settings=manual(nodes)))
    until(
        lambda: (c := sdk.clusters.get(RG, ws, name)).current_node_count == nodes and c.allocation_state == "steady",
        90,
        f"a later pass to bring the cluster back to {nodes} nodes",
        interval=0.2,
    )
    idle(sdk, ws, name, nodes)


def test_a_paused_cluster_starts_its_queue_in_priority_order_then_fifo(client, srv, unique_name):
    ws = unique_name("order")
    cluster = make_cluster(client, ws, "c", manual(2))
    idle(client, ws, "c", 2)
    http = srv.http()
    assert http.post(f"{base(ws)}/clusters/c/pause", params=V).status_code == 200
    priorities = ["low", "high", "normal"] * 10
    for i, priority in enumerate(priorities):
        job(client, ws, cluster, f"j{i:02d}", "sleep 0.05", priority=priority)
    a_controller_pass_ends(client, ws, "c", 2)  # one that, were the cluster not paused, would have started two
    assert all(j.execution_state == "queued" for j in client.jobs.list_by_experiment(RG, ws, EXP))
    assert http.post(f"{base(ws)}/clusters/c/resume", params=V).status_code == 200
    jobs = {f"j{i:02d}": ended(client, ws, f"j{i:02d}") for i in range(30)}
    rank = {"high": 0, "normal": 1, "low": 2}
    expected = sorted(jobs, key=lambda n: (rank[priorities[int(n[1:])]], n))
    starts = [jobs[n].execution_info.start_time for n in expected]
    assert starts == sorted(starts), [(n, jobs[n].execution_info.start_time.isoformat()) for n in expected]


def test_auto_scale_grows_from_zero_for_the_queue_and_returns_to_zero(client, srv, unique_name):
    ws = unique_name("auto")
    cluster = make_cluster(
        client,
        ws,
        "c",
        models.ScaleSettings(auto_scale=models.AutoScaleSettings(minimum_node_count=0, maximum_node_count=2, initial_node_count=0)),
    )
    assert client.clusters.get(RG, ws, "c").current_node_count == 0
    job(client, ws, cluster, "two", "test $(wc -l < $AZ_BATCHAI_MPI_HOST_FILE) = 2", nodes=2)
    until(lambda: client.clusters.get(RG, ws, "c").current_node_count == 2, 90, "the cluster to grow to 2", interval=0.2)
    assert ended(client, ws, "two").execution_state == "succeeded"
    shrunk = until(
        lambda: (c := client.clusters.get(RG, ws, "c")).current_node_count == 0 and c.allocation_state == "steady" and c,
        60,
        "the cluster to shrink to 0",
        interval=0.2,
    )
    assert shrunk.node_state_counts.idle_node_count == 0


def test_a_killed_node_fails_over_to_healthy_nodes_and_is_replaced(client, srv, unique_name):
    ws = unique_name("failover")
    cluster = make_cluster(client, ws, "c", manual(3))
    idle(client, ws, "c", 3)
    job(client, ws, cluster, "resilient", "sleep 5; echo done", nodes=2)
    http = srv.http()
    first = until(
        lambda: (
            (j := http.get(f"{base(ws)}/experiments/{EXP}/jobs/resilient", params=V).json())["properties"]["executionState"] == "running"
            and j
        ),
        90,
        "the job to run",
        interval=0.2,
    )
    victim = next(e for e in first["properties"]["events"] if e["event"] == "started")["nodes"][0]
    agent = next(p for p in Path("/proc").iterdir() if p.name.isdigit() and _is_agent(p, cluster.id, victim))
    root = Path(agent.joinpath("cwd").resolve())
    until(lambda: (root / "agent.pids").read_text().strip(), 90, "the job's processes on the victim", interval=0.2)
    os.kill(int(agent.name), signal.SIGKILL)  # the machine dies: its agent and what it ran
    for pid in (root / "agent.pids").read_text().split():
        os.killpg(int(pid), signal.SIGKILL)
    done = ended(client, ws, "resilient", timeout=120)
    assert done.execution_state == "succeeded"
    events = http.get(f"{base(ws)}/experiments/{EXP}/jobs/resilient", params=V).json()["properties"]["events"]
    assert [e["attempt"] for e in events if e["event"] == "started"] == [1, 2]
    assert any(e["event"] == "node lost" and victim in e["nodes"] for e in events)
    second = [e for e in events if e["event"] == "started"][1]["nodes"]
    assert victim not in second  # the retry ran on healthy nodes
    idle(client, ws, "c", 3)  # and the dead node was replaced


def _is_agent(proc: Path, cluster_id: str, name: str) -> bool:
    """Is `proc` the agent of node `name` of that cluster?"""
    try:
        args = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"batchai.agent" in args and cluster_id.encode() in args and name.encode() in args


# the first attempt stops at step 3 (until its node is evicted, however slow the machine); the next one resumes
CHECKPOINTING = (
    'C=$AZ_BATCHAI_OUTPUT_CKPT/step; s=$(cat $C 2>/dev/null || echo 0); echo "resumed at $s"; first=$((s == 0)); '
    "while [ $s -lt 12 ]; do s=$((s+1)); echo $s > $C; if [ $first = 1 ] && [ $s = 3 ]; then exec sleep 600; fi; sleep 0.25; done; "
    'echo "finished at $s"'
)


def test_an_evicted_low_priority_node_requeues_and_the_job_resumes_from_its_checkpoint(client, srv, unique_name):
    ws = unique_name("spot")
    cluster = make_cluster(client, ws, "c", manual(1), priority="lowpriority")
    idle(client, ws, "c", 1)
    segment = job(
        client,
        ws,
        cluster,
        "ckpt",
        CHECKPOINTING,
        output_directories=[models.OutputDirectory(id="CKPT", path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/ckpt")],
    ).job_output_directory_path_segment
    http = srv.http()
    until(lambda: _checkpoint(srv, segment) > 0, 90, "the job's first checkpoint")
    assert http.post(f"{base(ws)}/clusters/c/nodes/node-0/evict", params=V).status_code == 202
    done = ended(client, ws, "ckpt", timeout=120)
    assert done.execution_state == "succeeded"
    body = http.get(f"{base(ws)}/experiments/{EXP}/jobs/ckpt", params=V).json()["properties"]
    assert [e["event"] for e in body["events"]].count("node evicted") == 1
    out = next(Path(srv.data_dir, "jobs").glob(f"*/mounts/logs/{done.job_output_directory_path_segment}/stdouterr/stdout.txt")).read_text()
    resumed = [int(line.split()[-1]) for line in out.splitlines() if line.startswith("resumed at")]
    assert resumed[0] == 0 and resumed[-1] > 0 and out.rstrip().endswith("finished at 12"), out


def _checkpoint(srv, segment: str) -> int:
    """The step the CHECKPOINTING job last saved (0: none yet)."""
    step = next(Path(srv.data_dir, "jobs").glob(f"*/mounts/ckpt/{segment}/outputs/step"), None)
    saved = step.read_text().strip() if step else ""
    return int(saved) if saved.isdigit() else 0


def test_dedicated_nodes_cannot_be_evicted(client, srv, unique_name):
    ws = unique_name("dedicated")
    make_cluster(client, ws, "c", manual(1))
    assert srv.http().post(f"{base(ws)}/clusters/c/nodes/node-0/evict", params=V).status_code == 409


def test_kill_9_during_200_jobs_loses_none_and_runs_none_twice(tmp_path, unique_name):
    data = tmp_path / "cp"
    data.mkdir()
    env = {**FAST, "BATCHAI_NODE_TIMEOUT_SECONDS": "15"}  # the nodes find the restarted control plane in time, on any CI
    server = Server(data, env=env).start()
    try:
        sdk = make_sdk(server)
        ws = unique_name("crash")
        cluster = make_cluster(sdk, ws, "c", manual(2))
        idle(sdk, ws, "c", 2)
        runs = "$AZ_BATCHAI_MOUNT_ROOT/runs"
        names = [f"s{i:03d}" for i in range(200)]
        for i, name in enumerate(names):
            job(sdk, ws, cluster, name, f"mkdir -p {runs}; echo x >> {runs}/$AZ_BATCHAI_JOB_NAME")
            if i == 120:
                server.kill9()  # mid-submission and mid-run: some queued, some running, some done
                server = Server(data, env=env).start()
                sdk = make_sdk(server)
        states = {}
        for name in names:
            states[name] = ended(sdk, ws, name, timeout=180).execution_state
        assert set(states.values()) == {"succeeded"}, {n: s for n, s in states.items() if s != "succeeded"}
        runs_dir = next(Path(data, "clusters").glob("*/mounts/runs"))
        counts = {p.name: p.read_text().count("x") for p in runs_dir.iterdir()}
        assert counts == {name: 1 for name in names}  # every job ran exactly once
    finally:
        server.stop()
        kill_agents(data)


def test_max_wall_clock_time_ends_the_job_failed_with_a_timeout(client, srv, unique_name):
    ws = unique_name("timeout")
    cluster = make_cluster(client, ws, "c", manual(1))
    idle(client, ws, "c", 1)
    job(
        client,
        ws,
        cluster,
        "too-long",
        "sleep 60",
        constraints=models.JobBasePropertiesConstraints(max_wall_clock_time=timedelta(seconds=2)),
    )
    done = ended(client, ws, "too-long", timeout=60)
    assert done.execution_state == "failed" and done.execution_info.errors[0].code == "JobTimedOut"
    elapsed = (done.execution_info.end_time - done.execution_info.start_time).total_seconds()
    assert 2 <= elapsed < 30


def test_sdk_cluster_update_resizes_and_reports_allocation_state(client, srv, unique_name):
    ws = unique_name("resize")
    make_cluster(client, ws, "c", manual(1))
    idle(client, ws, "c", 1)
    client.clusters.update(RG, ws, "c", models.ClusterUpdateParameters(scale_settings=manual(3)))
    until(
        lambda: (c := client.clusters.get(RG, ws, "c")).node_state_counts.idle_node_count == 3 and c.allocation_state == "steady",
        90,
        "3 idle nodes, steady",
        interval=0.2,
    )
    client.clusters.update(RG, ws, "c", models.ClusterUpdateParameters(scale_settings=manual(1)))
    shrunk = until(
        lambda: (c := client.clusters.get(RG, ws, "c")).current_node_count == 1 and c.allocation_state == "steady" and c,
        90,
        "1 node, steady",
        interval=0.2,
    )
    assert shrunk.node_state_counts.idle_node_count == 1


def test_scaling_down_a_busy_node_requeues_its_job(client, srv, unique_name):
    ws = unique_name("requeue")
    cluster = make_cluster(
        client, ws, "c", models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=2, node_deallocation_option="requeue"))
    )
    idle(client, ws, "c", 2)
    # the first attempt runs until the scale-down stops it, however slow the machine; the second ends at once
    marker = f"{ws}-started"
    job(
        client,
        ws,
        cluster,
        "long",
        f"M=$AZ_BATCHAI_MOUNT_ROOT/{marker}; if [ -e $M ]; then exit 0; fi; mkdir -p $M; exec sleep 600",
        nodes=2,
    )
    until(lambda: next(Path(srv.data_dir, "clusters").glob(f"*/mounts/{marker}"), None), 90, "the job's first attempt to run", interval=0.2)
    client.clusters.update(
        RG,
        ws,
        "c",
        models.ClusterUpdateParameters(
            scale_settings=models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=0, node_deallocation_option="requeue"))
        ),
    )
    until(lambda: client.jobs.get(RG, ws, EXP, "long").execution_state == "queued", 90, "the job to be requeued", interval=0.2)
    client.clusters.update(RG, ws, "c", models.ClusterUpdateParameters(scale_settings=manual(2)))
    assert ended(client, ws, "long").execution_state == "succeeded"
    events = srv.http().get(f"{base(ws)}/experiments/{EXP}/jobs/long", params=V).json()["properties"]["events"]
    assert [e["attempt"] for e in events if e["event"] == "started"] == [1, 2]
