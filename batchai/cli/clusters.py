"""`cluster create`'s body from flags and a config file (as az batchai built it), and the cluster
commands beyond create/show/list/delete: resize, auto-scale, pause, resume."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import typer

from batchai.cli.client import Client, CliError
from batchai.cli.common import WorkspaceOpt, adds_options, cluster_app, named, run, show

DEFAULT_VM_SIZE = "STANDARD_D1_V2"
DEFAULT_ADMIN = "batchai"
IMAGE_ALIASES = {
    "ubuntults": {"publisher": "Canonical", "offer": "UbuntuServer", "sku": "16.04-LTS"},
    "ubuntudsvm": {"publisher": "microsoft-ads", "offer": "linux-data-science-vm-ubuntu", "sku": "linuxdsvmubuntu"},
}
MAX_CONFIG_BYTES = 1 << 20


def read_config(path: Path, placeholders: dict[str, str]) -> dict:
    """A config file's cluster properties (`{"properties": {...}}` or the bare object), placeholders filled."""
    from batchai.model.jobfile import substitute

    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise CliError(f"{path}: a config file is limited to {MAX_CONFIG_BYTES} bytes")
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise CliError(f"{path}: a config file holds a JSON object")
    props = raw["properties"] if isinstance(raw.get("properties"), dict) else raw
    return substitute({k: v for k, v in props.items() if k != "$schema"}, placeholders)


def scale_settings(target: int | None, min_nodes: int | None, max_nodes: int | None) -> dict | None:
    """Manual (a target), auto scale (--min and --max, starting at the target or 0), or None (the file's)."""
    if (min_nodes is None) != (max_nodes is None):
        raise CliError("give both --min and --max (auto scale), or neither")
    if min_nodes is not None and max_nodes is not None:
        if min_nodes > max_nodes:
            raise CliError("--max must be at least --min")
        return {"autoScale": {"minimumNodeCount": min_nodes, "maximumNodeCount": max_nodes, "initialNodeCount": target or 0}}
    if target is not None:
        return {"manual": {"targetNodeCount": target, "nodeDeallocationOption": "requeue"}}
    return None


def image_reference(image: str | None, custom_image: str | None) -> dict:
    if not image:
        raise CliError("--custom-image needs --image: the image it was made from")
    if ":" in image:
        parts = image.split(":")
        if len(parts) != 4 or not all(parts[:3]):
            raise CliError("--image must be publisher:offer:sku:version (the version may be empty) or an alias")
        ref = {"publisher": parts[0], "offer": parts[1], "sku": parts[2], **({"version": parts[3]} if parts[3] else {})}
    elif image.lower() in IMAGE_ALIASES:
        ref = dict(IMAGE_ALIASES[image.lower()])
    else:
        raise CliError(f"unknown image alias '{image}': use UbuntuLTS, UbuntuDSVM or publisher:offer:sku:version")
    if custom_image:
        ref["virtualMachineImageId"] = custom_image
    return {"imageReference": ref}


@dataclass
class AdminFlags:
    user_name: str | None
    password: str | None
    ssh_key: str | None
    generate_ssh_keys: bool

    def account(self, given: dict | None) -> dict:
        """The admin account: the flags over the config file's, a key given by value or by path."""
        account = dict(given or {})
        ssh_key = self.ssh_key or (str(ensure_ssh_key()) if self.generate_ssh_keys else None)
        if ssh_key:
            path = Path(ssh_key).expanduser()
            key = path.read_text().strip() if path.is_file() else ssh_key
            if not key.startswith(("ssh-rsa ", "ssh-ed25519 ", "ecdsa-sha2-")):
                raise CliError("--ssh-key is neither an SSH public key nor a file holding one")
            account["adminUserSshPublicKey"] = key
        if self.password:
            account["adminUserPassword"] = self.password
        account["adminUserName"] = self.user_name or account.get("adminUserName") or DEFAULT_ADMIN
        return account


with_admin_flags = adds_options(
    "admin",
    [
        ("user_name", str | None, typer.Option(None, "--user-name", "-u", help="The admin user (default batchai).")),
        ("password", str | None, typer.Option(None, "--password", "-p", help="Its password.")),
        ("ssh_key", str | None, typer.Option(None, "--ssh-key", "-k", help="Its SSH public key, or a file holding it.")),
        ("generate_ssh_keys", bool, typer.Option(False, "--generate-ssh-keys", help="Make ~/.ssh/id_rsa(.pub) if missing and use it.")),
    ],
    lambda **flags: AdminFlags(**flags),
)
"""A decorator: the command gets the admin account flags, and its parameter `admin` from them."""


