"""An Azure Blob Storage stand-in for tests: the real Azurite blob service, on a free loopback port.

It keeps its data in a temporary directory and accepts the well-known development account key,
so SAS URLs signed by the SDK verify as they would on Azure.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.stand_in import free_port, wait_until_ready

REPO = Path(__file__).resolve().parents[2]
AZURITE = REPO / ".stand-ins" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def connection_string(port: int) -> str:
    return f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"


@contextmanager
def azurite() -> Iterator[str]:
    """The connection string of a running Azurite; skips the test when it is not installed."""
    if shutil.which("node") is None:
        pytest.skip("Azurite needs Node.js: `node` is not on PATH")
    if not AZURITE.exists():
        pytest.skip(f"Azurite is not installed at {AZURITE} (scripts/setup.sh installs it)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="azurite-") as location, tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            [
                str(AZURITE),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
                "--location",
                location,
                "--silent",
                "--skipApiVersionCheck",
                "--disableTelemetry",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,  # a file, not a pipe: a full pipe would stall it
        )
        try:
            wait_until_ready(
                "azurite-blob", lambda: socket.create_connection(("127.0.0.1", port), timeout=0.5).close(), process, log, timeout=20.0
            )
            yield connection_string(port)
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
