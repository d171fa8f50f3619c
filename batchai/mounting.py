"""The mount commands a real VM node runs for `mountVolumes`: a pure, inspectable plan.

Local nodes mount by linking shared directories (adapters/local_storage.py); VMs (the scale
set adapter's custom data) run this plan instead, as the service did:
- Azure Files: `mount -t cifs` with a credentials file (mode 600), SMB 3.0, the volume's modes;
- Azure Blob: `blobfuse` with a connection file (mode 600) and a temp path on the local disk;
- file servers: `mount -t nfs` of the server's export (its address is looked up by the caller);
- unmanaged: the given mount command, with the mount path appended, as the service did.

Steps are typed so credentials stay data until rendered: `render(steps)` masks them, and a key
held in Key Vault is a `SecretFetch` step (the node must fetch it) rather than an invented value;
the steps that use it hold a `Var`, the one thing `render` lets the shell expand. Every other value
(account, container and share names, paths, options) is rendered single-quoted, and files are
written with printf, never a heredoc: nothing a user writes in a volume runs at boot, save an
unmanaged volume's own mount command.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from batchai.model import MountVolumes

MASK = "***"
BLOBFUSE_TMP = "/mnt/resource/blobfusetmp"


@dataclass(frozen=True)
class Var:
    """A shell variable a `SecretFetch` set: expanded where it stands, the only value that is."""

    name: str


@dataclass(frozen=True)
class MakeDir:
    path: str
    mode: int | None = None


@dataclass(frozen=True)
class WriteFile:
    path: str
    content: str | tuple[str | Var, ...]
    mode: int = 0o600
    secret: str | None = None  # a literal part of `content` to mask when rendered


@dataclass(frozen=True)
class SecretFetch:
    """The node fetches a Key Vault secret into `variable` before the steps that use it."""

    variable: str
    secret_url: str


@dataclass(frozen=True)
class Run:
    argv: list[str]
    mounts: str | None = None  # the path this command mounts (what plan_unmounts undoes)


Step = MakeDir | WriteFile | SecretFetch | Run


def _key(credentials, variable: str) -> tuple[list[Step], str | Var]:
    """Steps to get an account key, and how later steps refer to it."""
    if credentials is not None and credentials.account_key_secret_reference is not None:
        return [SecretFetch(variable, credentials.account_key_secret_reference.secret_url)], Var(variable)
    if credentials is not None and credentials.account_key:
        return [], credentials.account_key
    raise ValueError("a storage volume needs credentials (an account key or a Key Vault reference) on a VM")


def mount_plan(mount_volumes: dict | None, mount_root: str, file_server_address=lambda file_server_id: None) -> list[Step]:
    """`plan_mounts` for a stored (wire) `mountVolumes`; no steps when there is nothing to mount."""
    if not mount_volumes:
        return []
    return plan_mounts(MountVolumes.model_validate(mount_volumes), mount_root, file_server_address=file_server_address)


def plan_mounts(volumes, root: str, *, file_server_address=lambda file_server_id: None) -> list[Step]:
    """`volumes` is a parsed MountVolumes; `root` the mount root (AZ_BATCHAI_MOUNT_ROOT or the job's)."""
    steps: list[Step] = []
    if volumes is None:
        return steps
    for i, share in enumerate(volumes.azure_file_shares or []):
        path = f"{root}/{share.relative_mount_path.strip('/')}"
        url = urlsplit(share.azure_file_url)
        fetch, key = _key(share.credentials, f"AFS_KEY_{i}")
        user = share.account_name or (url.hostname or "").split(".")[0]
        credentials = f"{root}/.cifs/{_file_name(share.relative_mount_path)}.cred"
        options = f"vers=3.0,credentials={credentials},dir_mode={share.directory_mode},file_mode={share.file_mode},serverino"
        steps += [
            *fetch,
            MakeDir(path),
            MakeDir(f"{root}/.cifs", 0o700),
            WriteFile(credentials, (f"username={user}\npassword=", key, "\n"), secret=_literal(key)),
            Run(["mount", "-t", "cifs", f"//{url.hostname}{url.path}", path, "-o", options], mounts=path),
        ]
    for i, blob in enumerate(volumes.azure_blob_file_systems or []):
        path = f"{root}/{blob.relative_mount_path.strip('/')}"
        config = f"{root}/.blobfuse/{_file_name(blob.relative_mount_path)}.cfg"
        fetch, key = _key(blob.credentials, f"BLOB_KEY_{i}")
        tmp = f"{BLOBFUSE_TMP}/{_file_name(blob.relative_mount_path)}"
        argv = [
            "blobfuse",
            path,
            f"--tmp-path={tmp}",
            f"--config-file={config}",
            "-o",
            "attr_timeout=240",
            "-o",
            "entry_timeout=240",
            "-o",
            "negative_timeout=120",
        ]
        if blob.mount_options:
            argv += shlex.split(blob.mount_options)
        steps += [
            *fetch,
            MakeDir(path),
            MakeDir(tmp),
            MakeDir(f"{root}/.blobfuse", 0o700),
            WriteFile(
                config,
                (f"accountName {blob.account_name}\naccountKey ", key, f"\ncontainerName {blob.container_name}\n"),
                secret=_literal(key),
            ),
            Run(argv, mounts=path),
        ]
    for server in volumes.file_servers or []:
        path = f"{root}/{server.relative_mount_path.strip('/')}"
        address = file_server_address(server.file_server.id)
        if not address:
            raise ValueError(f"the file server {server.file_server.id} has no address yet")
        export = "/mnt/data" + (f"/{server.source_directory.strip('/')}" if server.source_directory else "")
        argv = ["mount", "-t", "nfs", f"{address}:{export}", path]
        if server.mount_options:
            argv += ["-o", server.mount_options]
        steps += [MakeDir(path), Run(argv, mounts=path)]
    for fs in volumes.unmanaged_file_systems or []:
        path = f"{root}/{fs.relative_mount_path.strip('/')}"
        # the cluster owner's own command, run as written (as the service did)
        steps += [MakeDir(path), Run(["/bin/bash", "-c", f"{fs.mount_command} {shlex.quote(path)}"], mounts=path)]
    return steps


def _file_name(relative_mount_path: str) -> str:
    return relative_mount_path.strip("/").replace("/", "_")


def _literal(key: str | Var) -> str | None:
    return key if isinstance(key, str) else None


def file_server_address(store):
    """file server id -> the private address its NFS VM serves on, from its mountSettings (None until it does)."""

    def address(file_server_id: str) -> str | None:
        record = store.get(file_server_id)
        return ((record.properties.get("mountSettings") or {}).get("fileServerInternalIP")) if record is not None else None

    return address


def plan_unmounts(steps: list[Step]) -> list[Run]:
    """Unmount what `plan_mounts` mounted, in reverse order (job-level volumes end with the job)."""
    paths = [s.mounts for s in steps if isinstance(s, Run) and s.mounts]
    return [Run(["umount", "-l", path]) for path in reversed(paths)]


def _quoted(content: str | tuple[str | Var, ...]) -> list[str]:
    """printf arguments for content: literal parts single-quoted, variables double-quoted."""
    parts = (content,) if isinstance(content, str) else content
    return [f'"${{{p.name}}}"' if isinstance(p, Var) else shlex.quote(p) for p in parts if p != ""]


def render(steps: Sequence[Step], *, redact: bool = True) -> str:
    """A shell script for the steps; with `redact` (the default) credentials are masked."""

    def hide(text: str, secret: str | None) -> str:
        return text.replace(shlex.quote(secret), shlex.quote(MASK)).replace(secret, MASK) if redact and secret else text

    lines = ["set -euo pipefail"]
    for step in steps:
        if isinstance(step, MakeDir):
            mode = f" -m {step.mode:o}" if step.mode is not None else ""
            lines.append(f"mkdir -p{mode} {shlex.quote(step.path)}")
        elif isinstance(step, SecretFetch):
            lines.append(f"{step.variable}=$(batchai-fetch-secret {shlex.quote(step.secret_url)})")
        elif isinstance(step, WriteFile):
            path = shlex.quote(step.path)
            lines.append(f"install -m {step.mode:o} /dev/null {path}")
            lines.append(hide(f"printf '%s' {' '.join(_quoted(step.content))} > {path}", step.secret))
        else:
            lines.append(shlex.join(step.argv))
    return "\n".join(lines) + "\n"
