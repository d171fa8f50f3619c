"""`batchai`: run the embedded control plane, and drive any Batch AI endpoint from the shell.

Human tables by default; `-o json|jsonc|tsv|yaml` and `--query` (JMESPath) for scripts, as `az batchai`.
The groups live in modules beside this one (batchai/cli/common.py has what they share); this one
has serve, workspaces, clusters, experiments, jobs, sweeps and the queue.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from operator import itemgetter
from pathlib import Path
from typing import Any

import typer

import batchai.cli.nodes  # noqa: F401 - registers its commands
import batchai.cli.resources  # noqa: F401 - registers its commands
from batchai.cli import clusters, dashboard, files, security, storage  # noqa: F401 - files registers its commands
from batchai.cli.client import Client, CliError
from batchai.cli.clusters import CLUSTER_COLUMNS
from batchai.cli.common import (
    DEFAULT_DATA_DIR,
    TERMINAL,
    ExperimentOpt,
    NoWaitOpt,
    WorkspaceOpt,
    YesOpt,
    app,
    cluster_app,
    cluster_node_app,
    confirm,
    console,
    errors,
    experiment_app,
    field,
    hoist_globals,
    job_app,
    named,
    node_app,
    queue_app,
    queue_client,
    run,
    show,
    sweep_app,
    workspace_app,
)
from batchai.cli.files import FILE_COLUMNS, list_files

DEFAULT_NODE_ROOT = Path.home() / ".batchai-node"


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
@named("name", "--name", "-n")
def workspace_create(ctx: typer.Context, name: str, location: str = typer.Option("local", "--location", "-l")):
    c = ctx.obj
    run(lambda: show(c, c.client.put(c.client.workspace(name), {"location": location}), WS_COLUMNS))


@workspace_app.command("list")
def workspace_list(ctx: typer.Context):
    c = ctx.obj
    path = f"/subscriptions/{c.subscription}/resourceGroups/{c.resource_group}/providers/Microsoft.BatchAI/workspaces"
    run(lambda: show(c, c.client.list(path), WS_COLUMNS))


@workspace_app.command("show")
@named("name", "--name", "-n")
def workspace_show(ctx: typer.Context, name: str):
    c = ctx.obj
    run(lambda: show(c, c.client.get(c.client.workspace(name)), WS_COLUMNS))


@workspace_app.command("delete")
@named("name", "--name", "-n")
def workspace_delete(ctx: typer.Context, name: str, yes: bool = YesOpt, no_wait: bool = NoWaitOpt):
    """Delete a workspace with all its clusters, experiments and jobs."""
    c = ctx.obj
    confirm(yes, f"the workspace '{name}' with all its clusters, file servers, experiments and jobs")
    run(lambda: c.client.delete(c.client.workspace(name), wait=not no_wait))


# -- clusters ---------------------------------------------------------------------------
@cluster_app.command("create")
@named("name", "--name")
@storage.with_storage_flags
@clusters.with_admin_flags
def cluster_create(
    ctx: typer.Context,
    name: str,
    mounts: storage.Storage,  # from with_storage_flags
    admin: clusters.AdminFlags,  # from with_admin_flags
    workspace: str = WorkspaceOpt,
    config_file: Path | None = typer.Option(
        None, "--config-file", "-f", help="ClusterCreateParameters as JSON (its properties); the flags override it."
    ),
    nodes: int | None = typer.Option(
        None, "--nodes", "-n", "--target", "-t", help="Node count: the target (manual scale) or the initial count (auto scale). Default 1."
    ),
    min_nodes: int | None = typer.Option(None, "--min", help="Auto scale: the fewest nodes (with --max)."),
    max_nodes: int | None = typer.Option(None, "--max", help="Auto scale: the most nodes (with --min)."),
    vm_size: str | None = typer.Option(None, "--vm-size", "-s", help="VM size (default STANDARD_D1_V2)."),
    vm_priority: str | None = typer.Option(None, "--vm-priority", help="dedicated or lowpriority."),
    low_priority: bool = typer.Option(False, "--low-priority", help="The same as --vm-priority lowpriority."),
    image: str | None = typer.Option(None, "--image", "-i", help="publisher:offer:sku:version, or UbuntuLTS / UbuntuDSVM."),
    custom_image: str | None = typer.Option(None, "--custom-image", help="ARM id of a VM image made from --image."),
    setup_task: str | None = typer.Option(None, "--setup-task", help="A command line every node runs as it joins."),
    setup_task_output: str | None = typer.Option(None, "--setup-task-output", help="Where its logs go (e.g. $AZ_BATCHAI_MOUNT_ROOT/logs)."),
    subnet: str | None = typer.Option(None, "--subnet", help="ARM id of the virtual network subnet for the nodes."),
    attached: bool = typer.Option(False, "--attached", help="Nodes are machines that join (batchai node join); --nodes is unused."),
    wait: bool = typer.Option(True, help="Wait until the cluster's allocation is steady (every node joined)."),
):
    """Create a cluster, from flags as `az batchai cluster create` or from a config file."""
    c = ctx.obj

    def create():
        props = clusters.read_config(config_file, mounts.placeholders()) if config_file else {}
        clusters.apply_flags(
            props,
            vm_size=vm_size,
            vm_priority="lowpriority" if low_priority else vm_priority,
            scale=clusters.scale_settings(0 if attached else nodes, min_nodes, max_nodes),
            image=clusters.image_reference(image, custom_image) if image or custom_image else None,
            account=admin.account(props.get("userAccountSettings")),
            subnet=subnet,
            setup=clusters.setup_task(setup_task, setup_task_output),
        )
        volumes = mounts.apply(
            (props.get("nodeSetup") or {}).get("mountVolumes"), lambda fs: clusters.file_server_id(c.client, workspace, fs)
        )
        if volumes:
            props.setdefault("nodeSetup", {})["mountVolumes"] = volumes
        if attached:
            props["attached"] = True
        path = c.client.cluster(workspace, name)
        cluster = c.client.put(path, {"properties": props})
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
@named("name", "--name", "-n")
def cluster_show(ctx: typer.Context, name: str, workspace: str = typer.Option(..., "--workspace", "-w")):
    c = ctx.obj
    run(lambda: show(c, c.client.get(c.client.cluster(workspace, name)), CLUSTER_COLUMNS))


@cluster_app.command("delete")
@named("name", "--name", "-n")
def cluster_delete(ctx: typer.Context, name: str, workspace: str = WorkspaceOpt, yes: bool = YesOpt, no_wait: bool = NoWaitOpt):
    """Delete a cluster: its nodes leave, its running jobs fail."""
    c = ctx.obj
    confirm(yes, f"the cluster '{name}' and its nodes")
    run(lambda: c.client.delete(c.client.cluster(workspace, name), wait=not no_wait))


@cluster_app.command("enroll-token")
@named("name", "--name", "-n")
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
@named("name", "--name", "-n")
def experiment_create(ctx: typer.Context, name: str, workspace: str = typer.Option(..., "--workspace", "-w")):
    c = ctx.obj
    run(lambda: show(c, c.client.put(c.client.experiment(workspace, name)), EXP_COLUMNS))


@experiment_app.command("list")
def experiment_list(ctx: typer.Context, workspace: str = typer.Option(..., "--workspace", "-w")):
    c = ctx.obj
    run(lambda: show(c, c.client.list(f"{c.client.workspace(workspace)}/experiments"), EXP_COLUMNS))


@experiment_app.command("show")
@named("name", "--name", "-n")
def experiment_show(ctx: typer.Context, name: str, workspace: str = typer.Option(..., "--workspace", "-w")):
    c = ctx.obj
    run(lambda: show(c, c.client.get(c.client.experiment(workspace, name)), EXP_COLUMNS))


@experiment_app.command("delete")
@named("name", "--name", "-n")
def experiment_delete(ctx: typer.Context, name: str, workspace: str = WorkspaceOpt, yes: bool = YesOpt, no_wait: bool = NoWaitOpt):
    c = ctx.obj
    confirm(yes, f"the experiment '{name}' and its jobs")
    run(lambda: c.client.delete(c.client.experiment(workspace, name), wait=not no_wait))


# -- jobs -------------------------------------------------------------------------------
JOB_COLUMNS = [
    ("name", lambda r: r["name"]),
    ("tool", lambda r: r["properties"].get("toolType")),
    ("nodes", lambda r: r["properties"].get("nodeCount")),
    ("state", lambda r: r["properties"].get("executionState")),
    ("exit code", lambda r: r["properties"].get("executionInfo", {}).get("exitCode")),
    ("started", lambda r: r["properties"].get("executionInfo", {}).get("startTime")),
    ("ended", lambda r: r["properties"].get("executionInfo", {}).get("endTime")),
    ("tasks", lambda r: _task_counts(r["properties"].get("arrayInfo"))),
]

TASK_COLUMNS = [
    ("index", lambda r: r["properties"]["index"]),
    ("state", lambda r: r["properties"]["executionState"]),
    ("attempts", lambda r: r["properties"]["attempts"]),
    ("nodes", lambda r: ",".join(r["properties"]["nodes"])),
    ("exit code", lambda r: r["properties"].get("executionInfo", {}).get("exitCode")),
    ("started", lambda r: r["properties"].get("executionInfo", {}).get("startTime")),
    ("ended", lambda r: r["properties"].get("executionInfo", {}).get("endTime")),
]


def _task_counts(info: dict | None) -> str | None:
    """An array job's tasks per state, e.g. `3 running, 197 succeeded of 200`."""
    if not info:
        return None
    states = [f"{info[k]} {k.removesuffix('TaskCount')}" for k in info if k != "taskCount" and info[k]]
    return f"{', '.join(states)} of {info['taskCount']}"


