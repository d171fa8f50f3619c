"""The service's `AZ_BATCHAI_*` variables, the job's own variables and secrets, and its paths.

Pure: a function of the job's properties and the placement. Paths the control plane needs
itself (stdouterr and output directories) are computed from the first node's view, which is
also what the service listed output files from.
"""

from __future__ import annotations

from dataclasses import dataclass

from batchai.frameworks.context import LaunchContext, PlacedNode
from batchai.frameworks.expand import expand

METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class JobPaths:
    stdouterr: str
    outputs: dict[str, str]


def _base(ctx: LaunchContext, node: PlacedNode) -> dict[str, str]:
    temp = ctx.job_temp(node)
    return {
        "AZ_BATCHAI_MOUNT_ROOT": ctx.mount_root(node),
        "AZ_BATCHAI_JOB_MOUNT_ROOT": f"{ctx.job_dir_of(node)}/mounts",
        "AZ_BATCHAI_JOB_TEMP_DIR": f"{node.root}/jobs",
        "AZ_BATCHAI_JOB_TEMP": temp,
        "AZ_BATCHAI_SHARED_JOB_TEMP": ctx.shared_job_temp_of(node),
        "AZ_BATCHAI_MPI_HOST_FILE": f"{temp}/hostfile",
        "AZ_BATCHAI_METRICS_FILE": f"{temp}/{METRICS_FILE}",  # JSON lines the node agent relays (batchai.metrics)
        "AZ_BATCHAI_NUM_GPUS": str(ctx.gpus_per_node),
        "AZ_BATCHAI_JOB_NAME": ctx.job_name,
        "AZ_BATCHAI_NODE_NAME": node.name,
        "AZ_BATCH_HOST_LIST": ",".join(n.address for n in ctx.nodes),
        **({"CUDA_VISIBLE_DEVICES": ",".join(node.gpus)} if node.gpus else {}),
        **_exec_environment(ctx),
    }


def _exec_environment(ctx: LaunchContext) -> dict[str, str]:
    """What batchai.agent.rsh needs to reach the job's other nodes (names as in the host file),
    and PMIx's plain store: its shared-memory one collides between local nodes on one host."""
    if not ctx.exec_secret:
        return {}
    return {
        "BATCHAI_EXEC_SECRET": ctx.exec_secret,
        "BATCHAI_EXEC_HOSTS": ",".join(f"{n.name}={n.address}:{n.exec_port}" for n in ctx.nodes),
        "PMIX_MCA_gds": "hash",
    }


def _output_dir(prefix: str, segment: str, suffix: str | None) -> str:
    path = f"{prefix.rstrip('/')}/{segment}/outputs"
    return f"{path}/{suffix.strip('/')}" if suffix else path


def node_environment(props, ctx: LaunchContext, node: PlacedNode) -> dict[str, str]:
    """Everything a job's processes on `node` see, in the order the service layered it."""
    env = _base(ctx, node)
    for d in props.input_directories or []:
        env[f"AZ_BATCHAI_INPUT_{d.id}"] = expand(d.path, env)
    env["AZ_BATCHAI_STDOUTERR_DIR"] = f"{expand(props.std_out_err_path_prefix, env).rstrip('/')}/{ctx.output_segment}/stdouterr"
    for d in props.output_directories or []:
        env[f"AZ_BATCHAI_OUTPUT_{d.id}"] = _output_dir(expand(d.path_prefix, env), ctx.output_segment, d.path_suffix)
    for var in props.environment_variables or []:
        env[var.name] = expand(var.value or "", env)
    for secret in props.secrets or []:
        env[secret.name] = secret.value or ""
    return env


def job_paths(props, ctx: LaunchContext) -> JobPaths:
    env = node_environment(props, ctx, ctx.master)
    return JobPaths(
        stdouterr=env["AZ_BATCHAI_STDOUTERR_DIR"],
        outputs={d.id: env[f"AZ_BATCHAI_OUTPUT_{d.id}"] for d in props.output_directories or []},
    )


def node_dirs(env: dict[str, str]) -> list[str]:
    """Directories the service created before the job ran."""
    made = ["AZ_BATCHAI_JOB_TEMP", "AZ_BATCHAI_SHARED_JOB_TEMP", "AZ_BATCHAI_JOB_MOUNT_ROOT", "AZ_BATCHAI_STDOUTERR_DIR"]
    return [env[k] for k in made] + [v for k, v in env.items() if k.startswith("AZ_BATCHAI_OUTPUT_")]
