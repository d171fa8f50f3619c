"""Mount volumes on local nodes: every volume is a real directory under the data dir, shared.

On Azure a volume is an Azure Files share, a blob container, a file server's NFS export or
whatever an unmanaged mount command mounts, seen by every node at the same path. Locally each
of them is one directory under `{data_dir}/storage` (or the file server's export directory),
and mounting it is a symbolic link at `{mount root}/{relativeMountPath}`: every node of a
cluster sees the same root, so nodes really share the data, and a job's mounts go away with
its links while the data stays for the next job, as it does in a share.

To put data in a share before a job, write to `{data_dir}/storage/files/{account}/{share}`
(or `blobs/{account}/{container}`); `volume_dir` computes the path.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from batchai.model.mounts import account_from_url

FileServerExport = Callable[[str], "str | None"]  # file server id -> its export directory


def volume_dir(data_dir: Path, kind: str, volume: dict, file_server_export: FileServerExport) -> Path:
    """The shared directory standing for one volume (camelCase wire dict of its kind)."""
    storage = Path(data_dir) / "storage"
    if kind == "azureFileShares":
        url = volume["azureFileUrl"]
        account = volume.get("accountName") or account_from_url(url) or "account"
        share = urlsplit(url).path.strip("/") or "share"
        return storage / "files" / account / share
    if kind == "azureBlobFileSystems":
        return storage / "blobs" / volume["accountName"] / volume["containerName"]
    if kind == "fileServers":
        export = file_server_export(volume["fileServer"]["id"])
        if export is None:
            raise LookupError(f"the file server {volume['fileServer']['id']} does not exist")
        return Path(export) / (volume.get("sourceDirectory") or "").strip("/")
    if kind == "unmanagedFileSystems":
        return storage / "unmanaged" / hashlib.sha1(volume["mountCommand"].encode()).hexdigest()[:12]
    raise ValueError(f"unknown mount volume kind {kind}")


def volumes_of(mount_volumes: dict | None) -> list[tuple[str, dict]]:
    return [(kind, v) for kind, items in (mount_volumes or {}).items() if isinstance(items, list) for v in items]


def mount(data_dir: Path, root: str, mount_volumes: dict | None, file_server_export: FileServerExport) -> list[str]:
    """Link every volume under `root`; returns the mount paths. Idempotent."""
    paths = []
    for kind, volume in volumes_of(mount_volumes):
        target = volume_dir(data_dir, kind, volume, file_server_export)
        target.mkdir(parents=True, exist_ok=True)
        link = Path(root) / volume["relativeMountPath"].strip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() and Path(os.readlink(link)) == target:
            paths.append(str(link))
            continue
        if link.is_symlink():
            link.unlink()
        elif link.exists():
            raise FileExistsError(f"cannot mount at {link}: something that is not a mount is there")
        link.symlink_to(target, target_is_directory=True)
        paths.append(str(link))
    return paths


def unmount(root: str, mount_volumes: dict | None) -> None:
    """Remove the links `mount` made; the volumes' data stays."""
    for _, volume in volumes_of(mount_volumes):
        link = Path(root) / volume["relativeMountPath"].strip("/")
        if link.is_symlink():
            link.unlink()
