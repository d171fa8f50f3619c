"""caffe2Settings: one process per node, shard index = `AZ_BATCHAI_TASK_INDEX`.

The processes rendezvous through `AZ_BATCHAI_SHARED_JOB_TEMP` (the recipe passes it as
`--file_store_path`), which every node of the job sees. Node i logs to stdout-i.txt / stderr-i.txt.
"""

from __future__ import annotations

from batchai.frameworks.common import log_process, node_task, python_command
from batchai.frameworks.context import LaunchContext
from batchai.frameworks.plan import NodeTask


def plan(props, ctx: LaunchContext) -> list[NodeTask]:
    command = python_command(props.caffe2_settings, ctx)

    def processes(shard: int):
        return lambda env, out: [log_process(out, str(shard), command, {"AZ_BATCHAI_TASK_INDEX": str(shard)})]

    slots = [1] * len(ctx.nodes)
    return [node_task(props, ctx, node, processes(i), slots) for i, node in enumerate(ctx.nodes)]
