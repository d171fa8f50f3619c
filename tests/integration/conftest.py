"""A live `batchai serve` (a real process: it can be killed -9 and restarted) and SDK clients."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.waiting import until

TOKEN = "test-token-123"
SUB = "00000000-0000-0000-0000-000000000000"
ROOT = Path(__file__).resolve().parents[2]


class Server:
    def __init__(self, data_dir: Path, env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.env = env or {}  # on top of this process's environment, e.g. BATCHAI_NODE_TIMEOUT_SECONDS
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 30) -> Server:
        (self.data_dir / "control-plane.json").unlink(missing_ok=True)
        env = {**os.environ, **self.env, "BATCHAI_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
        self.log = open(self.data_dir / "serve.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "batchai.cli.main", "serve", "--port", "0", "--data-dir", str(self.data_dir)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log = self.data_dir / "serve.log"

        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(log.read_text())
            cp = self.data_dir / "control-plane.json"
            if not (cp.exists() and cp.read_text()):
                return False
            self.url = json.loads(cp.read_text())["url"]
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200

        until(healthy, timeout, "batchai serve to answer /healthz", ignoring=(httpx.TransportError,))
        return self

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)


def agent_pids(server: Server) -> dict[str, int]:
    """node name -> its agent's pid, from the processes that name this server's data dir."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"batchai.agent" in args and any(str(server.data_dir).encode() in a for a in args):
                found[args[args.index(b"--name") + 1].decode()] = int(entry.name)
    return found


def kill_agents(data_dir: Path) -> None:
    """Leave no node agent (or its tasks) behind, whatever the test did."""
    out = subprocess.run(["pgrep", "-f", f"batchai.agent.*{data_dir}"], capture_output=True, text=True).stdout
    for pid in out.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("batchai")
    srv = Server(data_dir).start()
    yield srv
    srv.stop()
    kill_agents(data_dir)


def cli_env(server: Server, **extra: str) -> dict[str, str]:
    """The environment a user's shell has for the `batchai` CLI against `server`."""
    return {
        **os.environ,
        "BATCHAI_URL": server.url,
        "BATCHAI_TOKEN": TOKEN,
        "PYTHONPATH": str(ROOT),
        "BATCHAI_DATA_DIR": str(server.data_dir),
        **extra,
    }


CLI = [sys.executable, "-m", "batchai.cli.main"]


@pytest.fixture(scope="module")
def cli(server):
    """cli(*args, check=True, env=None, input=None): run `batchai ARGS` against the module's server."""

    def run(*args: str, check: bool = True, env: dict | None = None, input: str | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [*CLI, *args], env=cli_env(server, **(env or {})), cwd=ROOT, capture_output=True, text=True, timeout=120, input=input
        )
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    return run


def as_json(done: subprocess.CompletedProcess):
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def sdk(server):
    return make_sdk(server)


def make_sdk(server: Server, token: str = TOKEN):
    """The official SDK client for `server`: a static bearer token, plain http allowed."""
    from azure.core.credentials import AccessToken
    from azure.core.pipeline.policies import SansIOHTTPPolicy
    from azure.mgmt.batchai import BatchAI

    class StaticToken:
        def get_token(self, *scopes, **kwargs):
            return AccessToken(token, int(time.time()) + 3600)

    class AllowHttp(SansIOHTTPPolicy):
        def on_request(self, request):
            request.context["enforce_https"] = False

    return BatchAI(StaticToken(), SUB, base_url=server.url, per_call_policies=[AllowHttp()], polling_interval=0.2)


def sdk_cluster(
    sdk, rg: str, ws: str, name: str, *, nodes: int = 2, vm_size: str = "STANDARD_D1", experiment: str = "exp", idle: bool = True
):
    """Through the SDK: a workspace, a cluster of `nodes` local nodes (waited for until all are idle, with
    `idle`) and an experiment. Returns the cluster."""
    from azure.mgmt.batchai import models

    sdk.workspaces.begin_create(rg, ws, models.WorkspaceCreateParameters(location="eastus")).result()
    cluster = sdk.clusters.begin_create(
        rg,
        ws,
        name,
        models.ClusterCreateParameters(
            vm_size=vm_size,
            user_account_settings=models.UserAccountSettings(admin_user_name="u", admin_user_password="pw"),
            scale_settings=models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=nodes)),
        ),
    ).result()
    if idle:
        until(lambda: sdk.clusters.get(rg, ws, name).node_state_counts.idle_node_count == nodes, 60, f"{nodes} idle nodes", interval=0.2)
    sdk.experiments.begin_create(rg, ws, experiment).result()
    return cluster
