"""What every command group of the CLI shares: the typer apps, the global options, output and errors.

Exit codes scripts can rely on (as `az`'s): 0 done; 1 an error (the service refused, bad input, a
timeout), with one `error: CODE: message (target)` line on stderr; 2 a usage error (a bad flag);
3 the resource does not exist; `job wait` exits with the failed job's exit code.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from batchai.cli import output
from batchai.cli.client import Client, CliError

DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
DEFAULT_DATA_DIR = Path(os.environ.get("BATCHAI_DATA_DIR", Path.home() / ".batchai"))
TERMINAL = ("succeeded", "failed")

app = typer.Typer(help="Open, serverless Azure Batch AI.", no_args_is_help=True, pretty_exceptions_enable=False)
workspace_app = typer.Typer(help="Workspaces: the top of the resource hierarchy.", no_args_is_help=True)
cluster_app = typer.Typer(help="Clusters of nodes of one VM size.", no_args_is_help=True)
experiment_app = typer.Typer(help="Experiments: groups of related jobs.", no_args_is_help=True)
job_app = typer.Typer(help="Jobs: training, sweeps and batch scoring.", no_args_is_help=True)
sweep_app = typer.Typer(help="Hyperparameter sweeps: trials sampled from a search space, with early termination.", no_args_is_help=True)
queue_app = typer.Typer(help="The submission queue and the clusters' job queues.", no_args_is_help=True)
cluster_node_app = typer.Typer(help="The nodes of a cluster.", no_args_is_help=True)
cluster_file_app = typer.Typer(help="The files of a cluster's node setup task.", no_args_is_help=True)
job_file_app = typer.Typer(help="A job's log and output files.", no_args_is_help=True)
job_node_app = typer.Typer(help="The nodes a job runs on.", no_args_is_help=True)
file_server_app = typer.Typer(help="File servers: an NFS export the nodes mount.", no_args_is_help=True)
node_app = typer.Typer(help="This machine as a node of an attached cluster.", no_args_is_help=True)
app.add_typer(workspace_app, name="workspace")
app.add_typer(cluster_app, name="cluster")
app.add_typer(experiment_app, name="experiment")
app.add_typer(job_app, name="job")
app.add_typer(sweep_app, name="sweep")
app.add_typer(queue_app, name="queue")
app.add_typer(file_server_app, name="file-server")
app.add_typer(node_app, name="node")
cluster_app.add_typer(cluster_node_app, name="node")
cluster_app.add_typer(cluster_file_app, name="file")
job_app.add_typer(job_file_app, name="file")
job_app.add_typer(job_node_app, name="node")

console = Console()
errors = Console(stderr=True, soft_wrap=True)

WorkspaceOpt = typer.Option(..., "--workspace", "-w", help="Name of the workspace.")
ExperimentOpt = typer.Option(..., "--experiment", "-e", help="Name of the experiment.")
NoWaitOpt = typer.Option(False, "--no-wait", help="Do not wait for the long-running operation to finish.")
YesOpt = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")
# Global options a user may also write after the command, as with az (`batchai job list -w ws -o tsv`).
GLOBAL_VALUED = ("-o", "--output", "--query")
GLOBAL_FLAGS = ("--json",)


class Context:
    def __init__(self, url: str, token: str | None, data_dir: Path, subscription: str, resource_group: str, fmt: str, query: str | None):
        self.url, self._token, self.data_dir = url, token, data_dir
        self.subscription, self.resource_group = subscription, resource_group
        self.output, self.query = fmt, query

    @property
    def as_json(self) -> bool:
        """Not the human table: the command prints its data for a script."""
        return self.output != "table" or self.query is not None

    @property
    def client(self) -> Client:
        token = self._token
        if not token:
            path = self.data_dir / "token"
            if not path.exists():
                raise CliError(f"no token: set BATCHAI_TOKEN or point --data-dir at the server's data dir ({path} is missing)")
            token = path.read_text().strip()
        return Client(self.url, token, self.subscription, self.resource_group)


@app.callback()
def main(
    ctx: typer.Context,
    url: str | None = typer.Option(None, envvar="BATCHAI_URL", help="Control plane URL (default: the one serving --data-dir, else :8080)."),
    token: str | None = typer.Option(None, envvar="BATCHAI_TOKEN", help="Bearer token (default: <data-dir>/token)."),
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, envvar="BATCHAI_DATA_DIR", help="The embedded server's data directory."),
    subscription: str = typer.Option(DEFAULT_SUBSCRIPTION, envvar="BATCHAI_SUBSCRIPTION"),
    resource_group: str = typer.Option("default", "--resource-group", "-g", envvar="BATCHAI_RESOURCE_GROUP"),
    fmt: str = typer.Option("table", "--output", "-o", envvar="BATCHAI_OUTPUT", help="table, json, jsonc, tsv, yaml or none."),
    query: str | None = typer.Option(None, "--query", help="A JMESPath query applied to the result (as az's)."),
    as_json: bool = typer.Option(False, "--json", help="The same as -o json."),
):
    if fmt not in output.FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(output.FORMATS)}", param_hint="--output")
    ctx.obj = Context(url or local_url(data_dir), token, data_dir, subscription, resource_group, "json" if as_json else fmt, query)


def local_url(data_dir: Path) -> str:
    """The URL a local `batchai serve` on this data dir announced, so `--port 0` needs no flags."""
    try:
        return json.loads((data_dir / "control-plane.json").read_text())["url"]
    except (OSError, ValueError, KeyError):
        return "http://127.0.0.1:8080"


@contextmanager
def queue_client(data_dir: Path):
    """The submission queue the settings name, closed after use; its failures are CLI errors, not tracebacks."""
    from azure.core.exceptions import AzureError

    from batchai.adapters.from_env import submission_queue

    queue = None
    try:
        queue = submission_queue(data_dir)
        yield queue
    except AzureError as exc:  # Service Bus: a bad connection string, no such topic, no network
        raise CliError(f"the submission queue failed: {exc}") from None
    finally:
        if queue is not None:
            queue.close()


def run(fn):
    try:
        return fn()
    except CliError as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
        raise typer.Exit(exc.exit_code) from None
    except output.BadQuery as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
        raise typer.Exit(2) from None


def show(ctx: Context, data, columns: list[tuple[str, Callable[[Any], Any]]] | None = None) -> None:
    """Print `data` as the user asked: the command's `columns` in a table, or the (queried) data."""
    result = output.query(ctx.query, data)
    text = output.render(result, ctx.output, columns if ctx.query is None else None, color=sys.stdout.isatty())
    if text:
        print(text, flush=True)


