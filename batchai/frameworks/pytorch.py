"""pyTorchSettings: `processCount` ranks spread over the nodes, rendezvous on the first node.

Each rank gets the service's `AZ_BATCHAI_TASK_INDEX` and `AZ_BATCHAI_PYTORCH_INIT_METHOD`
(a `tcp://` URL, which needs no shared file system), plus the variables torch.distributed's
`env://` method reads: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK.
Rank r logs to stdout-r.txt / stderr-r.txt.
"""

from __future__ import annotations

from batchai.frameworks.common import log_process, node_task, python_command, split_ranks
from batchai.frameworks.context import LaunchContext
from batchai.frameworks.plan import NodeTask


def plan(props, ctx: LaunchContext) -> list[NodeTask]:
    settings = props.py_torch_settings
    world = settings.process_count or props.node_count
    ranks = split_ranks(world, len(ctx.nodes))
    master = ctx.master.address
    command = python_command(settings, ctx)

    def processes(node_ranks):
        def build(env, stdouterr):
            return [
                log_process(
                    stdouterr,
                    str(rank),
                    command,
                    {
                        "AZ_BATCHAI_TASK_INDEX": str(rank),
                        "AZ_BATCHAI_PYTORCH_INIT_METHOD": f"tcp://{master}:{ctx.master_port}",
                        "AZ_BATCHAI_PYTORCH_BACKEND": settings.communication_backend or "gloo",
                        "MASTER_ADDR": master,
                        "MASTER_PORT": str(ctx.master_port),
                        "RANK": str(rank),
                        "WORLD_SIZE": str(world),
                        "LOCAL_RANK": str(local),
                    },
                )
                for local, rank in enumerate(node_ranks)
            ]

        return build

    slots = [len(r) for r in ranks]
    return [node_task(props, ctx, node, processes(ranks[i]), slots) for i, node in enumerate(ctx.nodes)]
