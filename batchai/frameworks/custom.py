"""customToolkitSettings: the command line runs once, on the first node; the others are held for it."""

from __future__ import annotations

from batchai.frameworks.common import log_process, node_task
from batchai.frameworks.context import LaunchContext
from batchai.frameworks.plan import NodeTask


def plan(props, ctx: LaunchContext) -> list[NodeTask]:
    command = props.custom_toolkit_settings.command_line or "true"
    slots = [max(ctx.gpus_per_node, 1)] * len(ctx.nodes)
    return [
        node_task(props, ctx, node, (lambda env, out: [log_process(out, "", command)]) if i == 0 else (lambda env, out: []), slots)
        for i, node in enumerate(ctx.nodes)
    ]
