"""An Azure Blob Storage stand-in for tests: the real Azurite blob service, on a free loopback port.

It keeps its data in a temporary directory and accepts the well-known development account key,
so SAS URLs signed by the SDK verify as they would on Azure.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
AZURITE = REPO / ".stand-ins" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_listening(port: int, process: subprocess.Popen, log, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"azurite-blob exited with {process.returncode}: {log.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"azurite-blob did not listen on port {port} within {timeout}s")


def connection_string(port: int) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};")


@contextmanager
def azurite() -> Iterator[str]:
    """The connection string of a running Azurite; skips the test when it is not installed."""
    if shutil.which("node") is None:
        pytest.skip("Azurite needs Node.js: `node` is not on PATH")
    if not AZURITE.exists():
        pytest.skip(f"Azurite is not installed at {AZURITE} (scripts/setup.sh installs it)")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="azurite-") as location, tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", location,
             "--silent", "--skipApiVersionCheck", "--disableTelemetry"],
            stdout=log, stderr=subprocess.STDOUT, text=True,  # a file, not a pipe: a full pipe would stall it
        )
        try:
            _wait_until_listening(port, process, log)
            yield connection_string(port)
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
