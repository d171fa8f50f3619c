"""The node's container runtime: which one is usable, and starting/stopping a task's container.

Standard library only. Docker first, then podman; "usable" means `<runtime> info` answers, so a
node with the client but no daemon runs jobs on the host (and says so). The command lines are
built by the pure batchai.frameworks.container.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from dataclasses import replace

from batchai.frameworks.container import PASSWORD_ENV, ContainerSpec, pull_argvs, remove_argv, run_argv

PROBE_TTL = 60.0
_probe_lock = threading.Lock()
_probe: tuple[float, str | None] = (0.0, None)


class ContainerError(Exception):
    pass


def usable_runtime() -> str | None:
    """`docker` or `podman` if its daemon answers (checked at most once a minute)."""
    global _probe
    with _probe_lock:
        checked, runtime = _probe
        if time.monotonic() - checked < PROBE_TTL and checked:
            return runtime
        runtime = next((r for r in ("docker", "podman") if shutil.which(r) and _answers(r)), None)
        _probe = (time.monotonic(), runtime)
        return runtime


def _answers(runtime: str) -> bool:
    try:
        return subprocess.run([runtime, "info"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _run(argv: list[str], env: dict[str, str], stdin: str | None = None, timeout: float = 600) -> None:
    done = subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise ContainerError(f"{' '.join(argv[:3])}: {done.stderr.strip()[-500:] or f'exit code {done.returncode}'}")


def start(runtime: str, spec: ContainerSpec, cwd: str, env: dict[str, str]) -> None:
    """Pull the image unless it is here, then start the task's container."""
    try:
        if subprocess.run([runtime, "image", "inspect", "--", spec.image], capture_output=True, env=env, timeout=60).returncode != 0:
            for argv in pull_argvs(runtime, spec):
                _run(argv, env, stdin=env.get(PASSWORD_ENV, "") if "login" in argv else None)
        present = [b for b in spec.binds if os.path.isdir(b)]  # podman refuses a missing one; docker would make it
        _run(run_argv(runtime, replace(spec, binds=present), cwd), env)
    except subprocess.TimeoutExpired as e:
        raise ContainerError(f"{' '.join(e.cmd[:3])} timed out") from None


def remove(runtime: str, spec: ContainerSpec, env: dict[str, str]) -> None:
    try:
        subprocess.run(remove_argv(runtime, spec), capture_output=True, env=env, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        pass
