"""`file-server create|show|list|delete` and `list-usages`, with az batchai's flags."""

from __future__ import annotations

from pathlib import Path

import typer

from batchai.cli import clusters
from batchai.cli.common import DEFAULT_SUBSCRIPTION, NoWaitOpt, WorkspaceOpt, YesOpt, app, confirm, file_server_app, named, run, show

FILE_SERVER_COLUMNS = [
    ("name", lambda r: r["name"]),
    ("vm size", lambda r: r["properties"].get("vmSize")),
    ("disks", lambda r: (r["properties"].get("dataDisks") or {}).get("diskCount")),
    ("disk GB", lambda r: (r["properties"].get("dataDisks") or {}).get("diskSizeInGB")),
    ("mount point", lambda r: (r["properties"].get("mountSettings") or {}).get("mountPoint")),
    ("state", lambda r: r["properties"].get("provisioningState")),
]
USAGE_COLUMNS = [
    ("name", lambda r: r["name"]["localizedValue"]),
    ("current", lambda r: r["currentValue"]),
    ("limit", lambda r: r["limit"]),
]


def _path(c, workspace: str, name: str) -> str:
    return f"{c.client.workspace(workspace)}/fileServers/{name}"


@file_server_app.command("create")
@named("name", "--name", "-n")
@clusters.with_admin_flags
def file_server_create(
    ctx: typer.Context,
    name: str,
    admin: clusters.AdminFlags,  # from with_admin_flags
    workspace: str = WorkspaceOpt,
    config_file: Path | None = typer.Option(None, "--config-file", "-f", help="FileServerCreateParameters as JSON; the flags override it."),
    vm_size: str | None = typer.Option(None, "--vm-size", "-s", help="VM size (default STANDARD_D1_V2)."),
    disk_count: int | None = typer.Option(None, "--disk-count", help="Number of data disks (default 1)."),
    disk_size: int | None = typer.Option(None, "--disk-size", help="Each disk's size in GB (default 10)."),
    caching_type: str | None = typer.Option(None, "--caching-type", help="none, readonly or readwrite."),
    storage_sku: str | None = typer.Option(None, "--storage-sku", help="Premium_LRS or Standard_LRS (default)."),
    subnet: str | None = typer.Option(None, "--subnet", help="ARM id of the virtual network subnet."),
    no_wait: bool = NoWaitOpt,
):
    """Create a file server: an NFS export that clusters and jobs mount (--nfs)."""
    c = ctx.obj

    def create():
        props = clusters.read_config(config_file, {}) if config_file else {}
        props["vmSize"] = vm_size or props.get("vmSize") or clusters.DEFAULT_VM_SIZE
        ssh = dict(props.get("sshConfiguration") or {})
        ssh["userAccountSettings"] = admin.account(ssh.get("userAccountSettings"))
        props["sshConfiguration"] = ssh
        disks = dict(props.get("dataDisks") or {})
        disks["diskCount"] = disk_count or disks.get("diskCount") or 1
        disks["diskSizeInGB"] = disk_size or disks.get("diskSizeInGB") or 10
        disks["storageAccountType"] = storage_sku or disks.get("storageAccountType") or "Standard_LRS"
        disks["cachingType"] = caching_type or disks.get("cachingType") or "none"
        props["dataDisks"] = disks
        if subnet:
            props["subnet"] = {"id": subnet}
        created = c.client.put(_path(c, workspace, name), {"properties": props})
        if not no_wait:
            created = c.client.get(_path(c, workspace, name))
        show(c, created, FILE_SERVER_COLUMNS)

    run(create)


@file_server_app.command("show")
@named("name", "--name", "-n")
def file_server_show(ctx: typer.Context, name: str, workspace: str = WorkspaceOpt):
    c = ctx.obj
    run(lambda: show(c, c.client.get(_path(c, workspace, name)), FILE_SERVER_COLUMNS))


@file_server_app.command("list")
def file_server_list(ctx: typer.Context, workspace: str = WorkspaceOpt):
    c = ctx.obj
    run(lambda: show(c, c.client.list(f"{c.client.workspace(workspace)}/fileServers"), FILE_SERVER_COLUMNS))


@file_server_app.command("delete")
@named("name", "--name", "-n")
def file_server_delete(ctx: typer.Context, name: str, workspace: str = WorkspaceOpt, yes: bool = YesOpt, no_wait: bool = NoWaitOpt):
    """Delete a file server (what the nodes wrote to its export goes with it)."""
    c = ctx.obj
    confirm(yes, f"the file server '{name}' and its files")
    run(lambda: c.client.delete(_path(c, workspace, name), wait=not no_wait))


@app.command("list-usages")
def list_usages(ctx: typer.Context, location: str = typer.Option("local", "--location", "-l", help="The workspaces' location.")):
    """Workspaces and clusters used in a location, against their limits."""
    c = ctx.obj
    path = f"/subscriptions/{c.subscription or DEFAULT_SUBSCRIPTION}/providers/Microsoft.BatchAI/locations/{location}/usages"
    run(lambda: show(c, c.client.list(path), USAGE_COLUMNS))
