"""`batchai`: run the embedded control plane, and drive any Batch AI endpoint from the shell.

Human tables by default; `--json` prints the service's JSON for scripts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from operator import itemgetter
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from batchai.cli import dashboard
from batchai.cli.client import Client, CliError

DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
DEFAULT_DATA_DIR = Path(os.environ.get("BATCHAI_DATA_DIR", Path.home() / ".batchai"))

app = typer.Typer(help="Open, serverless Azure Batch AI.", no_args_is_help=True, pretty_exceptions_enable=False)
workspace_app = typer.Typer(help="Workspaces: the top of the resource hierarchy.", no_args_is_help=True)
cluster_app = typer.Typer(help="Clusters of nodes of one VM size.", no_args_is_help=True)
experiment_app = typer.Typer(help="Experiments: groups of related jobs.", no_args_is_help=True)
job_app = typer.Typer(help="Jobs: training, sweeps and batch scoring.", no_args_is_help=True)
app.add_typer(workspace_app, name="workspace")
app.add_typer(cluster_app, name="cluster")
app.add_typer(experiment_app, name="experiment")
app.add_typer(job_app, name="job")
sweep_app = typer.Typer(help="Hyperparameter sweeps: trials sampled from a search space, with early termination.", no_args_is_help=True)
app.add_typer(sweep_app, name="sweep")
queue_app = typer.Typer(help="The submission queue of the local control plane.", no_args_is_help=True)
app.add_typer(queue_app, name="queue")
cluster_node_app = typer.Typer(help="The nodes of a cluster.", no_args_is_help=True)
cluster_app.add_typer(cluster_node_app, name="node")
node_app = typer.Typer(help="This machine as a node of an attached cluster.", no_args_is_help=True)
app.add_typer(node_app, name="node")

console = Console()
errors = Console(stderr=True, soft_wrap=True)
TERMINAL = ("succeeded", "failed")
DEFAULT_NODE_ROOT = Path.home() / ".batchai-node"


class Context:
    def __init__(self, url: str, token: str | None, data_dir: Path, subscription: str, resource_group: str, as_json: bool):
        self.url, self._token, self.data_dir = url, token, data_dir
        self.subscription, self.resource_group, self.as_json = subscription, resource_group, as_json

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
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
):
    ctx.obj = Context(url or local_url(data_dir), token, data_dir, subscription, resource_group, as_json)


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
        raise typer.Exit(1) from None


def show(ctx: Context, data, columns: list[tuple[str, Callable[[Any], Any]]]) -> None:
    if ctx.as_json:
        print(json.dumps(data, indent=2))
        return
    rows = data if isinstance(data, list) else [data]
    table = Table(*[c for c, _ in columns])
    for row in rows:
        table.add_row(*[str(get(row) if get(row) is not None else "") for _, get in columns])
    console.print(table)


# -- serve ------------------------------------------------------------------------------
@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, help="Port (0: any free port)."),
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, envvar="BATCHAI_DATA_DIR", help="Where the store, logs and nodes live."),
):
    """Run the embedded control plane in the foreground (Ctrl-C stops it)."""
    import logging

    from function_app.embedded import EmbeddedHost

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    host_ = EmbeddedHost(data_dir=data_dir, host=host, port=port)
    host_.build()
    sock = host_.bind_socket()
    print(f"Batch AI control plane listening on {host_.url}", flush=True)
    print(f"data dir: {host_.data_dir}  token file: {host_.data_dir / 'token'}", flush=True)
    host_.serve(sock)


# -- workspaces -------------------------------------------------------------------------
WS_COLUMNS = [
    ("name", lambda r: r["name"]),
    ("location", lambda r: r.get("location")),
    ("state", lambda r: r["properties"].get("provisioningState")),
    ("created", lambda r: r["properties"].get("creationTime")),
]


@workspace_app.command("create")
def workspace_create(ctx: typer.Context, name: str, location: str = typer.Option("local", "--location", "-l")):
    c = ctx.obj
    run(lambda: show(c, c.client.put(c.client.workspace(name), {"location": location}), WS_COLUMNS))


@workspace_app.command("list")
def workspace_list(ctx: typer.Context):
    c = ctx.obj
    path = f"/subscriptions/{c.subscription}/resourceGroups/{c.resource_group}/providers/Microsoft.BatchAI/workspaces"
    run(lambda: show(c, c.client.list(path), WS_COLUMNS))


@workspace_app.command("show")
def workspace_show(ctx: typer.Context, name: str):
    c = ctx.obj
    run(lambda: show(c, c.client.get(c.client.workspace(name)), WS_COLUMNS))


@workspace_app.command("delete")
def workspace_delete(ctx: typer.Context, name: str):
    """Delete a workspace with all its clusters, experiments and jobs."""
    c = ctx.obj
    run(lambda: c.client.delete(c.client.workspace(name)))


# -- clusters ---------------------------------------------------------------------------
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


@cluster_app.command("create")
def cluster_create(
    ctx: typer.Context,
    name: str,
    workspace: str = typer.Option(..., "--workspace", "-w"),
    nodes: int = typer.Option(1, "--nodes", "-n", help="Target node count (manual scale)."),
    vm_size: str = typer.Option("STANDARD_D1_V2", "--vm-size"),
    low_priority: bool = typer.Option(False, "--low-priority"),
    attached: bool = typer.Option(False, "--attached", help="Nodes are machines that join (batchai node join); --nodes is unused."),
    wait: bool = typer.Option(True, help="Wait until every node has joined."),
):
    c = ctx.obj
    body = {
        "properties": {
            "vmSize": vm_size,
            "vmPriority": "lowpriority" if low_priority else "dedicated",
            "scaleSettings": {"manual": {"targetNodeCount": 0 if attached else nodes, "nodeDeallocationOption": "requeue"}},
            "userAccountSettings": {"adminUserName": "batchai"},
            **({"attached": True} if attached else {}),
        }
    }

    def create():
        path = c.client.cluster(workspace, name)
        cluster = c.client.put(path, body)
        deadline = time.time() + 120
        while wait and cluster["properties"]["allocationState"] != "steady" and time.time() < deadline:
            time.sleep(0.3)
            cluster = c.client.get(path)
        show(c, cluster, CLUSTER_COLUMNS)

    run(create)


@cluster_app.command("list")
def cluster_list(ctx: typer.Context, workspace: str = typer.Option(..., "--workspace", "-w")):
    c = ctx.obj
    run(lambda: show(c, c.client.list(f"{c.client.workspace(workspace)}/clusters"), CLUSTER_COLUMNS))


@cluster_app.command("show")
def cluster_show(ctx: typer.Context, name: str, workspace: str = typer.Option(..., "--workspace", "-w")):
    c = ctx.obj
    run(lambda: show(c, c.client.get(c.client.cluster(workspace, name)), CLUSTER_COLUMNS))


@cluster_app.command("delete")
def cluster_delete(ctx: typer.Context, name: str, workspace: str = typer.Option(..., "--workspace", "-w")):
    c = ctx.obj
    run(lambda: c.client.delete(c.client.cluster(workspace, name)))


@cluster_app.command("enroll-token")
def cluster_enroll_token(
    ctx: typer.Context,
    name: str,
    workspace: str = typer.Option(..., "--workspace", "-w"),
    rotate: bool = typer.Option(False, "--rotate", help="Void every token given before (nodes already joined stay)."),
):
    """Print the attached cluster's enrollment token (for `batchai node join`)."""
    c = ctx.obj
    run(
        lambda: print(
            c.client.request("POST", f"{c.client.cluster(workspace, name)}/enrollmentToken", json={"rotate": rotate}).json()["token"]
        )
    )


@cluster_node_app.command("remove")
def cluster_node_remove(ctx: typer.Context, cluster: str, node: str, workspace: str = typer.Option(..., "--workspace", "-w")):
    """A joined node leaves the cluster for good: its credential is refused, its agent stops."""
    c = ctx.obj
    run(lambda: c.client.post(f"{c.client.cluster(workspace, cluster)}/nodes/{node}/remove", wait=False))


@node_app.command("join")
def node_join(
    url: str = typer.Option(..., "--url", help="The control plane's URL, as this machine reaches it."),
    token: str = typer.Option(
        ...,
        "--token",
        envvar="BATCHAI_ENROLL_TOKEN",
        help="The cluster's enrollment token (better in $BATCHAI_ENROLL_TOKEN: a command line is readable by every process).",
    ),
    root: Path = typer.Option(DEFAULT_NODE_ROOT, "--root", help="This node's own directory (its disk)."),
    name: str | None = typer.Option(None, "--name", help="The node's name (default: the next free node-N)."),
    address: str | None = typer.Option(
        None, "--address", help="Where peers reach this machine (default: its address toward the control plane)."
    ),
):
    """Run this machine as a node of the attached cluster the token names, until stopped (SIGTERM) or removed."""
    from batchai.agent.join import JoinFailed, join

    def go():
        try:
            return join(url=url, token=token, root=str(root), name=name, address=address)
        except JoinFailed as exc:
            raise CliError(str(exc)) from None

    raise typer.Exit(run(go))


# -- experiments ------------------------------------------------------------------------
EXP_COLUMNS = [
    ("name", lambda r: r["name"]),
    ("state", lambda r: r["properties"].get("provisioningState")),
    ("created", lambda r: r["properties"].get("creationTime")),
]


@experiment_app.command("create")
def experiment_create(ctx: typer.Context, name: str, workspace: str = typer.Option(..., "--workspace", "-w")):
    c = ctx.obj
    run(lambda: show(c, c.client.put(c.client.experiment(workspace, name)), EXP_COLUMNS))


@experiment_app.command("list")
def experiment_list(ctx: typer.Context, workspace: str = typer.Option(..., "--workspace", "-w")):
    c = ctx.obj
    run(lambda: show(c, c.client.list(f"{c.client.workspace(workspace)}/experiments"), EXP_COLUMNS))


@experiment_app.command("show")
def experiment_show(ctx: typer.Context, name: str, workspace: str = typer.Option(..., "--workspace", "-w")):
    c = ctx.obj
    run(lambda: show(c, c.client.get(c.client.experiment(workspace, name)), EXP_COLUMNS))


@experiment_app.command("delete")
def experiment_delete(ctx: typer.Context, name: str, workspace: str = typer.Option(..., "--workspace", "-w")):
    c = ctx.obj
    run(lambda: c.client.delete(c.client.experiment(workspace, name)))


# -- jobs -------------------------------------------------------------------------------
JOB_COLUMNS = [
    ("name", lambda r: r["name"]),
    ("tool", lambda r: r["properties"].get("toolType")),
    ("nodes", lambda r: r["properties"].get("nodeCount")),
    ("state", lambda r: r["properties"].get("executionState")),
    ("exit code", lambda r: r["properties"].get("executionInfo", {}).get("exitCode")),
    ("started", lambda r: r["properties"].get("executionInfo", {}).get("startTime")),
    ("ended", lambda r: r["properties"].get("executionInfo", {}).get("endTime")),
]

WorkspaceOpt = typer.Option(..., "--workspace", "-w")
ExperimentOpt = typer.Option(..., "--experiment", "-e")


def job_body(
    client: Client,
    workspace: str,
    cluster: str | None,
    job_file: Path | None,
    command: str | None,
    nodes: int | None,
    placeholders: list[str],
) -> dict:
    from batchai.errors import ApiError
    from batchai.model import load_job_file

    cluster_id = client.cluster(workspace, cluster) if cluster else None
    if job_file is not None:
        values = dict(p.split("=", 1) for p in placeholders)
        try:
            raw = json.loads(job_file.read_text())
            params = load_job_file(raw, cluster_id=cluster_id, placeholders=values, node_count=nodes)
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read {job_file}: {exc}") from None
        except ApiError as exc:
            raise CliError(f"{job_file}: {exc.message}" + (f" ({exc.target})" if exc.target else "")) from None
        return {"properties": params.properties.to_wire()}
    if command is None:
        raise CliError("give a job file (-f) or a command line (--command)")
    if cluster_id is None:
        raise CliError("--cluster is required")
    return {
        "properties": {
            "cluster": {"id": cluster_id},
            "nodeCount": nodes or 1,
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT",
            "customToolkitSettings": {"commandLine": command},
        }
    }


@job_app.command("create")
def job_create(
    ctx: typer.Context,
    name: str,
    workspace: str = WorkspaceOpt,
    experiment: str = ExperimentOpt,
    cluster: str | None = typer.Option(None, "--cluster", "-c", help="Cluster name in the workspace."),
    job_file: Path | None = typer.Option(None, "--file", "-f", help="An original Batch AI job file (job.json)."),
    command: str | None = typer.Option(None, "--command", help="A custom-toolkit command line instead of a file."),
    nodes: int | None = typer.Option(None, "--nodes", "-n", help="Node count (overrides the file)."),
    placeholder: list[str] = typer.Option([], "--placeholder", "-p", help="NAME=VALUE for <NAME> in the job file."),
):
    """Submit a job: from an original job file, or a command line."""
    c = ctx.obj

    def create():
        body = job_body(c.client, workspace, cluster, job_file, command, nodes, placeholder)
        show(c, c.client.put(c.client.job(workspace, experiment, name), body), JOB_COLUMNS)

    run(create)


@job_app.command("submit")
def job_submit(
    ctx: typer.Context,
    name: str,
    workspace: str = WorkspaceOpt,
    experiment: str = ExperimentOpt,
    cluster: str = typer.Option(..., "--cluster", "-c", help="Cluster name in the workspace."),
    job_file: Path = typer.Option(..., "--file", "-f", help="An original Batch AI job file (job.json)."),
    placeholder: list[str] = typer.Option([], "--placeholder", "-p", help="NAME=VALUE for <NAME> in the job file."),
    via: str = typer.Option("http", "--via", help="http (the REST API), queue (a submission message) or blob (a dropped file)."),
    priority: str = typer.Option("normal", "--priority", help="Queue priority: high, normal or low."),
    key: str | None = typer.Option(None, "--idempotency-key", help="Queue: the message id; a repeat creates no second job."),
):
    """Submit a job file through one of the three channels (they end in the same create-job path)."""
    c = ctx.obj
    values = dict(p.split("=", 1) for p in placeholder)

    def submit():
        try:
            raw = json.loads(job_file.read_text())
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read {job_file}: {exc}") from None
        if via == "http":
            body = job_body(c.client, workspace, cluster, job_file, None, None, placeholder)
            return show(c, c.client.put(c.client.job(workspace, experiment, name), body), JOB_COLUMNS)
        if via == "queue":
            message = {
                "workspace": workspace,
                "experiment": experiment,
                "jobName": name,
                "job": raw,
                "cluster": cluster,
                "placeholders": values,
                "resourceGroup": c.resource_group,
                "subscription": c.subscription,
            }
            with queue_client(c.data_dir) as queue:
                message_id = queue.publish(json.dumps(message), priority=priority, message_id=key)
            return show(
                c,
                {"channel": "queue", "messageId": message_id, "priority": priority},
                [("channel", lambda r: r["channel"]), ("message id", lambda r: r["messageId"]), ("priority", lambda r: r["priority"])],
            )
        if via == "blob":
            from batchai.adapters.from_env import drop_store

            drops = drop_store(c.data_dir)
            params = {"cluster": cluster, "placeholders": values, "resourceGroup": c.resource_group, "subscription": c.subscription}
            name_prefix = f"inbox/{workspace}/{experiment}/{name}"
            drops.put(f"{name_prefix}.params.json", json.dumps(params).encode())  # before the drop: it is read with it
            drops.put(f"{name_prefix}.json", json.dumps(raw).encode())
            return show(
                c,
                {"channel": "blob", "path": f"{name_prefix}.json"},
                [("channel", lambda r: r["channel"]), ("dropped at", lambda r: r["path"])],
            )
        raise CliError("--via must be http, queue or blob")

    run(submit)


@job_app.command("list")
def job_list(ctx: typer.Context, workspace: str = WorkspaceOpt, experiment: str = ExperimentOpt):
    c = ctx.obj
    run(lambda: show(c, c.client.list(f"{c.client.experiment(workspace, experiment)}/jobs"), JOB_COLUMNS))


@job_app.command("show")
def job_show(ctx: typer.Context, name: str, workspace: str = WorkspaceOpt, experiment: str = ExperimentOpt):
    c = ctx.obj
    run(lambda: show(c, c.client.get(c.client.job(workspace, experiment, name)), JOB_COLUMNS))


@job_app.command("delete")
def job_delete(ctx: typer.Context, name: str, workspace: str = WorkspaceOpt, experiment: str = ExperimentOpt):
    c = ctx.obj
    run(lambda: c.client.delete(c.client.job(workspace, experiment, name)))


@job_app.command("terminate")
def job_terminate(ctx: typer.Context, name: str, workspace: str = WorkspaceOpt, experiment: str = ExperimentOpt):
    """Stop a job's processes on every node; it ends failed with a termination error."""
    c = ctx.obj
    run(lambda: c.client.post(f"{c.client.job(workspace, experiment, name)}/terminate"))


@job_app.command("wait")
def job_wait(
    ctx: typer.Context,
    name: str,
    workspace: str = WorkspaceOpt,
    experiment: str = ExperimentOpt,
    timeout: float = typer.Option(3600, help="Seconds."),
):
    """Wait until the job succeeds or fails; exit 1 when it failed."""
    c = ctx.obj

    def wait():
        path, deadline = c.client.job(workspace, experiment, name), time.time() + timeout
        while (job := c.client.get(path))["properties"]["executionState"] not in TERMINAL:
            if time.time() > deadline:
                raise CliError("timed out")
            time.sleep(0.5)
        show(c, job, JOB_COLUMNS)
        return job

    if run(wait)["properties"]["executionState"] != "succeeded":
        raise typer.Exit(1)


FILE_COLUMNS = [
    ("name", lambda r: r["name"]),
    ("type", lambda r: r["fileType"]),
    ("size", lambda r: r.get("properties", {}).get("contentLength")),
    ("modified", lambda r: r.get("properties", {}).get("lastModified")),
]


def list_files(client: Client, job_path: str, output_dir: str, directory: str = ".") -> list[dict]:
    return client.list(
        f"{job_path}/listOutputFiles", method="POST", outputdirectoryid=output_dir, directory=directory, linkexpiryinminutes=60
    )


@job_app.command("files")
def job_files(
    ctx: typer.Context,
    name: str,
    workspace: str = WorkspaceOpt,
    experiment: str = ExperimentOpt,
    output_dir: str = typer.Option("stdouterr", "--output-dir", "-d", help="stdouterr or an output directory id."),
    path: str = typer.Option(".", "--path", help="Sub-directory to list."),
):
    """List a job's log files or the files of one of its output directories."""
    c = ctx.obj
    run(lambda: show(c, list_files(c.client, c.client.job(workspace, experiment, name), output_dir, path), FILE_COLUMNS))


@job_app.command("logs")
def job_logs(
    ctx: typer.Context,
    name: str,
    workspace: str = WorkspaceOpt,
    experiment: str = ExperimentOpt,
    file: str | None = typer.Option(None, "--file", help="One log file (default: every stdout/stderr file)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming until the job ends."),
):
    """Print a job's stdout/stderr, optionally following it until the job ends."""
    c = ctx.obj

    def stream():
        client = c.client
        job_path = client.job(workspace, experiment, name)
        offsets: dict[str, int] = {}
        while True:
            state = client.get(job_path)["properties"]["executionState"]
            for entry in list_files(client, job_path, "stdouterr"):
                if entry["fileType"] != "file" or (file and entry["name"] != file) or entry["name"].startswith("execution"):
                    continue
                chunk = client.download(entry["downloadUrl"], offsets.get(entry["name"], 0))
                if chunk:
                    offsets[entry["name"]] = offsets.get(entry["name"], 0) + len(chunk)
                    for line in chunk.decode(errors="replace").splitlines():
                        print(f"[{entry['name']}] {line}" if not file else line, flush=True)
            if not follow or state in TERMINAL:
                return
            time.sleep(0.5)

    run(stream)


def field(name: str, within: str | None = None) -> Callable[[dict], Any]:
    """A table column: the row's `name` (in its `within` object), blank where it has none."""
    return lambda row: (row.get(within) or {} if within else row).get(name)


@job_app.command("metrics")
def job_metrics(ctx: typer.Context, name: str, workspace: str = WorkspaceOpt, experiment: str = ExperimentOpt):
    """What the job reported to $AZ_BATCHAI_METRICS_FILE, one row per line."""
    c = ctx.obj

    def metrics():
        data = c.client.get(f"{c.client.job(workspace, experiment, name)}/metrics")
        if c.as_json:
            print(json.dumps(data, indent=2))
            return
        names = list(dict.fromkeys(k for e in data["value"] for k in e))
        show(c, data["value"], [(k, field(k)) for k in names])

    run(metrics)


@app.command("metric")
def metric(
    values: list[str] = typer.Argument(..., help="NAME=NUMBER, one or more."),
    step: int | None = typer.Option(None, "--step", help="The training step these values are for."),
):
    """In a job: report metrics (a JSON line appended to $AZ_BATCHAI_METRICS_FILE, relayed by the node)."""
    path = os.environ.get("AZ_BATCHAI_METRICS_FILE")
    if not path:
        errors.print("error: AZ_BATCHAI_METRICS_FILE is not set (run this inside a job)")
        raise typer.Exit(1)
    line: dict[str, Any] = {} if step is None else {"step": step}
    for item in values:
        key, sep, text = item.partition("=")
        try:
            line[key] = float(text) if sep and key else None
        except ValueError:
            line[key] = None
        if line[key] is None:
            errors.print(f"error: {item!r} is not NAME=NUMBER")
            raise typer.Exit(1)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


# -- sweeps -----------------------------------------------------------------------------
def sweep_path(client: Client, workspace: str, experiment: str, name: str) -> str:
    return f"{client.experiment(workspace, experiment)}/sweeps/{name}"


