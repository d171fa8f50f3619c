"""Opt-in (`make test-frameworks`, marker `frameworks`): real PyTorch and TensorFlow training across
2 local nodes, each skipped with its reason when the framework is not installed."""

from __future__ import annotations

import importlib.util
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from azure.mgmt.batchai import models

from tests.integration.conftest import sdk, server  # noqa: F401 - the live control plane fixtures
from tests.support.naming import unique_name
from tests.support.waiting import until

pytestmark = [pytest.mark.frameworks, pytest.mark.timeout(900)]
HERE = Path(__file__).resolve().parent
RG, WS, EXP = "rg", unique_name("frameworks"), "exp"


def need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed in this environment (pip install {module})")


@pytest.fixture(scope="module")
def cluster(sdk):  # noqa: F811
    sdk.workspaces.begin_create(RG, WS, models.WorkspaceCreateParameters(location="eastus")).result()
    cluster = sdk.clusters.begin_create(
        RG,
        WS,
        "c",
        models.ClusterCreateParameters(
            vm_size="STANDARD_D2",
            user_account_settings=models.UserAccountSettings(admin_user_name="u", admin_user_password="pw"),
            scale_settings=models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=2)),
        ),
    ).result()
    until(lambda: sdk.clusters.get(RG, WS, "c").node_state_counts.idle_node_count == 2, 60, "2 idle nodes", interval=0.2)
    sdk.experiments.begin_create(RG, WS, EXP).result()
    yield cluster
    sdk.workspaces.begin_delete(RG, WS).result()


def run(sdk, cluster, name, **toolkit):  # noqa: F811
    sdk.jobs.begin_create(
        RG,
        WS,
        EXP,
        name,
        models.JobCreateParameters(
            cluster=models.ResourceId(id=cluster.id),
            node_count=2,
            std_out_err_path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
            output_directories=[models.OutputDirectory(id="OUT", path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/out")],
            constraints=models.JobBasePropertiesConstraints(max_wall_clock_time=timedelta(minutes=10)),
            **toolkit,
        ),
    ).result()
    job = until(
        lambda: (j := sdk.jobs.get(RG, WS, EXP, name)).execution_state in ("succeeded", "failed") and j,
        600,
        f"job {name} to end",
        interval=1,
    )
    assert job.execution_state == "succeeded", job.execution_info.errors
    return {f.name for f in sdk.jobs.list_output_files(RG, WS, EXP, name, models.JobsListOutputFilesOptions(outputdirectoryid="OUT"))}


def test_pytorch_gloo_through_the_init_method(sdk, cluster):  # noqa: F811
    need("torch")
    assert run(
        sdk,
        cluster,
        "torch",
        py_torch_settings=models.PyTorchSettings(
            python_script_file_path=str(HERE / "train_pytorch.py"),
            python_interpreter_path=sys.executable,
            process_count=2,
            communication_backend="gloo",
        ),
    ) == {"rank-0.txt", "rank-1.txt"}


def test_tensorflow_multi_worker_mirrored_through_tf_config(sdk, cluster):  # noqa: F811
    need("tensorflow")
    assert run(
        sdk,
        cluster,
        "tf",
        tensor_flow_settings=models.TensorFlowSettings(
            python_script_file_path=str(HERE / "train_tensorflow.py"),
            python_interpreter_path=sys.executable,
            worker_count=2,
            parameter_server_count=0,
        ),
    ) == {"worker-0.txt", "worker-1.txt"}
