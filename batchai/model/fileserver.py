"""File servers (NFS): the create body, as `schemas/nfs.json` describes it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from batchai.model.cluster import UserAccountSettings
from batchai.model.common import NonEmptyStr, PositiveInt, ResourceId, WireModel, _ci_enum

CachingType = Annotated[Literal["none", "readonly", "readwrite"], _ci_enum("none", "readonly", "readwrite")]
StorageAccountType = Annotated[Literal["Standard_LRS", "Premium_LRS"], _ci_enum("Standard_LRS", "Premium_LRS")]


class SshConfiguration(WireModel):
    public_ips_to_allow: list[str] | None = Field(default=None, alias="publicIPsToAllow")
    user_account_settings: UserAccountSettings


class DataDisks(WireModel):
    disk_size_in_gb: PositiveInt = Field(alias="diskSizeInGB")
    caching_type: CachingType = "none"
    disk_count: PositiveInt
    storage_account_type: StorageAccountType


class FileServerProperties(WireModel):
    vm_size: NonEmptyStr
    ssh_configuration: SshConfiguration
    data_disks: DataDisks
    subnet: ResourceId | None = None


class FileServerCreateParameters(WireModel):
    properties: FileServerProperties