def job_body(
    client: Client,
    workspace: str,
    cluster: str | None,
    job_file: Path | None,
    command: str | None,
    nodes: int | None,
    placeholders: list[str],
    mounts: storage.Storage | None = None,
) -> dict:
    from batchai.errors import ApiError
    from batchai.model import load_job_file

    cluster_id = (cluster if cluster.startswith("/subscriptions/") else client.cluster(workspace, cluster)) if cluster else None
    if job_file is not None:
        values = {**(mounts.placeholders() if mounts else {}), **dict(p.split("=", 1) for p in placeholders)}
        try:
            raw = json.loads(job_file.read_text())
            params = load_job_file(raw, cluster_id=cluster_id, placeholders=values, node_count=nodes)
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read {job_file}: {exc}") from None
        except ApiError as exc:
            raise CliError(f"{job_file}: {exc.message}" + (f" ({exc.target})" if exc.target else "")) from None
        props = params.properties.to_wire()
    elif command is None:
        raise CliError("give a job file (-f) or a command line (--command)")
    elif cluster_id is None:
        raise CliError("--cluster is required")
    else:
        props = {
            "cluster": {"id": cluster_id},
            "nodeCount": nodes or 1,
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT",
            "customToolkitSettings": {"commandLine": command},
        }
    if mounts is not None:
        volumes = mounts.apply(props.get("mountVolumes"), lambda fs: clusters.file_server_id(client, workspace, fs))
        if volumes:
            props["mountVolumes"] = volumes
    return {"properties": props}