def field(name: str, within: str | None = None) -> Callable[[dict], Any]:
    """A table column: the row's `name` (in its `within` object), blank where it has none."""
    return lambda row: (row.get(within) or {} if within else row).get(name)


def adds_options(name: str, options: list[tuple[str, Any, Any]], build: Callable[..., Any]):
    """A decorator: the command gets `options` (name, type, typer default) as parameters of its own and
    receives `build(**their values)` as its parameter `name` instead (flags several commands share)."""

    def decorate(fn):
        signature = inspect.signature(fn, eval_str=True)
        kept = [p for p in signature.parameters.values() if p.name != name]
        added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind) for n, kind, default in options]

        @functools.wraps(fn)
        def command(*args, **kwargs):
            values = {n: kwargs.pop(n) for n, _, _ in options}
            return fn(*args, **kwargs, **{name: build(**values)})

        command.__signature__ = signature.replace(parameters=kept + added)  # type: ignore[attr-defined]
        return command

    return decorate


def pick(positional: str | None, option: str | None, flag: str) -> str:
    """A name given as the argument or as `flag` (az's spelling)."""
    if positional and option and positional != option:
        raise typer.BadParameter(f"two names given: {positional} and {flag} {option}")
    if not (positional or option):
        raise typer.BadParameter(f"give it as an argument or with {flag}")
    return str(positional or option)


def named(what: str, flag: str, short: str | None = None):
    """A decorator: the command's parameter `what` is the resource's name, as the argument or as `flag`/`short`."""
    return adds_options(
        what,
        [
            (f"{what}_arg", str | None, typer.Argument(None, metavar=what.upper(), show_default=False, help=f"The {what} (or {flag}).")),
            (f"{what}_opt", str | None, typer.Option(None, flag, *([short] if short else []), help=f"The {what}.")),
        ],
        lambda **v: pick(v[f"{what}_arg"], v[f"{what}_opt"], flag),
    )


def confirm(yes: bool, what: str) -> None:
    """Deletes ask first on a terminal (as az's); `--yes`, or no terminal (a script), goes ahead."""
    if yes or not sys.stdin.isatty():
        return
    if not typer.confirm(f"Delete {what}?", default=False):
        raise typer.Exit(1)


def hoist_globals(argv: list[str]) -> list[str]:
    """`-o`, `--output`, `--query` and `--json` moved before the command, wherever the user wrote them
    (not after `--`, which ends the options)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        name = arg.split("=", 1)[0]
        if arg in GLOBAL_FLAGS:
            front.append(arg)
        elif name in GLOBAL_VALUED and "=" in arg:
            front.append(arg)
        elif arg in GLOBAL_VALUED and i + 1 < len(argv):
            front += [arg, argv[i + 1]]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest
