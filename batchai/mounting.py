"""The mount commands a real VM node runs for `mountVolumes`: a pure, inspectable plan.

Local nodes mount by linking shared directories (adapters/local_storage.py); VMs (the scale
set adapter's custom data) run this plan instead, as the service did:
- Azure Files: `mount -t cifs` with the account key, SMB 3.0, the volume's file/directory modes;
- Azure Blob: `blobfuse` with a connection file (mode 600) and a temp path on the local disk;
- file servers: `mount -t nfs` of the server's export (its address is looked up by the caller);
- unmanaged: the given mount command, with the mount path appended, as the service did.

Steps are typed so credentials stay data until rendered: `render(steps)` masks them, and a key
held in Key Vault is a `SecretFetch` step (the node must fetch it) rather than an invented value.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from urllib.parse import urlsplit

MASK = "***"
BLOBFUSE_TMP = "/mnt/resource/blobfusetmp"


@dataclass(frozen=True)
class MakeDir:
    path: str


@dataclass(frozen=True)
class WriteFile:
    path: str
    content: str
    mode: int = 0o600
    secret: str | None = None  # the part of `content` to mask when rendered


@dataclass(frozen=True)
class SecretFetch:
    """The node fetches a Key Vault secret into `variable` before the steps that use it."""

    variable: str
    secret_url: str


@dataclass(frozen=True)
class Run:
    argv: list[str]
    secret: str | None = None  # an argument value to mask when rendered


Step = MakeDir | WriteFile | SecretFetch | Run


def _key(credentials, variable: str) -> tuple[list[Step], str]:
    """Steps to get an account key, and how later steps refer to it."""
    if credentials is not None and credentials.account_key_secret_reference is not None:
        return [SecretFetch(variable, credentials.account_key_secret_reference.secret_url)], f"${{{variable}}}"
    if credentials is not None and credentials.account_key:
        return [], credentials.account_key
    raise ValueError("a storage volume needs credentials (an account key or a Key Vault reference) on a VM")


def plan_mounts(volumes, root: str, *, file_server_address=lambda file_server_id: None) -> list[Step]:
    """`volumes` is a parsed MountVolumes; `root` the mount root (AZ_BATCHAI_MOUNT_ROOT or the job's)."""
    steps: list[Step] = []
    if volumes is None:
        return steps
    for i, share in enumerate(volumes.azure_file_shares or []):
        path = f"{root}/{share.relative_mount_path.strip('/')}"
        url = urlsplit(share.azure_file_url)
        fetch, key = _key(share.credentials, f"AFS_KEY_{i}")
        options = (
            f"vers=3.0,username={share.account_name},password={key},dir_mode={share.directory_mode},file_mode={share.file_mode},serverino"
        )
        steps += [*fetch, MakeDir(path), Run(["mount", "-t", "cifs", f"//{url.hostname}{url.path}", path, "-o", options], secret=key)]
    for i, blob in enumerate(volumes.azure_blob_file_systems or []):
        path = f"{root}/{blob.relative_mount_path.strip('/')}"
        config = f"{root}/.blobfuse/{blob.relative_mount_path.strip('/').replace('/', '_')}.cfg"
        fetch, key = _key(blob.credentials, f"BLOB_KEY_{i}")
        tmp = f"{BLOBFUSE_TMP}/{blob.relative_mount_path.strip('/').replace('/', '_')}"
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
            WriteFile(config, f"accountName {blob.account_name}\naccountKey {key}\ncontainerName {blob.container_name}\n", secret=key),
            Run(argv),
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
        steps += [MakeDir(path), Run(argv)]
    for fs in volumes.unmanaged_file_systems or []:
        path = f"{root}/{fs.relative_mount_path.strip('/')}"
        steps += [MakeDir(path), Run(["/bin/bash", "-c", f"{fs.mount_command} {shlex.quote(path)}"])]
    return steps


def plan_unmounts(steps: list[Step]) -> list[Run]:
    """Unmount what `plan_mounts` mounted, in reverse order (job-level volumes end with the job)."""
    paths = [s.path for s in steps if isinstance(s, MakeDir) and not s.path.startswith(BLOBFUSE_TMP)]
    return [Run(["umount", "-l", path]) for path in reversed(paths)]


def render(steps: list[Step], *, redact: bool = True) -> str:
    """A shell script for the steps; with `redact` (the default) credentials are masked."""

    def hide(text: str, secret: str | None) -> str:
        return text.replace(secret, MASK) if redact and secret and not secret.startswith("${") else text

    lines = ["set -euo pipefail"]
    for step in steps:
        if isinstance(step, MakeDir):
            lines.append(f"mkdir -p {shlex.quote(step.path)}")
        elif isinstance(step, SecretFetch):
            lines.append(f"{step.variable}=$(batchai-fetch-secret {shlex.quote(step.secret_url)})")
        elif isinstance(step, WriteFile):
            lines.append(f"install -m {step.mode:o} /dev/null {shlex.quote(step.path)}")
            lines.append(f"cat > {shlex.quote(step.path)} <<EOF\n{hide(step.content, step.secret)}EOF")
        else:
            lines.append(hide(shlex.join(step.argv), step.secret))
    return "\n".join(lines) + "\n"