@job_app.command("create")
@named("name", "--name")
@storage.with_storage_flags
def job_create(
    ctx: typer.Context,
    name: str,
    mounts: storage.Storage,  # from with_storage_flags
    workspace: str = WorkspaceOpt,
    experiment: str = ExperimentOpt,
    cluster: str | None = typer.Option(None, "--cluster", "-c", help="Cluster name in the workspace, or its ARM id."),
    job_file: Path | None = typer.Option(
        None, "--config-file", "--file", "-f", help="An original Batch AI job file (job.json), or JobCreateParameters."
    ),
    command: str | None = typer.Option(None, "--command", help="A custom-toolkit command line instead of a file."),
    nodes: int | None = typer.Option(None, "--nodes", "-n", help="Node count (overrides the file)."),
    placeholder: list[str] = typer.Option([], "--placeholder", "-p", help="NAME=VALUE for <NAME> in the job file."),
    array: int | None = typer.Option(None, "--array", help="An array job of this many tasks (AZ_BATCHAI_TASK_INDEX tells each)."),
    max_parallel: int | None = typer.Option(None, "--max-parallel", help="Array: at most this many tasks running at once."),
    max_task_retries: int | None = typer.Option(None, "--max-task-retries", help="Array: retries of a failed task (default 0)."),
):
    """Submit a job: from an original job file, or a command line. Storage mounts go under
    $AZ_BATCHAI_JOB_MOUNT_ROOT, on the job's nodes only. With --array, `count` tasks of it."""
    c = ctx.obj

    def create():
        body = job_body(c.client, workspace, cluster, job_file, command, nodes, placeholder, mounts)
        if array is not None:
            settings = {"count": array, "maxParallel": max_parallel, "maxTaskRetries": max_task_retries}
            body["properties"]["arraySettings"] = {k: v for k, v in settings.items() if v is not None}
        elif max_parallel is not None or max_task_retries is not None:
            raise CliError("--max-parallel and --max-task-retries need --array")
        show(c, c.client.put(c.client.job(workspace, experiment, name), body), JOB_COLUMNS)

    run(create)


