"""Nodes on other machines: a control plane and two nodes, each in a network namespace of its own.

The "machines" are network namespaces joined by veth pairs through a bridge (in a namespace of
its own too); addresses exist only inside the namespaces this module makes, and it removes them
at the end. The nodes join with `batchai node join` and the enrollment token; they share the
filesystem with the control plane (namespaces separate only the network), but nothing the jobs
use is on the control plane's disk: their files reach it through the agents' upload path.

The test talks to the control plane from a thread that entered the control plane's namespace
(setns is per thread for network namespaces), and runs the CLI there with `ip netns exec`.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from batchai.adapters.from_env import resource_store
from batchai.node_identity import node_credential, node_key
from tests.integration.conftest import ROOT, SUB, TOKEN
from tests.support.waiting import until

API = "api-version=2018-05-01"
SUBNET = "10.77.0"
CP_ADDRESS, NODE_ADDRESSES = f"{SUBNET}.1", {"host-a": f"{SUBNET}.2", "host-b": f"{SUBNET}.3"}
CP_PORT = 8080  # inside the control plane's own namespace: nothing else listens there
CLONE_NEWNET = 0x40000000
PY = sys.executable

RANK_SCRIPT = """\
import json, os, pathlib, subprocess, sys, time
rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("RANK", "0")))
record = {
    "rank": rank,
    "pid": os.getpid(),
    "addresses": subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split(),
    "node": os.environ["AZ_BATCHAI_NODE_NAME"],
    "master": os.environ.get("MASTER_ADDR"),
    "env": dict(os.environ),
}
out = pathlib.Path(os.environ["AZ_BATCHAI_OUTPUT_OUT"])
print(f"rank {rank} on {record['addresses']}", flush=True)
(out / f"{sys.argv[1]}-{rank}.json").write_text(json.dumps(record))
if sys.argv[1] == "follow" and rank == 0:  # held until the test has seen this line through `job logs --follow`
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.05)
    print("released", flush=True)
if sys.argv[1] == "sleep":
    time.sleep(600)
"""


def _namespaces_possible() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip"):
        return "iproute2 (ip) is not installed"
    if not shutil.which("mpirun"):
        return "OpenMPI (mpirun) is not installed"
    probe = f"baiprobe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], check=True)
    return None


_WHY_NOT = _namespaces_possible()
pytestmark = [pytest.mark.skipif(_WHY_NOT is not None, reason=f"no multi-host test: {_WHY_NOT}"), pytest.mark.timeout(600)]


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


class Hosts:
    """hub (the bridge), cp, and one namespace per node; `inside(ns)` prefixes a command to run there."""

    def __init__(self):
        tag = uuid.uuid4().hex[:6]
        self.hub = f"bai{tag}hub"
        self.ns = {"cp": f"bai{tag}cp", **{name: f"bai{tag}{name[-1]}" for name in NODE_ADDRESSES}}
        self.made: list[str] = []

    def build(self) -> None:
        for ns in (self.hub, *self.ns.values()):
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        addresses = {"cp": CP_ADDRESS, **NODE_ADDRESSES}
        for i, (host, ns) in enumerate(self.ns.items()):
            sh("ip", "-n", self.hub, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", self.hub, "link", "set", f"p{i}", "master", "br0")
            sh("ip", "-n", self.hub, "link", "set", f"p{i}", "up")
            sh("ip", "-n", ns, "addr", "add", f"{addresses[host]}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")

    def remove(self) -> None:
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)

    def inside(self, host: str, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[host], *cmd]


class InNamespace:
    """Calls made from one thread that entered a network namespace (its sockets are that host's)."""

    def __init__(self, ns: str):
        def enter():
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            finally:
                os.close(fd)

        self._pool = ThreadPoolExecutor(max_workers=1, initializer=enter)
        self.http: httpx.Client | None = None

    def run(self, fn, *args):
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        if self.http is not None:
            self.run(self.http.close)
        self._pool.shutdown()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("multihost")
    hosts = Hosts()
    procs: list[subprocess.Popen] = []  # the nodes' agents (`batchai node join`)
    servers: list[subprocess.Popen] = []
    cp = None
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    env.pop("BATCHAI_URL", None)
    try:
        hosts.build()
        cp = InNamespace(hosts.ns["cp"])
        data = base / "control-plane"
        data.mkdir()
        url = f"http://{CP_ADDRESS}:{CP_PORT}"
        cp.http = cp.run(lambda: httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30))

        def serve() -> None:
            """(Re)starts the control plane on the same address, port and data dir."""
            if servers and servers[-1].poll() is None:
                servers[-1].send_signal(signal.SIGTERM)
                servers[-1].wait(30)
            with open(base / "serve.log", "ab") as log:
                command = ["serve", "--host", CP_ADDRESS, "--port", str(CP_PORT), "--data-dir", str(data)]
                servers.append(
                    subprocess.Popen(
                        hosts.inside("cp", PY, "-m", "batchai.cli.main", *command),
                        env={**env, "BATCHAI_TOKEN": TOKEN},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=ROOT,
                    )
                )
            until(
                lambda: servers[-1].poll() is None and cp.run(lambda: cp.http.get("/healthz")).status_code == 200,
                60,
                "the control plane to answer",
                ignoring=(httpx.TransportError,),
            )

        serve()
        cli_env = {**env, "BATCHAI_URL": url, "BATCHAI_TOKEN": TOKEN}

        def cli(*args: str) -> str:
            done = subprocess.run(
                hosts.inside("cp", PY, "-m", "batchai.cli.main", *args), env=cli_env, capture_output=True, text=True, cwd=ROOT
            )
            assert done.returncode == 0, done.stdout + done.stderr
            return done.stdout

        cli("workspace", "create", "ws")
        cli("cluster", "create", "c", "-w", "ws", "--attached")
        token = cli("cluster", "enroll-token", "c", "-w", "ws").strip()
        for name in NODE_ADDRESSES:
            with open(base / f"{name}.log", "ab") as log:
                procs.append(
                    subprocess.Popen(
                        hosts.inside(
                            name, PY, "-m", "batchai.cli.main", "node", "join", "--url", url, "--root", str(base / name), "--name", name
                        ),
                        env={**env, "BATCHAI_ENROLL_TOKEN": token},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=ROOT,
                    )
                )
        cluster = f"/subscriptions/{SUB}/resourceGroups/default/providers/Microsoft.BatchAI/workspaces/ws/clusters/c"

        def two_idle():
            props = cp.run(lambda: cp.http.get(f"{cluster}?{API}")).json()["properties"]
            return props["nodeStateCounts"]["idleNodeCount"] == 2 and props

        until(two_idle, 60, "both machines to join")
        (base / "rank.py").write_text(RANK_SCRIPT)
        yield {
            "cp": cp,
            "cli": cli,
            "base": base,
            "data": data,
            "cluster": cluster,
            "hosts": hosts,
            "env": cli_env,
            "nodes": procs,
            "serve": serve,
            "two_idle": two_idle,
        }
    finally:
        for proc in [*procs, *servers]:  # the nodes first (their agents stop their tasks), then the control plane
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if cp is not None:
            cp.close()
        hosts.remove()


