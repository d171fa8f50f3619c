"""Clusters: create (`ClusterCreateParameters`) and update (`ClusterUpdateParameters`) bodies."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from batchai.model.common import (
    EnvironmentVariable,
    EnvironmentVariableWithSecretValue,
    FieldError,
    KeyVaultSecretReference,
    NodeCount,
    NonEmptyStr,
    ResourceId,
    WireModel,
    _ci_enum,
    check_unique_names,
)
from batchai.model.mounts import MountVolumes

DeallocationOption = Annotated[
    Literal["requeue", "terminate", "waitforjobcompletion"], _ci_enum("requeue", "terminate", "waitforjobcompletion")
]
VmPriority = Annotated[Literal["dedicated", "lowpriority"], _ci_enum("dedicated", "lowpriority")]


class ManualScaleSettings(WireModel):
    target_node_count: NodeCount
    node_deallocation_option: DeallocationOption = "requeue"


class AutoScaleSettings(WireModel):
    minimum_node_count: NodeCount
    maximum_node_count: NodeCount
    initial_node_count: NodeCount = 0

    @model_validator(mode="after")
    def _bounds(self):
        if self.maximum_node_count < self.minimum_node_count:
            raise FieldError(f"must be at least minimumNodeCount ({self.minimum_node_count})", loc=("maximumNodeCount",))
        if self.initial_node_count > self.maximum_node_count:
            raise FieldError(f"must lie between 0 and maximumNodeCount ({self.maximum_node_count})", loc=("initialNodeCount",))
        return self


class ScaleSettings(WireModel):
    manual: ManualScaleSettings | None = None
    auto_scale: AutoScaleSettings | None = None

    @model_validator(mode="after")
    def _exactly_one(self):
        if (self.manual is None) == (self.auto_scale is None):
            raise FieldError("exactly one of 'manual' or 'autoScale' must be given", targets=[("manual",), ("autoScale",)])
        return self

    def initial_target_nodes(self) -> int:
        if self.manual is not None:
            return self.manual.target_node_count
        assert self.auto_scale is not None  # _exactly_one: one of the two is given
        return self.auto_scale.initial_node_count


class ImageReference(WireModel):
    publisher: NonEmptyStr
    offer: NonEmptyStr
    sku: NonEmptyStr
    version: str | None = None
    virtual_machine_image_id: str | None = None


class VirtualMachineConfiguration(WireModel):
    image_reference: ImageReference | None = None


class SetupTask(WireModel):
    command_line: NonEmptyStr
    environment_variables: list[EnvironmentVariable] | None = None
    secrets: list[EnvironmentVariableWithSecretValue] | None = None
    std_out_err_path_prefix: NonEmptyStr
    # Read-only: computed by the service. Readable when a stored body is re-parsed, never echoed.
    std_out_err_path_suffix: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _unique(self):
        check_unique_names(self.environment_variables, "environment variable", "environmentVariables")
        check_unique_names(self.secrets, "secret", "secrets")
        return self


class AppInsightsReference(WireModel):
    component: ResourceId
    instrumentation_key: str | None = None
    instrumentation_key_secret_reference: KeyVaultSecretReference | None = None

    @model_validator(mode="after")
    def _one_key(self):
        if (self.instrumentation_key is None) == (self.instrumentation_key_secret_reference is None):
            raise FieldError(
                "exactly one of 'instrumentationKey' or 'instrumentationKeySecretReference' must be given",
                targets=[("instrumentationKey",), ("instrumentationKeySecretReference",)],
            )
        return self


class PerformanceCountersSettings(WireModel):
    app_insights_reference: AppInsightsReference


class NodeSetup(WireModel):
    setup_task: SetupTask | None = None
    mount_volumes: MountVolumes | None = None
    performance_counters_settings: PerformanceCountersSettings | None = None


class UserAccountSettings(WireModel):
    admin_user_name: NonEmptyStr
    admin_user_ssh_public_key: str | None = None
    admin_user_password: str | None = None


def _manual_zero() -> ScaleSettings:
    return ScaleSettings(manual=ManualScaleSettings(target_node_count=0))


class ClusterProperties(WireModel):
    vm_size: NonEmptyStr
    vm_priority: VmPriority = "dedicated"
    scale_settings: ScaleSettings = Field(default_factory=_manual_zero)
    virtual_machine_configuration: VirtualMachineConfiguration | None = None
    node_setup: NodeSetup | None = None
    user_account_settings: UserAccountSettings
    subnet: ResourceId | None = None
    # Ours, beyond the 2018-05-01 contract: the nodes are machines that join with the cluster's
    # enrollment token (`batchai node join`), not ones the service allocates; scaleSettings is unused.
    attached: bool | None = None

    def initial_target_nodes(self) -> int:
        """Nodes to allocate at creation: the manual target, or the auto-scale initial count."""
        return self.scale_settings.initial_target_nodes()


class ClusterCreateParameters(WireModel):
    properties: ClusterProperties


class ClusterUpdateProperties(WireModel):
    scale_settings: ScaleSettings


class ClusterUpdateParameters(WireModel):
    properties: ClusterUpdateProperties
