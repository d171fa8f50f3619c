"""MPI toolkits: horovodSettings, customMpiSettings, chainerSettings and cntkSettings.

`processCount` ranks (default nodeCount) are spread over the job's nodes in the host file
(`AZ_BATCHAI_MPI_HOST_FILE`, `name slots=k` per node); only the first node runs `mpirun`,
whose remote launches reach the other nodes through their agents (the context's `mpirun`
carries the options that make that so), and the other nodes hold themselves for it. Ranks
started on a node get that node's own job environment, so nothing is forwarded with `-x`.
All ranks' output arrives through `mpirun`: stdout.txt / stderr.txt on the first node.

CNTK and Caffe with a single process run directly, as the service did without MPI.
"""

from __future__ import annotations

from batchai.frameworks.common import first_node_only, python_command, split_ranks
from batchai.frameworks.context import LaunchContext
from batchai.frameworks.plan import NodeTask


def mpi_plan(props, ctx: LaunchContext, command: str, process_count: int) -> list[NodeTask]:
    """`command` run as `process_count` MPI ranks over the job's nodes."""
    slots = [len(r) for r in split_ranks(process_count, len(ctx.nodes))]
    launch = f"{ctx.mpirun} -np {process_count} --hostfile $AZ_BATCHAI_MPI_HOST_FILE {command}"
    return first_node_only(props, ctx, launch, slots)


def mpi_or_single(props, ctx: LaunchContext, command: str, process_count: int) -> list[NodeTask]:
    return mpi_plan(props, ctx, command, process_count) if process_count > 1 else first_node_only(props, ctx, command)


def horovod(props, ctx: LaunchContext) -> list[NodeTask]:
    s = props.horovod_settings
    return mpi_plan(props, ctx, python_command(s, ctx), s.process_count or props.node_count)


def chainer(props, ctx: LaunchContext) -> list[NodeTask]:
    s = props.chainer_settings
    return mpi_plan(props, ctx, python_command(s, ctx), s.process_count or props.node_count)


def custom_mpi(props, ctx: LaunchContext) -> list[NodeTask]:
    s = props.custom_mpi_settings
    return mpi_plan(props, ctx, s.command_line, s.process_count or props.node_count)


def cntk(props, ctx: LaunchContext) -> list[NodeTask]:
    s = props.cntk_settings
    if s.language_type == "BrainScript":
        command = " ".join(["cntk", f"configFile={s.config_file_path}"] + ([s.command_line_args] if s.command_line_args else []))
    else:
        command = python_command(s, ctx)
    return mpi_or_single(props, ctx, command, s.process_count or props.node_count)
