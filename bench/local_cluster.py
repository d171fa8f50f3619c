"""Benchmark a 2-node local cluster through the public ARM API of a live `batchai serve`.

    .venv/bin/python bench/local_cluster.py [--jobs 500] [--array 1000] [--latency-samples 50] [--json PATH]

1. Throughput: N one-node custom-toolkit jobs running `true`, all submitted at once (concurrent
   PUTs); measured from the first submit (client clock) to the last completion (the latest
   `executionInfo.endTime`, server clock: same machine, UTC).
1b. With --array N: one array job of N `true` tasks (arraySettings), from its submit to its last
   task's end: tasks/s beside the jobs/s of phase 1.
2. Latency, on the then idle cluster: one job at a time, submit-to-start (client submit time to
   the job's `executionInfo.startTime`) and submit-to-end, p50/p99/mean/max.

The script starts its own control plane on a temporary data dir and always cleans up: the
workspace is deleted, the server gets SIGTERM, and the node agents are checked to be gone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parents[1]
API_VERSION = "2018-05-01"
SUB = "00000000-0000-0000-0000-000000000000"
RG = "bench"
WS, CLUSTER, EXP = "bench", "local", "bench"
TERMINAL = ("succeeded", "failed")
TOKEN = "bench-token"
# How often the throughput phase lists every job to see whether all have ended. The figures come from
# the jobs' own end times, so this only sets the observer's load: listing 1,500 jobs twice a second
# was a third of the control plane's CPU (Slurm's side polls squeue, which costs it next to nothing).
POLL_SECONDS = 2.0


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
    }


# -- the server ---------------------------------------------------------------------------------
class Server:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 60) -> None:
        env = {**os.environ, "BATCHAI_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
        self.log_file = open(self.data_dir / "serve.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "batchai.cli.main", "serve", "--port", "0", "--data-dir", str(self.data_dir)],
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        deadline = time.time() + timeout
        cp = self.data_dir / "control-plane.json"
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("batchai serve exited:\n" + (self.data_dir / "serve.log").read_text()[-4000:])
            if cp.exists() and cp.read_text().strip():
                try:
                    self.url = json.loads(cp.read_text())["url"].rstrip("/")
                    if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                        return
                except (ValueError, KeyError, httpx.TransportError):
                    pass
            time.sleep(0.05)
        raise TimeoutError("batchai serve did not start")

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log("the server ignored SIGTERM: SIGKILL")
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()
        return self.proc.returncode


def agent_pids(data_dir: Path, module: bytes = b"batchai.agent") -> list[int]:
    """Node agents (or the server's API workers: `function_app.embedded`) whose command line names this bench's data dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if module in args and any(str(data_dir).encode() in a for a in args):
            found.append(int(entry.name))
    return found


# -- the API ------------------------------------------------------------------------------------
def path_ws() -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.BatchAI/workspaces/{WS}"


def path_cluster() -> str:
    return f"{path_ws()}/clusters/{CLUSTER}"


def path_exp() -> str:
    return f"{path_ws()}/experiments/{EXP}"


def path_job(name: str) -> str:
    return f"{path_exp()}/jobs/{name}"


def check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: HTTP {response.status_code} {response.text[:500]}")
    return response


def job_body(cluster_id: str) -> dict:
    return {
        "properties": {
            "cluster": {"id": cluster_id},
            "nodeCount": 1,
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
            "customToolkitSettings": {"commandLine": "true"},
        }
    }


def setup(http: httpx.Client, nodes: int, timeout: float = 120) -> str:
    check(http.put(path_ws(), json={"location": "local"}))
    cluster = check(
        http.put(
            path_cluster(),
            json={
                "properties": {
                    "vmSize": "STANDARD_D1_V2",
                    "vmPriority": "dedicated",
                    "scaleSettings": {"manual": {"targetNodeCount": nodes, "nodeDeallocationOption": "requeue"}},
                    "userAccountSettings": {"adminUserName": "bench"},
                }
            },
        )
    ).json()
    deadline = time.time() + timeout
    while True:
        props = cluster["properties"]
        idle = (props.get("nodeStateCounts") or {}).get("idleNodeCount", 0)
        if idle == nodes and props.get("allocationState") == "steady":
            break
        if time.time() > deadline:
            raise TimeoutError(f"the cluster has {idle}/{nodes} idle nodes after {timeout:.0f} s: {props}")
        time.sleep(0.2)
        cluster = check(http.get(path_cluster())).json()
    check(http.put(path_exp(), json={}))
    return cluster["id"]


def list_jobs(http: httpx.Client, path: str | None = None) -> list[dict]:
    page = check(http.get(path or f"{path_exp()}/jobs")).json()
    jobs = list(page["value"])
    while page.get("nextLink"):
        # the link's own query (api-version, $skiptoken): httpx would replace it with the client's params
        link = urlsplit(page["nextLink"])
        page = check(http.get(link.path, params=dict(parse_qsl(link.query)))).json()
        jobs += page["value"]
    return jobs


def delete_workspace(http: httpx.Client, timeout: float = 120) -> None:
    response = http.delete(path_ws())
    if response.status_code == 404:
        return
    check(response)
    deadline = time.time() + timeout
    while response.status_code == 202 and "location" in response.headers:
        if time.time() > deadline:
            raise TimeoutError("the workspace deletion did not finish")
        time.sleep(float(response.headers.get("retry-after", "1")) / 4)
        response = check(http.get(response.headers["location"]))


# -- phase 1: throughput ------------------------------------------------------------------------
async def submit_all(url: str, names: list[str], cluster_id: str, concurrency: int) -> dict[str, tuple[float, float]]:
    """PUT every job concurrently; returns name -> (client time before the PUT, after its answer).

    aiohttp, not httpx: httpx's async pool answered a bare FastAPI endpoint at about 160
    requests/s on this machine (100 connections: pool timeouts), aiohttp at 1,300 to 1,600, so
    with httpx the figure measured the client, not the control plane."""
    times: dict[str, tuple[float, float]] = {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(url, connector=connector, headers=headers) as http:
        body = job_body(cluster_id)

        async def one(name: str) -> None:
            sent = time.time()
            async with http.put(path_job(name), params={"api-version": API_VERSION}, json=body) as response:
                text = await response.text()
                if response.status >= 400:
                    raise RuntimeError(f"PUT {name}: HTTP {response.status} {text[:500]}")
            times[name] = (sent, time.time())

        await asyncio.gather(*(one(n) for n in names))
    return times


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(CPU time of a process, of its reaped children: a node agent's jobs), from /proc."""
    fields = [int(f) for f in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:15]]
    tick = os.sysconf("SC_CLK_TCK")
    return (fields[0] + fields[1]) / tick, (fields[2] + fields[3]) / tick


def cpu_snapshot(server_pid: int, data_dir: Path) -> dict[str, float]:
    agents = jobs = 0.0
    for pid in agent_pids(data_dir):
        try:
            own, children = cpu_seconds(pid)
        except OSError:
            continue
        agents, jobs = agents + own, jobs + children
    server = cpu_seconds(server_pid)[0]
    for pid in agent_pids(data_dir, b"function_app.embedded"):
        try:
            server += cpu_seconds(pid)[0]
        except OSError:
            continue
    return {"server": server, "agents": agents, "jobs": jobs}


def throughput(http: httpx.Client, url: str, cluster_id: str, count: int, concurrency: int, timeout: float, server: Server) -> dict:
    names = [f"t{i:05d}" for i in range(count)]
    cpu_before = cpu_snapshot(server.proc.pid, server.data_dir)
    log(f"throughput: submitting {count} jobs at once ({concurrency} concurrent connections)")
    t0 = time.time()
    submitted = asyncio.run(submit_all(url, names, cluster_id, concurrency))
    t_submitted = time.time()
    log(f"throughput: {count} jobs accepted in {t_submitted - t0:.2f} s; waiting for them to end")
    deadline = t0 + timeout
    last_report = 0.0
    while True:
        jobs = [j for j in list_jobs(http) if j["name"] in submitted]
        states: dict[str, int] = {}
        for j in jobs:
            states[j["properties"]["executionState"]] = states.get(j["properties"]["executionState"], 0) + 1
        done = sum(states.get(s, 0) for s in TERMINAL)
        if done == count:
            break
        now = time.time()
        if now - last_report >= 10:
            log(f"throughput: {now - t0:6.1f} s  {states}")
            last_report = now
        if now > deadline:
            log(f"throughput: timed out after {timeout:.0f} s with {states}")
            break
        time.sleep(POLL_SECONDS)
    t_observed = time.time()
    cpu_after = cpu_snapshot(server.proc.pid, server.data_dir)

    first_submit = min(s for s, _ in submitted.values())
    ends = [
        parse_time(j["properties"]["executionInfo"]["endTime"])
        for j in jobs
        if j["properties"]["executionState"] in TERMINAL and (j["properties"].get("executionInfo") or {}).get("endTime")
    ]
    starts = [
        parse_time(j["properties"]["executionInfo"]["startTime"])
        for j in jobs
        if (j["properties"].get("executionInfo") or {}).get("startTime")
    ]
    succeeded = sum(1 for j in jobs if j["properties"]["executionState"] == "succeeded")
    failed = sum(1 for j in jobs if j["properties"]["executionState"] == "failed")
    last_end = max(ends) if ends else t_observed
    window = last_end - first_submit
    acks = [a - s for s, a in submitted.values()]
    buckets = [0] * (int((last_end - first_submit) // 10) + 1) if ends else []
    for end in ends:
        buckets[max(0, int((end - first_submit) // 10))] += 1
    return {
        "jobs": count,
        "succeeded": succeeded,
        "failed": failed,
        "unfinished": count - succeeded - failed,
        "submitSeconds": t_submitted - first_submit,
        "submitAckSeconds": summary(acks),
        "firstStartAfterSubmitSeconds": (min(starts) - first_submit) if starts else None,
        "firstSubmitToLastCompletionSeconds": window,
        "observedAllTerminalSeconds": t_observed - first_submit,
        "jobsPerSecond": (succeeded + failed) / window if window > 0 else None,
        "completionsPer10Seconds": buckets,
        # CPU per job over the whole phase (the observer's polls included), by process
        "cpuMsPerJob": {k: (cpu_after[k] - cpu_before[k]) * 1000 / count for k in cpu_after},
    }


# -- phase 1b: one array of as many tasks -------------------------------------------------------
def array_throughput(http: httpx.Client, cluster_id: str, count: int, timeout: float, server: Server) -> dict:
    """One array job of `count` `true` tasks: from its submit to its last task's end."""
    body = job_body(cluster_id)
    body["properties"]["arraySettings"] = {"count": count}
    cpu_before = cpu_snapshot(server.proc.pid, server.data_dir)
    log(f"array: submitting one array of {count} tasks")
    t0 = time.time()
    check(http.put(path_job("array"), json=body))
    submit = time.time() - t0
    deadline = t0 + timeout
    while True:
        state = check(http.get(path_job("array"))).json()["properties"]
        if state["executionState"] in TERMINAL or time.time() > deadline:
            break
        time.sleep(POLL_SECONDS / 4)
    cpu_after = cpu_snapshot(server.proc.pid, server.data_dir)
    tasks = list_jobs(http, path_job("array") + "/tasks")
    ends = [
        parse_time(t["properties"]["executionInfo"]["endTime"])
        for t in tasks
        if (t["properties"].get("executionInfo") or {}).get("endTime")
    ]
    window = (max(ends) - t0) if ends else None
    return {
        "tasks": count,
        "state": state["executionState"],
        "arrayInfo": state.get("arrayInfo"),
        "submitSeconds": submit,
        "submitToLastTaskEndSeconds": window,
        "tasksPerSecond": len(ends) / window if window else None,
        "cpuMsPerTask": {k: (cpu_after[k] - cpu_before[k]) * 1000 / count for k in cpu_after},
    }


# -- phase 2: latency on an idle cluster --------------------------------------------------------
def latency(http: httpx.Client, cluster_id: str, samples: int, poll: float, timeout: float) -> dict:
    to_start, to_end, failures = [], [], 0
    log(f"latency: {samples} jobs, one at a time")
    body = job_body(cluster_id)
    for i in range(samples):
        name = f"l{i:05d}"
        sent = time.time()
        check(http.put(path_job(name), json=body))
        deadline = sent + timeout
        while True:
            job = check(http.get(path_job(name))).json()
            props = job["properties"]
            if props["executionState"] in TERMINAL:
                break
            if time.time() > deadline:
                raise TimeoutError(f"latency job {name} still {props['executionState']} after {timeout:.0f} s")
            time.sleep(poll)
        info = props.get("executionInfo") or {}
        if props["executionState"] != "succeeded":
            failures += 1
        to_start.append(parse_time(info["startTime"]) - sent)
        to_end.append(parse_time(info["endTime"]) - sent)
    return {"samples": samples, "failed": failures, "submitToStartSeconds": summary(to_start), "submitToEndSeconds": summary(to_end)}


# -- main ---------------------------------------------------------------------------------------
def figures_block(result: dict) -> str:
    lines = ["", "=" * 72, "Batch AI local cluster benchmark", "=" * 72]
    env = result["environment"]
    lines.append(f"cluster: {env['nodes']} local nodes   cpus: {env['cpus']}   python: {env['python']}")
    t = result.get("throughput")
    if t:
        lines += [
            f"throughput ({t['jobs']} one-node `true` jobs submitted at once):",
            f"  jobs/s (first submit -> last completion): {t['jobsPerSecond']:.2f}" if t["jobsPerSecond"] else "  jobs/s: n/a",
            f"  first submit -> last completion:          {t['firstSubmitToLastCompletionSeconds']:.2f} s",
            f"  all {t['jobs']} PUTs answered after:            {t['submitSeconds']:.2f} s"
            f" (per PUT p50 {t['submitAckSeconds']['p50'] * 1000:.0f} ms, max {t['submitAckSeconds']['max'] * 1000:.0f} ms)",
            f"  succeeded / failed / unfinished:          {t['succeeded']} / {t['failed']} / {t['unfinished']}",
            f"  CPU per job: control plane (all its processes) {t['cpuMsPerJob']['server']:.1f} ms, node agents {t['cpuMsPerJob']['agents']:.1f} ms,"
            f" the jobs' processes {t['cpuMsPerJob']['jobs']:.1f} ms",
        ]
    a = result.get("array")
    if a:
        lines += [
            f"array ({a['tasks']} `true` tasks in one job): {a['state']}",
            f"  tasks/s (submit -> last task end):        {a['tasksPerSecond']:.2f}" if a["tasksPerSecond"] else "  tasks/s: n/a",
            f"  submit -> last task end:                  {a['submitToLastTaskEndSeconds']:.2f} s   (one PUT answered after {a['submitSeconds']:.2f} s)",
            f"  CPU per task: control plane {a['cpuMsPerTask']['server']:.1f} ms, node agents {a['cpuMsPerTask']['agents']:.1f} ms,"
            f" the tasks' processes {a['cpuMsPerTask']['jobs']:.1f} ms",
        ]
    lat = result.get("latency")
    if lat:
        for key, label in (("submitToStartSeconds", "submit -> start"), ("submitToEndSeconds", "submit -> end")):
            s = lat[key]
            lines.append(
                f"{label} latency, idle cluster ({s['n']} samples): p50 {s['p50'] * 1000:.0f} ms  "
                f"p99 {s['p99'] * 1000:.0f} ms  mean {s['mean'] * 1000:.0f} ms  max {s['max'] * 1000:.0f} ms"
            )
        lines.append(f"  latency jobs failed: {lat['failed']}")
    if result.get("error"):
        lines.append(f"ERROR: {result['error']}")
    c = result.get("cleanup", {})
    lines.append(
        f"cleanup: workspace deleted={c.get('workspaceDeleted')}  server exit status={c.get('serverExit')} (-15: SIGTERM, as asked)  "
        f"agents left={c.get('agentsLeft')}"
    )
    lines.append(f"bench wall time: {result['wallSeconds']:.1f} s")
    lines.append("=" * 72)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500, help="throughput jobs submitted at once (default 500)")
    parser.add_argument("--array", type=int, default=0, help="then one array job of this many tasks (default 0: none)")
    parser.add_argument("--latency-samples", type=int, default=50, help="jobs run one at a time for latency (default 50)")
    parser.add_argument("--nodes", type=int, default=2, help="cluster size (default 2)")
    parser.add_argument("--concurrency", type=int, default=100, help="concurrent PUT connections (default 100)")
    parser.add_argument("--poll", type=float, default=0.02, help="latency phase: job poll interval in seconds")
    parser.add_argument("--timeout", type=float, default=1800, help="throughput phase limit in seconds")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--data-dir", type=Path, help="use (and keep) this data dir instead of a temporary one")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir (server and agent logs)")
    args = parser.parse_args(argv)

    started = time.time()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="batchai-bench-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir.resolve()
    result: dict = {
        "environment": {"nodes": args.nodes, "cpus": os.cpu_count(), "python": sys.version.split()[0], "dataDir": str(data_dir)}
    }
    server = Server(data_dir)
    http: httpx.Client | None = None
    cleanup: dict = {"workspaceDeleted": False, "serverExit": None, "agentsLeft": None}
    result["cleanup"] = cleanup
    try:
        log(f"starting batchai serve (data dir {data_dir})")
        server.start()
        http = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, params={"api-version": API_VERSION}, timeout=120
        )
        t = time.time()
        cluster_id = setup(http, args.nodes)
        result["environment"]["clusterReadySeconds"] = time.time() - t
        log(f"cluster ready: {args.nodes} idle nodes after {time.time() - t:.1f} s")
        if args.jobs > 0:
            result["throughput"] = throughput(http, server.url, cluster_id, args.jobs, args.concurrency, args.timeout, server)
        if args.array > 0:
            result["array"] = array_throughput(http, cluster_id, args.array, args.timeout, server)
        if args.latency_samples > 0:
            result["latency"] = latency(http, cluster_id, args.latency_samples, args.poll, timeout=120)
    except BaseException as exc:  # noqa: BLE001 - report, clean up, then fail
        result["error"] = f"{type(exc).__name__}: {exc}"
        log(f"failed: {result['error']}")
    finally:
        if http is not None:
            try:
                delete_workspace(http)
                cleanup["workspaceDeleted"] = True
            except Exception as exc:  # noqa: BLE001
                log(f"could not delete the workspace: {exc}")
            http.close()
        cleanup["serverExit"] = server.stop()
        deadline = time.time() + 15
        left = agent_pids(data_dir)
        while left and time.time() < deadline:
            time.sleep(0.2)
            left = agent_pids(data_dir)
        cleanup["agentsLeft"] = len(left)
        for pid in left:  # ours: they name our data dir
            log(f"node agent {pid} survived the cleanup: SIGKILL")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not args.data_dir and not args.keep and "error" not in result:
            shutil.rmtree(data_dir, ignore_errors=True)
        elif "error" in result or args.keep:
            log(f"data dir kept: {data_dir} (serve.log, nodes/*/agent.log)")
    result["wallSeconds"] = time.time() - started
    print(figures_block(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    ok = "error" not in result and cleanup["agentsLeft"] == 0 and cleanup["workspaceDeleted"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