SWEEP_COLUMNS = [
    ("name", lambda r: r["name"]),
    ("state", lambda r: r["properties"]["executionState"]),
    ("algorithm", lambda r: r["properties"]["sampling_algorithm"]["type"]),
    ("trials", lambda r: f"{len(r['properties']['trials'])}/{r['properties']['limits']['max_total_trials']}"),
    ("running", lambda r: r["properties"]["trialStateCounts"]["running"]),
    ("best", lambda r: (r["properties"]["bestTrial"] or {}).get("name")),
    ("best objective", lambda r: (r["properties"]["bestTrial"] or {}).get("objective")),
]


def read_sweep_file(path: Path) -> dict:
    """An Azure ML sweep job file, YAML or JSON (JSON is YAML)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise CliError(f"{path}: a sweep file is a mapping (search_space, objective, ...)")
    return data


@sweep_app.command("create")
def sweep_create(
    ctx: typer.Context,
    name: str,
    workspace: str = WorkspaceOpt,
    experiment: str = ExperimentOpt,
    sweep_file: Path = typer.Option(..., "--file", "-f", help="An Azure ML sweep job file (YAML or JSON)."),
):
    """Start a sweep: its trials are jobs of the experiment, named NAME-0, NAME-1, ..."""
    c = ctx.obj
    run(
        lambda: show(
            c, c.client.put(sweep_path(c.client, workspace, experiment, name), {"properties": read_sweep_file(sweep_file)}), SWEEP_COLUMNS
        )
    )


@sweep_app.command("list")
def sweep_list(ctx: typer.Context, workspace: str = WorkspaceOpt, experiment: str = ExperimentOpt):
    c = ctx.obj
    run(lambda: show(c, c.client.list(f"{c.client.experiment(workspace, experiment)}/sweeps"), SWEEP_COLUMNS))


@sweep_app.command("show")
def sweep_show(ctx: typer.Context, name: str, workspace: str = WorkspaceOpt, experiment: str = ExperimentOpt):
    """The sweep, its trials sorted by the objective (best first) with their parameters and state, and the best trial."""
    c = ctx.obj

    def show_sweep():
        data = c.client.get(sweep_path(c.client, workspace, experiment, name))
        if c.as_json:
            print(json.dumps(data, indent=2))
            return
        show(c, data, SWEEP_COLUMNS)
        props = data["properties"]
        sign = 1 if props["objective"]["goal"] == "minimize" else -1
        trials = sorted(props["trials"], key=lambda t: (t["objective"] is None, sign * (t["objective"] or 0), t["number"]))
        names = list(props["search_space"])
        metric = props["objective"]["primary_metric"]
        columns: list[tuple[str, Callable[[Any], Any]]] = [
            ("trial", itemgetter("name")),
            ("state", itemgetter("state")),
            (metric, itemgetter("objective")),
            ("step", itemgetter("lastStep")),
        ]
        show(c, trials, columns + [(n, field(n, "parameters")) for n in names])
        best = props["bestTrial"]
        console.print(f"best trial: {best['name']} ({metric} {best['objective']}) {best['parameters']}" if best else "best trial: none yet")

    run(show_sweep)


@sweep_app.command("cancel")
def sweep_cancel(ctx: typer.Context, name: str, workspace: str = WorkspaceOpt, experiment: str = ExperimentOpt):
    """Stop every trial of the sweep; it ends canceled."""
    c = ctx.obj
    run(lambda: show(c, c.client.post(f"{sweep_path(c.client, workspace, experiment, name)}/cancel", wait=False).json(), SWEEP_COLUMNS))


@queue_app.command("show")
def queue_show(ctx: typer.Context):
    """Messages waiting per priority, and dead letters with their reasons (Service Bus with BATCHAI_SERVICEBUS)."""
    c = ctx.obj

    def report():
        with queue_client(c.data_dir) as queue:
            depth = [{"priority": p, "messages": n} for p, n in queue.depth().items()]
            dead = queue.dead_letters()
        show(c, depth, [("priority", lambda r: r["priority"]), ("messages", lambda r: r["messages"])])
        show(
            c,
            dead,
            [
                ("message id", lambda r: r["id"]),
                ("priority", lambda r: r["priority"]),
                ("reason", lambda r: r["reason"]),
                ("description", lambda r: r["description"]),
            ],
        )

    run(report)


dashboard.register(app)


def entrypoint():
    app(prog_name="batchai")


if __name__ == "__main__":
    sys.exit(entrypoint())
