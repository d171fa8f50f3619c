"""tensorFlowSettings: `workerCount` workers and `parameterServerCount` parameter servers.

Worker i runs on node i mod n, parameter server j on node j mod n (the service's own example
puts ps 0 and worker 0 on the first node). Worker 0 is the master: it gets
`masterCommandLineArgs` (or the worker's when none is given). Every process gets
`AZ_BATCHAI_TASK_INDEX` (its index within its role), `AZ_BATCHAI_PS_HOSTS`,
`AZ_BATCHAI_WORKER_HOSTS` and a `TF_CONFIG` naming the same peers, with the task typed
`worker`/`ps` as MultiWorkerMirroredStrategy and the parameter-server strategies read it.
(The reference's documented TF_CONFIG example types worker 0 as `master` while its cluster
has no `master` entry; TensorFlow rejects a task type missing from the cluster, so worker 0
stays `worker` here, and `environment` is `cloud` as in that example.)

Ports: every process needs its own; local nodes share one address, so the job's ports are
consecutive from the context's `master_port`: ps j at +j, worker i at +parameterServerCount+i.
Parameter servers run in a task of their own on their node (see `servers_task`): they serve until
every worker of the job is done, as the service stopped them.
Logs: stdout-wk-<i>.txt / stdout-ps-<j>.txt (and stderr-…).
"""

from __future__ import annotations

import json

from batchai.frameworks.common import log_process, node_task, python_command, servers_task
from batchai.frameworks.context import LaunchContext
from batchai.frameworks.plan import NodeTask, Process


def plan(props, ctx: LaunchContext) -> list[NodeTask]:
    s = props.tensor_flow_settings
    workers = s.worker_count or props.node_count
    ps_count = s.parameter_server_count or 0
    n = len(ctx.nodes)
    ps_hosts = [f"{ctx.nodes[j % n].address}:{ctx.master_port + j}" for j in range(ps_count)]
    worker_hosts = [f"{ctx.nodes[i % n].address}:{ctx.master_port + ps_count + i}" for i in range(workers)]
    cluster = {"worker": worker_hosts, **({"ps": ps_hosts} if ps_hosts else {})}

    def env(role: str, index: int) -> dict[str, str]:
        return {
            "AZ_BATCHAI_TASK_INDEX": str(index),
            "AZ_BATCHAI_PS_HOSTS": ",".join(ps_hosts),
            "AZ_BATCHAI_WORKER_HOSTS": ",".join(worker_hosts),
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": role, "index": index}, "environment": "cloud"}),
        }

    def workers_on(node_index: int):
        def build(_env, stdouterr) -> list[Process]:
            out = []
            for i in range(node_index, workers, n):
                args = (s.master_command_line_args or s.worker_command_line_args) if i == 0 else s.worker_command_line_args
                out.append(log_process(stdouterr, f"wk-{i}", python_command(s, ctx, args or ""), env("worker", i)))
            return out

        return build

    def servers_on(node_index: int, stdouterr: str) -> list[Process]:
        return [
            log_process(stdouterr, f"ps-{j}", python_command(s, ctx, s.parameter_server_command_line_args or ""), env("ps", j), daemon=True)
            for j in range(node_index, ps_count, n)
        ]

    slots = [len(range(i, workers, n)) + len(range(i, ps_count, n)) for i in range(n)]
    tasks = []
    for i, node in enumerate(ctx.nodes):
        main = node_task(props, ctx, node, workers_on(i), slots)
        servers = servers_on(i, main.env["AZ_BATCHAI_STDOUTERR_DIR"])
        tasks += [main, servers_task(main, servers)] if servers else [main]
    return tasks
