"""The resource model: recipes, defaults, ARM 400s naming the field, redaction, SDK-serialized bodies."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from azure.mgmt.batchai import models as sdk
from msrest import Serializer

from batchai.errors import ApiError
from batchai.model import (
    ClusterCreateParameters,
    FileServerCreateParameters,
    JobCreateParameters,
    WorkspaceCreateParameters,
    load_job_file,
    parse,
    redact_cluster,
    redact_job,
    validate_name,
)

RECIPES = sorted((Path(__file__).parents[1] / "fixtures" / "recipes").glob("*/job*.json"))
CLUSTER = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.BatchAI/workspaces/ws/clusters/c"
JOB = {"cluster": {"id": CLUSTER}, "nodeCount": 1, "stdOutErrPathPrefix": "/logs", "customToolkitSettings": {"commandLine": "true"}}
CLUSTER_BODY = {"vmSize": "STANDARD_D1", "userAccountSettings": {"adminUserName": "u", "adminUserPassword": "pw"}}


def error_of(model, body) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(model, body)
    assert info.value.status == 400 and info.value.code
    return info.value


def without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


# ----- recipes ------------------------------------------------------------------------------------


def test_all_seventeen_recipes_are_fixtures():
    assert len(RECIPES) == 17


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_recipe_parses_unchanged_placeholders_and_all(path):
    raw = json.loads(path.read_text())
    params = load_job_file(raw, cluster_id=CLUSTER)
    props = params.properties
    assert props.cluster.id == CLUSTER and props.node_count >= 1 and props.tool_type
    wire = params.properties.to_wire()
    assert wire["stdOutErrPathPrefix"] == raw["properties"]["stdOutErrPathPrefix"]
    if "<" in path.read_text():  # placeholders are accepted as values
        assert "<" in json.dumps(wire)


def test_placeholders_are_filled_from_values():
    raw = json.loads((RECIPES[0].parent.parent / "TensorFlow-GPU-Distributed" / "job.json").read_text())
    text = json.dumps(load_job_file(raw, cluster_id=CLUSTER, placeholders={"AZURE_BATCHAI_STORAGE_ACCOUNT": "acct"}).properties.to_wire())
    assert "<AZURE_BATCHAI_STORAGE_ACCOUNT>" not in text and "acct" in text


# ----- defaults -----------------------------------------------------------------------------------


def test_job_defaults_follow_the_service():
    props = parse(JobCreateParameters, {"properties": JOB}).properties
    assert props.scheduling_priority == "normal"
    assert props.constraints.max_wall_clock_time == timedelta(days=7)
    assert props.tool_type == "custom"


def test_toolkit_defaults_derive_from_node_count():
    body = {**without(JOB, "customToolkitSettings"), "nodeCount": 3}
    tf = parse(JobCreateParameters, {"properties": {**body, "tensorFlowSettings": {"pythonScriptFilePath": "t.py"}}}).properties
    assert (tf.tensor_flow_settings.worker_count, tf.tensor_flow_settings.parameter_server_count) == (3, 1)
    pt = parse(JobCreateParameters, {"properties": {**body, "pyTorchSettings": {"pythonScriptFilePath": "t.py"}}}).properties
    assert pt.py_torch_settings.process_count in (None, 3)


# ----- validation: a 400 naming the field ---------------------------------------------------------


@pytest.mark.parametrize(
    "body,target",
    [
        ({**JOB, "nodeCount": 0}, "properties.nodeCount"),
        (without(JOB, "stdOutErrPathPrefix"), "properties.stdOutErrPathPrefix"),
        ({**JOB, "schedulingPriority": "urgent"}, "properties.schedulingPriority"),
        ({**JOB, "environmentVariables": [{"value": "x"}]}, "properties.environmentVariables[0].name"),
        (
            {**JOB, "outputDirectories": [{"id": "A", "pathPrefix": "/a"}, {"id": "A", "pathPrefix": "/b"}]},
            "properties.outputDirectories[1].id",
        ),
        ({**JOB, "constraints": {"maxWallClockTime": "bogus"}}, "properties.constraints.maxWallClockTime"),
    ],
)
def test_job_errors_name_the_field(body, target):
    assert error_of(JobCreateParameters, {"properties": body}).target == target


def test_exactly_one_toolkit():
    two = error_of(JobCreateParameters, {"properties": {**JOB, "pyTorchSettings": {"pythonScriptFilePath": "a"}}})
    assert set(two.target.split(",")) == {"properties.pyTorchSettings", "properties.customToolkitSettings"}
    none = error_of(JobCreateParameters, {"properties": without(JOB, "customToolkitSettings")})
    assert "properties.customToolkitSettings" in none.target.split(",") and "exactly one toolkit" in none.message


@pytest.mark.parametrize(
    "props,target",
    [
        (without(CLUSTER_BODY, "vmSize"), "properties.vmSize"),
        ({**CLUSTER_BODY, "vmPriority": "cheap"}, "properties.vmPriority"),
        ({**CLUSTER_BODY, "scaleSettings": {"manual": {"targetNodeCount": -1}}}, "properties.scaleSettings.manual.targetNodeCount"),
    ],
)
def test_cluster_errors_name_the_field(props, target):
    assert error_of(ClusterCreateParameters, {"properties": props}).target == target


def test_scale_settings_take_exactly_one_form():
    both = {"manual": {"targetNodeCount": 1}, "autoScale": {"minimumNodeCount": 0, "maximumNodeCount": 1}}
    err = error_of(ClusterCreateParameters, {"properties": {**CLUSTER_BODY, "scaleSettings": both}})
    assert "properties.scaleSettings.manual" in err.target


def test_workspace_needs_a_location():
    assert error_of(WorkspaceCreateParameters, {}).target == "location"


@pytest.mark.parametrize("name,ok", [("ok", True), ("x_y-1", True), ("a" * 64, True), ("a" * 65, False), ("bad name", False), ("", False)])
def test_job_names(name, ok):
    if ok:
        validate_name("job", name, "jobName")
    else:
        with pytest.raises(ApiError) as info:
            validate_name("job", name, "jobName")
        assert info.value.target == "jobName" and info.value.status == 400


# ----- redaction ----------------------------------------------------------------------------------


def test_secrets_never_come_back():
    job = parse(
        JobCreateParameters,
        {
            "properties": {
                **JOB,
                "secrets": [{"name": "S", "value": "hush-job"}],
                "containerSettings": {"imageSourceRegistry": {"image": "i", "credentials": {"username": "u", "password": "hush-registry"}}},
                "mountVolumes": {
                    "azureFileShares": [
                        {
                            "accountName": "a",
                            "azureFileUrl": "https://a.file.core.windows.net/s",
                            "credentials": {"accountKey": "hush-key"},
                            "relativeMountPath": "afs",
                        }
                    ]
                },
            }
        },
    ).properties.to_wire()
    shown = json.dumps(redact_job(job))
    assert "hush" not in shown and '"S"' in shown
    assert "hush-job" in json.dumps(job)  # the stored copy is untouched
    cluster = parse(
        ClusterCreateParameters,
        {
            "properties": {
                **CLUSTER_BODY,
                "userAccountSettings": {"adminUserName": "u", "adminUserPassword": "hush-pw", "adminUserSshPublicKey": "ssh-rsa hush"},
            }
        },
    ).properties.to_wire()
    assert "hush" not in json.dumps(redact_cluster(cluster))


# ----- bodies as the official SDK serializes them -------------------------------------------------

SERIALIZER = Serializer({k: v for k, v in vars(sdk).items() if isinstance(v, type)})


def sdk_body(obj, kind: str) -> dict:
    return json.loads(json.dumps(SERIALIZER.body(obj, kind)))


def test_sdk_job_bodies_parse_and_keep_their_fields():
    params = sdk.JobCreateParameters(
        cluster=sdk.ResourceId(id=CLUSTER),
        node_count=2,
        std_out_err_path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        scheduling_priority="high",
        tensor_flow_settings=sdk.TensorFlowSettings(
            python_script_file_path="t.py",
            worker_count=2,
            parameter_server_count=1,
            master_command_line_args="--m",
            worker_command_line_args="--w",
        ),
        mount_volumes=sdk.MountVolumes(
            azure_file_shares=[
                sdk.AzureFileShareReference(
                    account_name="acct",
                    azure_file_url="https://acct.file.core.windows.net/share",
                    credentials=sdk.AzureStorageCredentialsInfo(account_key="k"),
                    relative_mount_path="afs",
                )
            ]
        ),
        input_directories=[sdk.InputDirectory(id="DATA", path="$AZ_BATCHAI_JOB_MOUNT_ROOT/afs/data")],
        output_directories=[sdk.OutputDirectory(id="MODEL", path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/afs")],
        constraints=sdk.JobBasePropertiesConstraints(max_wall_clock_time=timedelta(hours=2)),
    )
    props = parse(JobCreateParameters, sdk_body(params, "JobCreateParameters")).properties
    assert props.tool_type == "tensorflow" and props.scheduling_priority == "high"
    assert props.tensor_flow_settings.worker_command_line_args == "--w"
    assert props.constraints.max_wall_clock_time == timedelta(hours=2)
    assert props.mount_volumes.azure_file_shares[0].relative_mount_path == "afs"


def test_sdk_cluster_and_file_server_bodies_parse():
    cluster = sdk.ClusterCreateParameters(
        vm_size="STANDARD_NC6",
        vm_priority="lowpriority",
        scale_settings=sdk.ScaleSettings(auto_scale=sdk.AutoScaleSettings(minimum_node_count=0, maximum_node_count=4)),
        user_account_settings=sdk.UserAccountSettings(admin_user_name="u", admin_user_password="p"),
        node_setup=sdk.NodeSetup(setup_task=sdk.SetupTask(command_line="echo hi", std_out_err_path_prefix="$AZ_BATCHAI_MOUNT_ROOT/logs")),
    )
    props = parse(ClusterCreateParameters, sdk_body(cluster, "ClusterCreateParameters")).properties
    assert props.vm_priority == "lowpriority" and props.scale_settings.auto_scale.maximum_node_count == 4
    fs = sdk.FileServerCreateParameters(
        vm_size="STANDARD_D1",
        ssh_configuration=sdk.SshConfiguration(user_account_settings=sdk.UserAccountSettings(admin_user_name="u", admin_user_password="p")),
        data_disks=sdk.DataDisks(disk_size_in_gb=10, disk_count=1, storage_account_type="Standard_LRS"),
    )
    assert parse(FileServerCreateParameters, sdk_body(fs, "FileServerCreateParameters")).properties.data_disks.disk_count == 1
