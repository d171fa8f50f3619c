"""`batchai token ...` and `batchai audit`: API tokens with a role, and the audit log (Owner only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

BASE = "/providers/Microsoft.BatchAI"
token_app = typer.Typer(help="API tokens: a role (Owner, Contributor, Reader) for the service or one workspace.", no_args_is_help=True)

TOKEN_COLUMNS = [
    ("id", lambda t: t["id"]),
    ("name", lambda t: t["name"]),
    ("role", lambda t: t["role"]),
    ("scope", lambda t: t["scope"]),
    ("expires", lambda t: t["expiresOn"] or "never"),
    ("revoked", lambda t: "yes" if t["revoked"] else ""),
]


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    role: str = typer.Option(..., "--role", help="owner, contributor or reader."),
    workspace: str | None = typer.Option(None, "--workspace", "-w", help="Only this workspace (default: the whole service)."),
    expires: str | None = typer.Option(None, "--expires", help="Lifetime: 90m, 12h, 30d (default: until revoked)."),
    name: str | None = typer.Option(None, "--name", help="A name to know it by."),
):
    """Make a token and print it (it is shown this once; the server keeps only its hash)."""
    c = ctx.obj

    def create():
        client = c.client
        body = {"role": role, "scope": client.workspace(workspace) if workspace else "/"}
        body.update({k: v for k, v in (("expiresIn", expires), ("name", name)) if v})
        made = client.request("POST", f"{BASE}/tokens", json=body).json()
        if c.as_json:
            show(c, made, [])
        else:
            typer.echo(made["token"])

    run(create)


@token_app.command("list")
def token_list(ctx: typer.Context):
    """The tokens of the scopes you own (never their secrets)."""
    c = ctx.obj
    run(lambda: show(c, c.client.get(f"{BASE}/tokens")["value"], TOKEN_COLUMNS))


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, token_id: str = typer.Argument(..., help="The token's id (token list).")):
    """Revoke a token: requests with it are refused from now on."""
    c = ctx.obj
    run(lambda: show(c, c.client.request("DELETE", f"{BASE}/tokens/{token_id}").json(), TOKEN_COLUMNS))


def audit(
    ctx: typer.Context,
    principal: str | None = typer.Option(None, help="Only this principal id (token:<id>, oidc:<subject>, owner-token, anonymous)."),
    action: str | None = typer.Option(None, help="Only this action, e.g. Microsoft.BatchAI/workspaces/write or authenticate."),
    resource: str | None = typer.Option(None, help="Only this resource id and what is under it."),
    result: int | None = typer.Option(None, help="Only this HTTP status."),
    since: str | None = typer.Option(None, help="From this ISO-8601 time."),
    until: str | None = typer.Option(None, help="Before this ISO-8601 time."),
):
    """The audit log: every change, role change and failed authentication, oldest first."""
    c = ctx.obj
    filters = {"principal": principal, "action": action, "resource": resource, "result": result, "since": since, "until": until}
    columns = [(k, lambda e, k=k: e.get(k)) for k in ("time", "principal", "principalName", "action", "resource", "result")]
    run(lambda: show(c, c.client.list(f"{BASE}/auditLog", **{k: v for k, v in filters.items() if v is not None}), columns))


_cli: dict[str, Callable[..., Any]] = {}  # main's run and show: imported from it, this module would load it twice under `python -m`


def run(fn):
    return _cli["run"](fn)


def show(ctx, data, columns) -> None:
    _cli["show"](ctx, data, columns)


def register(app: typer.Typer, run: Callable, show: Callable) -> None:
    _cli.update(run=run, show=show)
    app.add_typer(token_app, name="token")
    app.command("audit")(audit)