def ensure_ssh_key() -> Path:
    """~/.ssh/id_rsa.pub, made with its private key (mode 600) when missing."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    public = Path.home() / ".ssh" / "id_rsa.pub"
    private = public.with_suffix("")
    if public.exists():
        return public
    if private.exists():
        raise CliError(f"{private} exists without {public}: give --ssh-key")
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    private.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    private.touch(mode=0o600)
    private.write_bytes(pem)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n")
    typer.echo(f"made an SSH key pair: {private} and {public}", err=True)
    return public


def setup_task(command: str | None, output: str | None) -> dict | None:
    if command is None:
        return None
    if not output:
        raise CliError("--setup-task needs --setup-task-output (where its logs go)")
    return {"commandLine": command, "stdOutErrPathPrefix": output, "runElevated": False}


def apply_flags(props: dict, *, vm_size, vm_priority, scale, image, account, subnet, setup) -> None:
    """The flags given, over what the config file said (or the defaults)."""
    props["vmSize"] = vm_size or props.get("vmSize") or DEFAULT_VM_SIZE
    props["vmPriority"] = vm_priority or props.get("vmPriority") or "dedicated"
    props["scaleSettings"] = scale or props.get("scaleSettings") or scale_settings(1, None, None)
    if image:
        props["virtualMachineConfiguration"] = image
    props["userAccountSettings"] = account
    if subnet:
        props["subnet"] = {"id": subnet}
    if setup:
        props.setdefault("nodeSetup", {})["setupTask"] = setup


def file_server_id(client: Client, workspace: str, name_or_id: str) -> str:
    """The ARM id of a file server given by name (in the workspace) or id; it must exist."""
    rid = name_or_id if name_or_id.startswith("/subscriptions/") else f"{client.workspace(workspace)}/fileServers/{name_or_id}"
    return client.get(rid)["id"]


def _counts(r):
    n = r["properties"].get("nodeStateCounts", {})
    return f"idle {n.get('idleNodeCount', 0)} / running {n.get('runningNodeCount', 0)} / preparing {n.get('preparingNodeCount', 0)} / unusable {n.get('unusableNodeCount', 0)}"


CLUSTER_COLUMNS = [
    ("name", lambda r: r["name"]),
    ("vm size", lambda r: r["properties"].get("vmSize")),
    ("allocation", lambda r: r["properties"].get("allocationState")),
    ("nodes", lambda r: r["properties"].get("currentNodeCount")),
    ("node states", _counts),
    ("gpus", lambda r: r["properties"].get("gpuCount")),
]


# -- scale and pause ---------------------------------------------------------------------
def _update(client: Client, workspace: str, name: str, scale: dict) -> dict:
    return client.request("PATCH", client.cluster(workspace, name), json={"properties": {"scaleSettings": scale}}).json()


@cluster_app.command("resize")
@named("name", "--name", "-n")
def cluster_resize(
    ctx: typer.Context,
    name: str,
    workspace: str = WorkspaceOpt,
    target: int = typer.Option(..., "--target", "-t", help="The node count to reach (manual scale)."),
):
    """Manual scale: grow or shrink the cluster to --target nodes (jobs on leaving nodes are requeued)."""
    c = ctx.obj
    run(lambda: show(c, _update(c.client, workspace, name, scale_settings(target, None, None) or {}), CLUSTER_COLUMNS))


@cluster_app.command("auto-scale")
@named("name", "--name", "-n")
def cluster_auto_scale(
    ctx: typer.Context,
    name: str,
    workspace: str = WorkspaceOpt,
    min_nodes: int = typer.Option(..., "--min", help="The fewest nodes."),
    max_nodes: int = typer.Option(..., "--max", help="The most nodes."),
):
    """Auto scale between --min and --max nodes, by the queue (idle nodes leave)."""
    c = ctx.obj
    run(lambda: show(c, _update(c.client, workspace, name, scale_settings(None, min_nodes, max_nodes) or {}), CLUSTER_COLUMNS))


@cluster_app.command("pause")
@named("name", "--name", "-n")
def cluster_pause(ctx: typer.Context, name: str, workspace: str = WorkspaceOpt):
    """Ours: queued jobs stay queued (running ones go on) until `cluster resume`."""
    c = ctx.obj
    run(lambda: show(c, c.client.post(f"{c.client.cluster(workspace, name)}/pause", wait=False).json(), CLUSTER_COLUMNS))


@cluster_app.command("resume")
@named("name", "--name", "-n")
def cluster_resume(ctx: typer.Context, name: str, workspace: str = WorkspaceOpt):
    """Ours: the cluster starts queued jobs again."""
    c = ctx.obj
    run(lambda: show(c, c.client.post(f"{c.client.cluster(workspace, name)}/resume", wait=False).json(), CLUSTER_COLUMNS))
