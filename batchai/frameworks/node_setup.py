"""The cluster's `nodeSetup.setupTask` as a NodeTask: what every node runs once when it joins.

Pure, like the launch plans. The task sees `AZ_BATCHAI_MOUNT_ROOT` (the cluster's mounts), the
node's name, and the setup task's own environment variables and secrets. Its logs go to
`{stdOutErrPathPrefix}/{stdOutErrPathSuffix}/{node name}/stdout.txt` and `stderr.txt`: the
service's suffix names the cluster, the node directory keeps the nodes' logs apart.
"""

from __future__ import annotations

from batchai.frameworks.context import PlacedNode
from batchai.frameworks.expand import expand
from batchai.frameworks.plan import NodeTask, Process


def setup_task_id(node_id: str, boot_id: str) -> str:
    return f"setup-{node_id}-{boot_id[:12]}"


def plan_node_setup(setup: dict, *, cluster_id: str, cluster_mount_root: str, node: PlacedNode, boot_id: str) -> NodeTask:
    """`setup` is the stored (camelCase) `nodeSetup.setupTask`, with its `stdOutErrPathSuffix`."""
    env = {"AZ_BATCHAI_MOUNT_ROOT": cluster_mount_root, "AZ_BATCHAI_NODE_NAME": node.name}
    for var in setup.get("environmentVariables") or []:
        env[var["name"]] = expand(var.get("value") or "", env)
    for secret in setup.get("secrets") or []:
        env[secret["name"]] = secret.get("value") or ""
    prefix = expand(setup["stdOutErrPathPrefix"], env).rstrip("/")
    logs = f"{prefix}/{setup['stdOutErrPathSuffix']}/{node.name}"
    work = f"{node.root}/setup"
    return NodeTask(
        task_id=setup_task_id(node.id, boot_id),
        job_id=cluster_id,
        node_id=node.id,
        cwd=work,
        env=env,
        execution_log=f"{logs}/execution.log",
        dirs=[work, logs, cluster_mount_root],
        processes=[Process(name="", command=setup["commandLine"], stdout=f"{logs}/stdout.txt", stderr=f"{logs}/stderr.txt")],
    )