def job_url(name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/default/providers/Microsoft.BatchAI/workspaces/ws/experiments/e/jobs/{name}"


def submit(world, name: str, toolkit: dict) -> None:
    cp = world["cp"]
    if (
        cp.run(
            lambda: cp.http.get(
                f"/subscriptions/{SUB}/resourceGroups/default/providers/Microsoft.BatchAI/workspaces/ws/experiments/e?{API}"
            )
        ).status_code
        == 404
    ):
        world["cli"]("experiment", "create", "e", "-w", "ws")
    body = {
        "properties": {
            "cluster": {"id": world["cluster"]},
            "nodeCount": 2,
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
            "outputDirectories": [{"id": "OUT", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/out"}],
            **toolkit,
        }
    }
    answer = cp.run(lambda: cp.http.put(f"{job_url(name)}?{API}", json=body))
    assert answer.status_code in (200, 201, 202), answer.text


def state(world, name: str) -> dict:
    cp = world["cp"]
    return cp.run(lambda: cp.http.get(f"{job_url(name)}?{API}")).json()["properties"]


def ended(world, name: str, timeout: float = 120) -> dict:
    props = until(lambda: (p := state(world, name))["executionState"] in ("succeeded", "failed") and p, timeout, f"job {name} to end")
    return props


def outputs(world, name: str, directory: str = "OUT") -> dict[str, bytes]:
    """Every file of the job's output directory, listed and downloaded through the API."""
    cp = world["cp"]

    def fetch():
        listed = cp.http.post(f"{job_url(name)}/listOutputFiles?{API}&outputdirectoryid={directory}").json()["value"]
        return {f["name"]: cp.http.get(f["downloadUrl"]).content for f in listed if f["fileType"] == "file"}

    return cp.run(fetch)


def mpi(world, mode: str, *extra: str) -> dict:
    """4 ranks of the rank script on the job's 2 nodes."""
    return {"customMpiSettings": {"commandLine": " ".join([PY, str(world["base"] / "rank.py"), mode, *extra]), "processCount": 4}}


def test_an_mpi_job_spans_both_machines_and_its_logs_follow_while_it_runs(world):
    release = world["base"] / "release-follow"
    submit(world, "mpi", mpi(world, "follow", str(release)))
    follow = subprocess.Popen(
        world["hosts"].inside("cp", PY, "-m", "batchai.cli.main", "job", "logs", "mpi", "-w", "ws", "-e", "e", "--follow"),
        env=world["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        seen = []
        # the job holds rank 0 until the follower has shown its line: the log streamed while the job ran
        for line in follow.stdout:
            seen.append(line)
            if "rank 0 on" in line:
                break
        assert state(world, "mpi")["executionState"] == "running"
        release.touch()
        rest, _ = follow.communicate(timeout=120)
        seen += rest.splitlines()
    finally:
        if follow.poll() is None:
            follow.kill()
    props = ended(world, "mpi")
    assert props["executionState"] == "succeeded", props
    assert any("released" in line for line in seen), seen
    records = {k: json.loads(v) for k, v in outputs(world, "mpi").items()}
    print("MPI ranks:", {k: (r["node"], r["addresses"]) for k, r in sorted(records.items())})
    assert sorted(records) == [f"follow-{r}.json" for r in range(4)]
    assert {r["addresses"][0] for r in records.values()} == set(NODE_ADDRESSES.values())  # two hosts
    assert {r["node"]: r["addresses"][0] for r in records.values()} == NODE_ADDRESSES
    # no credential of the control plane or of a node in any rank's environment
    with_store = resource_store(world["data"], environ={})
    key = node_key(with_store)
    secrets = {TOKEN, *(node_credential(key, n.id) for n in with_store.nodes())}
    for record in records.values():
        assert not {"BATCHAI_TOKEN", "BATCHAI_NODE_TOKEN", "BATCHAI_ENROLL_TOKEN"} & set(record["env"])
        assert not secrets & set(record["env"].values()), "a credential reached a job"


def test_remote_login_reaches_each_machine_at_the_address_it_joined_with(world):
    listed = world["cli"]("cluster", "node", "list", "c", "-w", "ws", "-o", "tsv", "--query", "[].[nodeId, ipAddress]")
    assert sorted(line.split("\t") for line in listed.splitlines()) == [[n, a] for n, a in sorted(NODE_ADDRESSES.items())]
    for name, address in NODE_ADDRESSES.items():  # from the control plane's machine, through that machine's agent
        assert address in world["cli"]("cluster", "node", "exec", "c", "-w", "ws", "-n", name, "--exec", "hostname -I").split()


def test_a_pytorch_job_gets_the_first_machine_as_master(world):
    submit(world, "torch", {"pyTorchSettings": {"pythonScriptFilePath": str(world["base"] / "rank.py"), "commandLineArgs": "torch"}})
    props = ended(world, "torch")
    assert props["executionState"] == "succeeded", props
    records = {k: json.loads(v) for k, v in outputs(world, "torch").items()}
    print("PyTorch ranks:", {k: (r["node"], r["addresses"][0], r["master"]) for k, r in sorted(records.items())})
    assert sorted(records) == ["torch-0.json", "torch-1.json"]
    masters = {r["master"] for r in records.values()}
    assert masters == {records["torch-0.json"]["addresses"][0]} and masters <= set(NODE_ADDRESSES.values())
    assert {r["addresses"][0] for r in records.values()} == set(NODE_ADDRESSES.values())


def test_terminate_kills_the_processes_on_both_machines(world):
    submit(world, "sleepy", mpi(world, "sleep"))
    # the ranks' pid files arrive through the uploads while the job runs
    files = until(lambda: len(found := outputs(world, "sleepy")) == 4 and found, 120, "all four ranks to report")
    ranks = [json.loads(v) for v in files.values()]
    assert {r["addresses"][0] for r in ranks} == set(NODE_ADDRESSES.values())
    pids = [r["pid"] for r in ranks]
    assert all(Path(f"/proc/{pid}").exists() for pid in pids)
    cp = world["cp"]
    assert cp.run(lambda: cp.http.post(f"{job_url('sleepy')}/terminate?{API}")).status_code in (200, 202)
    props = ended(world, "sleepy")
    assert props["executionState"] == "failed"
    until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), 60, "every rank on both machines to be killed")
    print("terminated ranks:", sorted((r["node"], r["pid"]) for r in ranks))


def test_the_machines_outlive_a_control_plane_restart_and_run_jobs_after_it(world):
    world["serve"]()  # SIGTERM, then the same control plane again: joined machines are not its to stop
    assert all(node.poll() is None for node in world["nodes"]), "a joined machine's agent stopped with the control plane"
    until(world["two_idle"], 60, "both machines to be back")
    submit(world, "after", {"pyTorchSettings": {"pythonScriptFilePath": str(world["base"] / "rank.py"), "commandLineArgs": "after"}})
    props = ended(world, "after")
    assert props["executionState"] == "succeeded", props
    records = [json.loads(v) for v in outputs(world, "after").values()]
    assert sorted(r["node"] for r in records) == sorted(NODE_ADDRESSES)
