"""nodeSetup.setupTask: it runs on every node as it joins; a failing one makes the node unusable."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.mgmt.batchai import models

from tests.support.naming import unique_name
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(180)
RG, WS = "rg", unique_name("setup")


def wait_cluster(sdk, name, done, what, timeout=60):
    return until(lambda: done(cluster := sdk.clusters.get(RG, WS, name)) and cluster, timeout, f"cluster {name}: {what}", interval=0.2)


def create_cluster(sdk, name, command):
    return sdk.clusters.begin_create(
        RG,
        WS,
        name,
        models.ClusterCreateParameters(
            vm_size="STANDARD_D1",
            user_account_settings=models.UserAccountSettings(admin_user_name="u", admin_user_password="pw"),
            scale_settings=models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=2)),
            node_setup=models.NodeSetup(
                setup_task=models.SetupTask(
                    command_line=command,
                    environment_variables=[models.EnvironmentVariable(name="WHERE", value="$AZ_BATCHAI_MOUNT_ROOT/setup")],
                    secrets=[models.EnvironmentVariableWithSecretValue(name="SETUP_SECRET", value="open-sesame")],
                    std_out_err_path_prefix="$AZ_BATCHAI_MOUNT_ROOT/logs",
                )
            ),
        ),
    ).result()


@pytest.fixture(scope="module")
def workspace(sdk):
    sdk.workspaces.begin_create(RG, WS, models.WorkspaceCreateParameters(location="eastus")).result()
    yield
    sdk.workspaces.begin_delete(RG, WS).result()


def test_setup_runs_on_every_node_before_it_takes_jobs(sdk, server, workspace):
    cluster = create_cluster(sdk, "ok", 'mkdir -p "$WHERE" && echo "$SETUP_SECRET" > "$WHERE/$AZ_BATCHAI_NODE_NAME" && echo set up')
    suffix = cluster.node_setup.setup_task.std_out_err_path_suffix
    assert suffix.endswith(f"/workspaces/{WS}/clusters/ok/" + suffix.rsplit("/", 1)[1])
    cluster = wait_cluster(sdk, "ok", lambda c: c.node_state_counts.idle_node_count == 2, "2 idle nodes")
    assert cluster.errors is None
    mounts = next(Path(server.data_dir, "clusters").glob("*/mounts/setup")).parent
    assert sorted(p.name for p in (mounts / "setup").iterdir()) == ["node-0", "node-1"]
    assert (mounts / "setup" / "node-0").read_text() == "open-sesame\n"
    assert (mounts / "logs" / suffix / "node-1" / "stdout.txt").read_text() == "set up\n"


def test_a_failing_setup_makes_the_node_unusable_with_the_error_on_the_cluster(sdk, server, workspace):
    create_cluster(sdk, "bad", "echo broken >&2; exit 4")
    cluster = wait_cluster(sdk, "bad", lambda c: c.node_state_counts.unusable_node_count == 2, "2 unusable nodes")
    assert cluster.node_state_counts.idle_node_count == 0
    messages = [e.message for e in cluster.errors]
    assert len(messages) == 2 and all("setup task failed (exit code 4)" in m for m in messages), messages
    assert "open-sesame" not in str(cluster.as_dict())
