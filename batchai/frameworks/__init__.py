"""Launch plans: a job and its placement in, per-node tasks out. Pure functions, one module per toolkit."""

from __future__ import annotations

from batchai.frameworks import caffe, caffe2, custom, mpi, pytorch, tensorflow
from batchai.frameworks.context import LaunchContext, PlacedNode
from batchai.frameworks.environment import JobPaths, job_paths
from batchai.frameworks.plan import NodeTask, Process

PLANNERS = {
    "custom": custom.plan,
    "pytorch": pytorch.plan,
    "tensorflow": tensorflow.plan,
    "horovod": mpi.horovod,
    "custommpi": mpi.custom_mpi,
    "chainer": mpi.chainer,
    "cntk": mpi.cntk,
    "caffe": caffe.plan,
    "caffe2": caffe2.plan,
}


class UnsupportedToolkit(Exception):
    pass


def plan_job(props, ctx: LaunchContext) -> list[NodeTask]:
    planner = PLANNERS.get(props.tool_type)
    if planner is None:
        raise UnsupportedToolkit(f"toolkit '{props.tool_type}' has no launch plan")
    return planner(props, ctx)


__all__ = ["LaunchContext", "PlacedNode", "JobPaths", "job_paths", "plan_job", "NodeTask", "Process", "UnsupportedToolkit"]
