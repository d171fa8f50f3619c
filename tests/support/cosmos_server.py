"""A Cosmos DB stand-in for tests: the real `@vercel/cosmosdb-server`, on a free loopback port.

It runs over plain HTTP (no self-signed certificate to trust) through `cosmos_server.js`, which
makes a read of a missing document answer 404 as Cosmos DB does (the stand-in answers 500).
It keeps everything in memory: a fresh database name per test is a fresh store.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from azure.cosmos import CosmosClient

from tests.support.stand_in import free_port, wait_until_ready

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / ".stand-ins" / "node_modules" / "@vercel" / "cosmosdb-server"
LAUNCHER = Path(__file__).with_name("cosmos_server.js")
KEY = base64.b64encode(b"any key: the stand-in checks no signature").decode()


@contextmanager
def cosmos_server() -> Iterator[str]:
    """The endpoint of a running stand-in; skips the test when node or the package is not installed."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Cosmos DB stand-in needs Node.js: `node` is not on PATH")
    if not (PACKAGE / "lib" / "cli.js").exists():
        pytest.skip(f"Cosmos DB stand-in not installed at {PACKAGE} (scripts/setup.sh installs it)")
    port = free_port()
    log = tempfile.TemporaryFile("w+")  # a file, not a pipe: a full pipe would stall the server
    process = subprocess.Popen(
        [node, str(LAUNCHER), str(PACKAGE), "-p", str(port), "--host", "127.0.0.1", "--no-ssl"],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready("cosmosdb-server", lambda: urllib.request.urlopen(url, timeout=1).close(), process, log, timeout=15.0)
        yield url
    finally:
        log.close()
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def client(url: str) -> CosmosClient:
    """A client for the stand-in: plain HTTP, and no region discovery (it has one endpoint)."""
    return CosmosClient(url, credential=KEY, enable_endpoint_discovery=False)
