"""The storage and mount flags of `cluster create` and `job create`, as `az batchai` read them.

`--storage-account-name/--storage-account-key` fall back on `AZURE_BATCHAI_STORAGE_ACCOUNT` and
`AZURE_BATCHAI_STORAGE_KEY`, and fill the `<AZURE_BATCHAI_STORAGE_ACCOUNT>` /
`<AZURE_BATCHAI_STORAGE_KEY>` placeholders of config and job files (and the credentials a mount of
that account lacks). `--nfs`, `--afs-name`, `--bfs-name` add one file server, Azure Files share or
blob container to the mount volumes, at `--nfs-mount-path` (nfs), `--afs-mount-path` (afs),
`--bfs-mount-path` (bfs) under the mount root.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import typer

from batchai.cli.client import CliError
from batchai.cli.common import adds_options

ACCOUNT_ENV, KEY_ENV = "AZURE_BATCHAI_STORAGE_ACCOUNT", "AZURE_BATCHAI_STORAGE_KEY"
FILES_SUFFIX = "file.core.windows.net"


@dataclass
class Storage:
    account: str | None
    key: str | None
    nfs: str | None
    nfs_mount_path: str
    afs_name: str | None
    afs_mount_path: str
    bfs_name: str | None
    bfs_mount_path: str

    def placeholders(self) -> dict[str, str]:
        return {k: v for k, v in ((ACCOUNT_ENV, self.account), (KEY_ENV, self.key)) if v}

    def account_and_key(self, what: str) -> tuple[str, str]:
        if not self.account:
            raise CliError(f"{what} needs a storage account: --storage-account-name or ${ACCOUNT_ENV}")
        if not self.key:
            raise CliError(f"{what} needs the storage account's key: --storage-account-key or ${KEY_ENV}")
        return self.account, self.key

    def apply(self, volumes: dict | None, file_server_id) -> dict | None:
        """`volumes` (a MountVolumes body, or None) with the credentials it lacks and the flags' mounts.

        `file_server_id(name_or_id)` answers the ARM id of the --nfs file server."""
        result = copy.deepcopy(volumes) if volumes else {}
        for mount in result.get("azureFileShares") or []:
            mount.setdefault("accountName", _account_of(mount.get("azureFileUrl", "")))
            self._credentials(mount)
        for mount in result.get("azureBlobFileSystems") or []:
            self._credentials(mount)
        if self.nfs:
            result.setdefault("fileServers", []).append(
                {"fileServer": {"id": file_server_id(self.nfs)}, "relativeMountPath": self.nfs_mount_path, "mountOptions": "rw"}
            )
        if self.afs_name:
            account, key = self.account_and_key("--afs-name")
            result.setdefault("azureFileShares", []).append(
                {
                    "accountName": account,
                    "azureFileUrl": f"https://{account}.{FILES_SUFFIX}/{self.afs_name}",
                    "relativeMountPath": self.afs_mount_path,
                    "credentials": {"accountKey": key},
                }
            )
        if self.bfs_name:
            account, key = self.account_and_key("--bfs-name")
            result.setdefault("azureBlobFileSystems", []).append(
                {
                    "accountName": account,
                    "containerName": self.bfs_name,
                    "relativeMountPath": self.bfs_mount_path,
                    "credentials": {"accountKey": key},
                }
            )
        return result or None

    def _credentials(self, mount: dict) -> None:
        if not mount.get("credentials") and self.key and mount.get("accountName") == self.account:
            mount["credentials"] = {"accountKey": self.key}


def _account_of(url: str) -> str:
    host = url.split("://", 1)[-1].split("/", 1)[0]
    return host.split(".", 1)[0]


with_storage_flags = adds_options(
    "mounts",
    [
        (
            "account",
            str | None,
            typer.Option(None, "--storage-account-name", envvar=ACCOUNT_ENV, help="Storage account of the shares and containers."),
        ),
        ("key", str | None, typer.Option(None, "--storage-account-key", envvar=KEY_ENV, help="The storage account's key.")),
        ("nfs", str | None, typer.Option(None, "--nfs", help="Name or ARM id of a file server to mount.")),
        ("nfs_mount_path", str, typer.Option("nfs", "--nfs-mount-path", help="Where the file server goes, under the mount root.")),
        ("afs_name", str | None, typer.Option(None, "--afs-name", help="An Azure Files share of the storage account to mount.")),
        ("afs_mount_path", str, typer.Option("afs", "--afs-mount-path", help="Where the share goes, under the mount root.")),
        ("bfs_name", str | None, typer.Option(None, "--bfs-name", help="A blob container of the storage account to mount.")),
        ("bfs_mount_path", str, typer.Option("bfs", "--bfs-mount-path", help="Where the container goes, under the mount root.")),
    ],
    lambda **flags: Storage(**flags),
)
"""A decorator: the command gets the storage flags, and its parameter `mounts` (a Storage) from them."""
