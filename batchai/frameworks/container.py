"""containerSettings: the job and its preparation run in one container per node task.

Pure and standard library only (the node agent uses it). A task's container is started once
(`run_argv`) with the host network (peers and MPI reach each other as on the host), the job's
paths bound at the same paths, the working directory and `shmSize`; then the preparation and
every process run in it through `exec_argv`, so they share the container's filesystem (what
preparation installs, the job finds) as the service did; `remove_argv` ends it with the task.
Environment values never go on a command line: `-e NAME` makes the runtime copy each value
from its own environment, which the agent sets.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ContainerSpec:
    image: str
    name: str  # unique per node task
    binds: list[str] = field(default_factory=list)  # host paths, bound at the same path
    shm_size: str | None = None
    server_url: str | None = None  # private registry, with `username` and BATCHAI_REGISTRY_PASSWORD
    username: str | None = None
    gpus: list[str] = field(default_factory=list)  # indices of the node's GPUs the job gets


PASSWORD_ENV = "BATCHAI_REGISTRY_PASSWORD"
KEEP_ALIVE = ["sleep", "2147483647"]  # the container idles while processes are exec'd into it


def container_spec(settings, task_id: str, binds: list[str], gpus: list[str] | None = None) -> ContainerSpec:
    """From the job's (parsed) containerSettings."""
    registry = settings.image_source_registry
    creds = registry.credentials
    return ContainerSpec(
        image=registry.image,
        name=f"batchai-{task_id}"[:128],
        binds=sorted(set(binds)),
        shm_size=settings.shm_size,
        server_url=registry.server_url,
        username=creds.username if creds else None,
        gpus=list(gpus or []),
    )


def pull_argvs(runtime: str, spec: ContainerSpec) -> list[list[str]]:
    """Log in to a private registry (password read from stdin) and pull the image."""
    login = [[runtime, "login", "--username", spec.username, "--password-stdin", "--", spec.server_url or ""]] if spec.username else []
    return login + [[runtime, "pull", "--", spec.image]]


def run_argv(runtime: str, spec: ContainerSpec, cwd: str) -> list[str]:
    argv = [runtime, "run", "--detach", "--rm", "--name", spec.name, "--network", "host", "--workdir", cwd]
    if spec.shm_size:
        argv += ["--shm-size", spec.shm_size]
    for path in spec.binds:
        argv += ["--volume", f"{path}:{path}"]
    if spec.gpus and "podman" in runtime.rsplit("/", 1)[-1]:  # podman reaches NVIDIA GPUs through CDI
        argv += [arg for index in spec.gpus for arg in ("--device", f"nvidia.com/gpu={index}")]
    elif spec.gpus:
        argv += ["--gpus", f'"device={",".join(spec.gpus)}"']
    return argv + ["--entrypoint", "", "--", spec.image, *KEEP_ALIVE]  # `--`: an image named `--privileged` is no option


def exec_argv(runtime: str, spec: ContainerSpec, cwd: str, env_names: list[str], command: str) -> list[str]:
    argv = [runtime, "exec", "--workdir", cwd]
    for name in sorted(set(env_names)):
        argv += ["--env", name]
    return argv + ["--", spec.name, "/bin/sh", "-c", command]


def exec_command(runtime: str, spec: ContainerSpec, cwd: str, env_names: list[str], command: str) -> str:
    """`exec_argv` as one shell command line (processes run as `/bin/bash -c`)."""
    return shlex.join(exec_argv(runtime, spec, cwd, env_names, command))


def remove_argv(runtime: str, spec: ContainerSpec) -> list[str]:
    return [runtime, "rm", "--force", "--", spec.name]
