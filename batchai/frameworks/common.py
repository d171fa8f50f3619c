"""Pieces every launch plan shares: per-node tasks with job preparation, log file names."""

from __future__ import annotations

from dataclasses import replace

from batchai.frameworks.container import PASSWORD_ENV, container_spec
from batchai.frameworks.context import LaunchContext, PlacedNode
from batchai.frameworks.environment import node_dirs, node_environment
from batchai.frameworks.plan import NodeTask, Process
from batchai.output_sync import STDOUTERR


def log_process(stdouterr: str, name: str, command: str, env: dict[str, str] | None = None, *, daemon: bool = False) -> Process:
    stem = f"-{name}" if name else ""
    return Process(
        name=name,
        command=command,
        stdout=f"{stdouterr}/stdout{stem}.txt",
        stderr=f"{stdouterr}/stderr{stem}.txt",
        env=env or {},
        daemon=daemon,
    )


def python_command(settings, ctx: LaunchContext, args: str | None = None) -> str:
    """`interpreter script args`; `args` defaults to the settings' `commandLineArgs`."""
    parts = [settings.python_interpreter_path or ctx.python, settings.python_script_file_path]
    args = settings.command_line_args if args is None else args
    return " ".join(parts + ([args] if args else []))


def host_file(ctx: LaunchContext, slots: list[int]) -> str:
    """OpenMPI host file: one line per node of the job, with its share of the ranks."""
    return "".join(f"{n.name} slots={s}\n" for n, s in zip(ctx.nodes, slots, strict=True))


def split_ranks(process_count: int, node_count: int) -> list[list[int]]:
    """Contiguous, as even as possible: 5 ranks on 2 nodes -> [[0, 1, 2], [3, 4]]."""
    base, extra = divmod(process_count, node_count)
    out, start = [], 0
    for i in range(node_count):
        size = base + (1 if i < extra else 0)
        out.append(list(range(start, start + size)))
        start += size
    return out


def node_task(props, ctx: LaunchContext, node: PlacedNode, processes_for, slots: list[int]) -> NodeTask:
    """A node's task: environment, directories, host file and preparation, plus its processes.

    `processes_for(env, stdouterr)` returns the node's processes; it gets the node's environment
    so per-process variables can build on it.
    """
    env = node_environment(props, ctx, node)
    stdouterr = env["AZ_BATCHAI_STDOUTERR_DIR"]
    prep = None
    if props.job_preparation is not None:
        prep = log_process(stdouterr, "job_prep", props.job_preparation.command_line)
    task_id = f"{ctx.job_uuid}-{ctx.attempt}-{node.name}"
    container = None
    if props.container_settings is not None:
        container = container_spec(props.container_settings, task_id, [*ctx.binds(node), *node_dirs(env)], list(node.gpus))
        creds = props.container_settings.image_source_registry.credentials
        if creds is not None and creds.password:
            env[PASSWORD_ENV] = creds.password
    return NodeTask(
        task_id=task_id,
        job_id=ctx.job_id,
        node_id=node.id,
        cwd=env["AZ_BATCHAI_JOB_TEMP"],
        env=env,
        execution_log=f"{stdouterr}/execution-{node.name}.log",
        dirs=node_dirs(env),
        files={env["AZ_BATCHAI_MPI_HOST_FILE"]: host_file(ctx, slots)},
        preparation=prep,
        processes=processes_for(env, stdouterr),
        container=container,
        uploads=uploads(props, env) if ctx.node_local else {},
    )


def uploads(props, env: dict[str, str]) -> dict[str, str]:
    """The job's directories on a node of another machine, by output directory id: its agent sends
    what the job writes there to the control plane."""
    return {STDOUTERR: env["AZ_BATCHAI_STDOUTERR_DIR"], **{d.id: env[f"AZ_BATCHAI_OUTPUT_{d.id}"] for d in props.output_directories or []}}


def first_node_only(props, ctx: LaunchContext, command: str, slots: list[int] | None = None) -> list[NodeTask]:
    """`command` as one process on the first node; the job's other nodes are held for it."""
    slots = slots or [max(ctx.gpus_per_node, 1)] * len(ctx.nodes)
    return [
        node_task(props, ctx, node, (lambda env, out: [log_process(out, "", command)]) if i == 0 else (lambda env, out: []), slots)
        for i, node in enumerate(ctx.nodes)
    ]


def servers_task(main: NodeTask, servers: list[Process]) -> NodeTask:
    """A node's servers (daemon processes, e.g. TensorFlow parameter servers) as a task of their
    own beside `main`: it holds the node, so the servers live until the whole job ends instead
    of stopping with this node's workers, and it starts once `main` has prepared the node."""
    task_id = f"{main.task_id}-servers"
    container = replace(main.container, name=f"batchai-{task_id}"[:128]) if main.container else None
    return replace(main, task_id=task_id, files={}, dirs=[], preparation=None, processes=servers, after=main.task_id, container=container)
