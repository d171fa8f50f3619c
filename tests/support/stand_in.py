"""What the stand-in servers (Azurite, cosmosdb-server) share: a free loopback port, and waiting until one answers."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from typing import IO

from tests.support.waiting import until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_ready(name: str, probe: Callable[[], None], process: subprocess.Popen, log: IO[str], timeout: float) -> None:
    """Until `probe` stops raising OSError; a server that exits meanwhile fails with its log."""

    def answers() -> bool:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{name} exited with {process.returncode}: {log.read()}")
        probe()
        return True

    until(answers, timeout, f"{name} to answer", ignoring=(OSError,))
