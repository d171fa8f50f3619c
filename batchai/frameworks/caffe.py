"""caffeSettings: `caffe train --solver=<configFilePath>` or a Python script, over MPI when
`processCount` > 1 (the service's Caffe images were built with MPI support)."""

from __future__ import annotations

from batchai.frameworks.common import python_command
from batchai.frameworks.context import LaunchContext
from batchai.frameworks.mpi import mpi_or_single
from batchai.frameworks.plan import NodeTask


def plan(props, ctx: LaunchContext) -> list[NodeTask]:
    s = props.caffe_settings
    if s.config_file_path:
        command = " ".join(["caffe", "train", f"--solver={s.config_file_path}"] + ([s.command_line_args] if s.command_line_args else []))
    else:
        command = python_command(s, ctx)
    return mpi_or_single(props, ctx, command, s.process_count or 1)
