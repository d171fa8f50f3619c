"""What a node's agent, and so every job it runs, takes of the environment it was started in.

An allowlist, not a denylist: the control plane's environment holds its token and, with the Azure
adapters, the Cosmos DB key and the storage and Service Bus connection strings, and a user who runs
`batchai node join` may have cloud credentials of their own in theirs. A job gets these variables,
then what its spec and the `AZ_BATCHAI_*` contract give it. Standard library only (the agent uses it).
"""

from __future__ import annotations

from collections.abc import Mapping

INHERITED = frozenset(
    {
        # finding programs and libraries, the user, the locale, temporary files
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
        "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONUNBUFFERED", "VIRTUAL_ENV",
        # container runtimes and GPUs on the node
        "DOCKER_HOST", "CONTAINER_HOST", "XDG_RUNTIME_DIR", "CUDA_HOME", "NVIDIA_DRIVER_CAPABILITIES",
        # the agent's own settings (none a secret)
        "BATCHAI_PYTHON", "BATCHAI_EXEC_WAIT_SECONDS",
    }
)  # fmt: skip
INHERITED_PREFIXES = ("LC_", "OMPI_", "PRTE_", "PMIX_")  # locale; MPI's settings (run as root, transports)


def inherited(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k in INHERITED or k.startswith(INHERITED_PREFIXES)}
