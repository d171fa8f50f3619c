"""`batchai dashboard`: the web dashboard's address, with a one-time sign-in link, opened in a browser
when there is one (the link signs in as the CLI's own principal: see batchai/dashboard)."""

from __future__ import annotations

import sys
import webbrowser
from urllib.parse import quote

import typer

from batchai.cli.client import CliError


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)


def dashboard(
    ctx: typer.Context,
    open_browser: bool = typer.Option(True, "--open/--no-open", help="Open the link in a web browser when one is available."),
):
    """Print the dashboard's URL and a one-time sign-in link (valid two minutes, once), and open it."""
    c = ctx.obj
    try:
        answer = c.client.request("POST", "/providers/Microsoft.BatchAI/dashboardSignIn").json()
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    base = c.url.rstrip("/")
    link = base + answer["path"].replace("/#", f"/?subscription={quote(c.subscription)}#", 1)  # the pages list its workspaces
    print(f"Dashboard: {base}/dashboard/")
    print(f"Sign in (once, within {answer['expiresInSeconds']} s): {link}")
    if open_browser:
        try:
            opened = webbrowser.open(link)
        except webbrowser.Error:
            opened = False
        if not opened:
            print("No web browser here: open the sign-in link on a machine that reaches this URL.", file=sys.stderr)