@job_app.command("submit")
@named("name", "--name", "-n")
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


@job_app.command("tasks")
@named("name", "--name", "-n")
def job_tasks(ctx: typer.Context, name: str, workspace: str = WorkspaceOpt, experiment: str = ExperimentOpt):
    """An array job's tasks: index, state, attempts, nodes."""
    c = ctx.obj
    run(lambda: show(c, c.client.list(f"{c.client.job(workspace, experiment, name)}/tasks"), TASK_COLUMNS))


@job_app.command("show")
@named("name", "--name", "-n")
def job_show(ctx: typer.Context, name: str, workspace: str = WorkspaceOpt, experiment: str = ExperimentOpt):
    c = ctx.obj
    run(lambda: show(c, c.client.get(c.client.job(workspace, experiment, name)), JOB_COLUMNS))


@job_app.command("delete")
@named("name", "--name", "-n")
def job_delete(
    ctx: typer.Context,
    name: str,
    workspace: str = WorkspaceOpt,
    experiment: str = ExperimentOpt,
    yes: bool = YesOpt,
    no_wait: bool = NoWaitOpt,
):
    c = ctx.obj
    confirm(yes, f"the job '{name}'")
    run(lambda: c.client.delete(c.client.job(workspace, experiment, name), wait=not no_wait))


@job_app.command("terminate")
@named("name", "--name", "-n")
def job_terminate(ctx: typer.Context, name: str, workspace: str = WorkspaceOpt, experiment: str = ExperimentOpt, no_wait: bool = NoWaitOpt):
    """Stop a job's processes on every node; it ends failed with a termination error."""
    c = ctx.obj
    run(lambda: c.client.post(f"{c.client.job(workspace, experiment, name)}/terminate", wait=not no_wait))


@job_app.command("wait")
@named("name", "--name", "-n")
def job_wait(
    ctx: typer.Context,
    name: str,
    workspace: str = WorkspaceOpt,
    experiment: str = ExperimentOpt,
    timeout: float = typer.Option(3600, help="Seconds."),
    interval: float = typer.Option(0.5, "--interval", help="Seconds between polls."),
):
    """Wait until the job succeeds or fails. A failed job makes it exit with the job's exit code (as
    az's; 1 when the job has none, e.g. terminated, or its code is 0 or a multiple of 256)."""
    c = ctx.obj

    def wait():
        path, deadline = c.client.job(workspace, experiment, name), time.time() + timeout
        while (job := c.client.get(path))["properties"]["executionState"] not in TERMINAL:
            if time.time() > deadline:
                raise CliError(f"timed out after {timeout:g} s; the job is {job['properties']['executionState']}")
            time.sleep(max(0.1, interval))
        show(c, job, JOB_COLUMNS)
        return job

    job = run(wait)
    if job["properties"]["executionState"] != "succeeded":
        code = (job["properties"].get("executionInfo") or {}).get("exitCode")
        raise typer.Exit(code % 256 if isinstance(code, int) and code % 256 else 1)


