"""Mount volumes, shared by a cluster's `nodeSetup.mountVolumes` and a job's `mountVolumes`.

Raw recipe files omit `accountName` and `credentials` on Azure file shares (the az CLI filled
them in), so both are optional here: the account name is derived from the host of
`azureFileUrl` when missing, and missing credentials are tolerated (local or emulated storage).
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, field_validator, model_validator

from batchai.model.common import FieldError, KeyVaultSecretReference, NonEmptyStr, ResourceId, WireModel

_URL_HOST = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/.:?#]+)")
_MODE = re.compile(r"^[0-7]{3,4}$")


def account_from_url(url: str) -> str | None:
    """`https://acct.file.core.windows.net/share` -> `acct` (letter case and placeholders kept)."""
    m = _URL_HOST.match(url or "")
    return m.group(1) if m else None


def check_relative_path(value: str) -> str:
    if not value or not value.strip():
        raise ValueError("a relative mount path must not be empty")
    if value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", value):
        raise ValueError(f"'{value}' must be a relative path, not an absolute one")
    if ".." in re.split(r"[/\\]", value):
        raise ValueError(f"'{value}' must not contain '..'")
    return value


class AzureStorageCredentialsInfo(WireModel):
    account_key: str | None = None
    account_key_secret_reference: KeyVaultSecretReference | None = None

    @model_validator(mode="after")
    def _at_most_one(self):
        if self.account_key is not None and self.account_key_secret_reference is not None:
            raise FieldError(
                "only one of 'accountKey' or 'accountKeySecretReference' may be given",
                targets=[("accountKey",), ("accountKeySecretReference",)],
            )
        return self


RelativePath = Annotated[str, AfterValidator(check_relative_path)]


def check_segment(value: str) -> str:
    """A name that becomes one directory of a path (local storage): never a way out of it."""
    if not value or value in (".", "..") or any(c in value for c in "/\\\0") or len(value) > 255:
        raise ValueError(f"'{value}' must be a single name: no '/', '\\', '..' or '.'")
    return value


def check_share_url(value: str) -> str:
    if not value or any(part in (".", "..") for part in re.split(r"[/\\]", urlsplit(value).path)) or "\0" in value:
        raise ValueError(f"the share URL '{value}' must not contain '.' or '..' steps")
    return value


StorageName = Annotated[str, AfterValidator(check_segment)]
ShareUrl = Annotated[str, AfterValidator(check_share_url)]


def check_source_directory(value: str) -> str:
    if ".." in re.split(r"[/\\]", value) or "\0" in value:
        raise ValueError(f"'{value}' must not contain '..'")
    return value


SourceDirectory = Annotated[str, AfterValidator(check_source_directory)]


class AzureFileShareReference(WireModel):
    account_name: StorageName | None = None
    azure_file_url: ShareUrl
    credentials: AzureStorageCredentialsInfo | None = None
    relative_mount_path: RelativePath
    file_mode: str = "0777"
    directory_mode: str = "0777"

    @field_validator("file_mode", "directory_mode")
    @classmethod
    def _octal(cls, value: str) -> str:
        if not _MODE.match(value):
            raise ValueError(f"'{value}' is not an octal file mode such as '0777'")
        return value

    @model_validator(mode="after")
    def _derive_account(self):
        if not self.account_name:
            self.account_name = account_from_url(self.azure_file_url)
        return self


class AzureBlobFileSystemReference(WireModel):
    account_name: StorageName
    container_name: StorageName
    credentials: AzureStorageCredentialsInfo | None = None
    relative_mount_path: RelativePath
    mount_options: str | None = None


class FileServerReference(WireModel):
    file_server: ResourceId
    source_directory: SourceDirectory | None = None
    relative_mount_path: RelativePath
    mount_options: str | None = None


class UnmanagedFileSystemReference(WireModel):
    mount_command: NonEmptyStr
    relative_mount_path: RelativePath


class MountVolumes(WireModel):
    azure_file_shares: list[AzureFileShareReference] | None = None
    azure_blob_file_systems: list[AzureBlobFileSystemReference] | None = None
    file_servers: list[FileServerReference] | None = None
    unmanaged_file_systems: list[UnmanagedFileSystemReference] | None = None

    def all(self) -> list[WireModel]:
        """Every volume, in wire order (file shares, blob containers, file servers, unmanaged)."""
        return [
            *(self.azure_file_shares or []),
            *(self.azure_blob_file_systems or []),
            *(self.file_servers or []),
            *(self.unmanaged_file_systems or []),
        ]

    @model_validator(mode="after")
    def _distinct_paths(self):
        seen: set[str] = set()
        for key in ("azureFileShares", "azureBlobFileSystems", "fileServers", "unmanagedFileSystems"):
            for i, mount in enumerate(getattr(self, _SNAKE[key]) or []):
                path = mount.relative_mount_path.strip("/\\")
                if path in seen:
                    raise FieldError(
                        f"the relative mount path '{mount.relative_mount_path}' is used by more than one volume",
                        loc=(key, i, "relativeMountPath"),
                    )
                seen.add(path)
        return self


_SNAKE = {
    "azureFileShares": "azure_file_shares",
    "azureBlobFileSystems": "azure_blob_file_systems",
    "fileServers": "file_servers",
    "unmanagedFileSystems": "unmanaged_file_systems",
}
