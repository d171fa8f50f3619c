"""`cluster node list|exec|evict` and `job node list|exec`: the nodes, and sessions on them.

`exec` runs `--exec COMMAND` on the node (inside the job's task for `job node exec`), gives a login
shell without it (cluster nodes), and with `-L LOCAL:HOST:PORT` forwards 127.0.0.1:LOCAL to
HOST:PORT as the node sees it (TensorBoard, Jupyter, a job's server) until Ctrl-C, or while the
command runs. It exits with the command's exit code. The control plane checks the user's token and
hands out a short-lived ticket for the node; the node's agent accepts nothing else.
"""

from __future__ import annotations

import signal
import sys
import threading

import typer

from batchai.cli.client import Client, CliError
from batchai.cli.common import ExperimentOpt, WorkspaceOpt, cluster_node_app, job_node_app, named, run, show
from batchai.cli.remote import Forward, Forwarder, Session, execute

NODE_COLUMNS = [
    ("node", lambda r: r["nodeId"]),
    ("address", lambda r: r["ipAddress"]),
    ("port", lambda r: r["port"]),
    ("gpus", lambda r: len(r.get("gpus") or [])),
]
NodeOpt = typer.Option(None, "--node-id", "-n", help="The node (default: the first one).")
ExecOpt = typer.Option(None, "--exec", help="The command line to run (default: a login shell, unless -L is given).")
AddressOpt = typer.Option([], "--address", "-L", help="LOCAL_PORT:HOST:PORT, forwarded from this machine through the node.")


def _nodes(client: Client, resource: str) -> list[dict]:
    return client.list(f"{resource}/listRemoteLoginInformation", method="POST")


@cluster_node_app.command("list")
@named("cluster", "--cluster", "-c")
def cluster_node_list(ctx: typer.Context, cluster: str, workspace: str = WorkspaceOpt):
    """The cluster's nodes, with the address and port of their agents (listRemoteLoginInformation)."""
    c = ctx.obj
    run(lambda: show(c, _nodes(c.client, c.client.cluster(workspace, cluster)), NODE_COLUMNS))


@job_node_app.command("list")
@named("job", "--job", "-j")
def job_node_list(ctx: typer.Context, job: str, workspace: str = WorkspaceOpt, experiment: str = ExperimentOpt):
    """The nodes the job runs on (none once it has ended)."""
    c = ctx.obj
    run(lambda: show(c, _nodes(c.client, c.client.job(workspace, experiment, job)), NODE_COLUMNS))


@cluster_node_app.command("evict")
def cluster_node_evict(ctx: typer.Context, cluster: str, node: str, workspace: str = WorkspaceOpt):
    """Ours: take a low-priority node back as the platform would (its job is requeued; a new node comes)."""
    c = ctx.obj
    run(lambda: show(c, c.client.post(f"{c.client.cluster(workspace, cluster)}/nodes/{node}/evict", wait=False).json()))


def _session(client: Client, resource: str, node: str) -> Session:
    return lambda body: client.request("POST", f"{resource}/nodes/{node}/execSession", json=body).json()


def _exec(c, resource: str, node: str | None, command: str | None, addresses: list[str]) -> None:
    forwards = [Forward.parse(a) for a in addresses]
    client = c.client
    if node is None:
        nodes = _nodes(client, resource)
        if not nodes:
            raise CliError("there is no node to run on (a job's nodes are listed while it runs)")
        node = nodes[0]["nodeId"]
    session = _session(client, resource, node)
    stop = threading.Event()
    if forwards:
        forwarder = Forwarder(session, forwards)
        for port, forward in forwarder.bound():
            print(f"forwarding 127.0.0.1:{port} -> {forward.host}:{forward.port} on {node}", file=sys.stderr, flush=True)
        thread = threading.Thread(target=forwarder.serve, args=(stop,), daemon=True)
        thread.start()
        if command is None:
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                stop.set()
            thread.join()
            return
    try:
        code = execute(session, command)
    finally:
        stop.set()
    raise typer.Exit(code)


@cluster_node_app.command("exec")
@named("cluster", "--cluster", "-c")
def cluster_node_exec(
    ctx: typer.Context,
    cluster: str,
    workspace: str = WorkspaceOpt,
    node: str | None = NodeOpt,
    command: str | None = ExecOpt,
    address: list[str] = AddressOpt,
):
    """Run a command or a shell on a node, or forward ports through it (as `az batchai cluster node exec`)."""
    c = ctx.obj
    run(lambda: _exec(c, c.client.cluster(workspace, cluster), node, command, address))


@job_node_app.command("exec")
@named("job", "--job", "-j")
def job_node_exec(
    ctx: typer.Context,
    job: str,
    workspace: str = WorkspaceOpt,
    experiment: str = ExperimentOpt,
    node: str | None = NodeOpt,
    command: str | None = ExecOpt,
    address: list[str] = AddressOpt,
):
    """Run a command inside the job's task on one of its nodes (its environment and directory), or
    forward ports to what the job serves there."""
    c = ctx.obj

    def go():
        if command is None and not address:
            raise CliError("give --exec COMMAND or -L LOCAL:HOST:PORT (a shell is the cluster's: cluster node exec)")
        _exec(c, c.client.job(workspace, experiment, job), node, command, address)

    run(go)