@job_app.command("files")
@named("name", "--name", "-n")
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
@named("name", "--name", "-n")
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


@job_app.command("metrics")
@named("name", "--name", "-n")
def job_metrics(ctx: typer.Context, name: str, workspace: str = WorkspaceOpt, experiment: str = ExperimentOpt):
    """What the job reported to $AZ_BATCHAI_METRICS_FILE, one row per line."""
    c = ctx.obj

    def metrics():
        data = c.client.get(f"{c.client.job(workspace, experiment, name)}/metrics")
        if c.as_json:
            show(c, data)
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
@named("name", "--name", "-n")
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
@named("name", "--name", "-n")
def sweep_show(ctx: typer.Context, name: str, workspace: str = WorkspaceOpt, experiment: str = ExperimentOpt):
    """The sweep, its trials sorted by the objective (best first) with their parameters and state, and the best trial."""
    c = ctx.obj

    def show_sweep():
        data = c.client.get(sweep_path(c.client, workspace, experiment, name))
        if c.as_json:
            show(c, data)
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
@named("name", "--name", "-n")
def sweep_cancel(ctx: typer.Context, name: str, workspace: str = WorkspaceOpt, experiment: str = ExperimentOpt):
    """Stop every trial of the sweep; it ends canceled."""
    c = ctx.obj
    run(lambda: show(c, c.client.post(f"{sweep_path(c.client, workspace, experiment, name)}/cancel", wait=False).json(), SWEEP_COLUMNS))


QUEUE_COLUMNS = [
    ("#", lambda r: r["position"]),
    ("job", lambda r: r["name"]),
    ("experiment", lambda r: r["experiment"]),
    ("priority", lambda r: r["priority"]),
    ("nodes", lambda r: r["nodeCount"]),
    ("waits because", lambda r: r["reason"]["code"]),
    ("", lambda r: r["reason"]["message"]),
]


@queue_app.command("show")
def queue_show(
    ctx: typer.Context,
    cluster: str | None = typer.Option(None, "--cluster", "-c", help="A cluster's job queue instead (with -w)."),
    workspace: str | None = typer.Option(None, "--workspace", "-w", help="The cluster's workspace."),
):
    """Messages waiting per priority, and dead letters with their reasons (Service Bus with BATCHAI_SERVICEBUS);
    with -c, the cluster's queued jobs in the order they will start, and why each one waits."""
    c = ctx.obj

    def cluster_queue():
        if not workspace:
            raise CliError("--cluster needs --workspace")
        data = c.client.get(f"{c.client.cluster(workspace, cluster)}/queue")
        if c.as_json:
            return show(c, data)
        show(c, data["value"], QUEUE_COLUMNS)
        state = "paused" if data["paused"] else f"{data['idleNodes']} idle of {data['usableNodes']} usable nodes"
        console.print(f"{cluster}: {state}" + (" (more jobs wait behind these)" if data.get("more") else ""))

    def report():
        with queue_client(c.data_dir) as queue:
            depth = [{"priority": p, "messages": n} for p, n in queue.depth().items()]
            dead = queue.dead_letters()
        if c.as_json:
            return show(c, {"depth": depth, "deadLetters": dead})
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

    run(cluster_queue if cluster else report)


security.register(app, run, show)


dashboard.register(app)


def entrypoint():
    app(args=hoist_globals(sys.argv[1:]), prog_name="batchai")


if __name__ == "__main__":
    sys.exit(entrypoint())
