"""customToolkitSettings: the command line runs once, on the first node; the others are held for it."""

from __future__ import annotations

from batchai.frameworks.common import first_node_only
from batchai.frameworks.context import LaunchContext
from batchai.frameworks.plan import NodeTask


def plan(props, ctx: LaunchContext) -> list[NodeTask]:
    return first_node_only(props, ctx, props.custom_toolkit_settings.command_line or "true")
