"""Scheduler pass benchmark: 10,000 queued jobs, 1,000 nodes, mixed sizes and priorities.

    .venv/bin/python bench/scheduler_pass.py [--jobs 10000] [--nodes 1000] [--repeat 20] [--json PATH]

Two figures per scenario, median and worst of `--repeat` passes:
- policy: `batchai.scheduling.place` alone (order, gang fit, fairness, backfill), pure;
- pass: what a controller pass spends deciding (`scheduling_pass.decide`), from a SQLite store
  holding the jobs and nodes: reading the nodes, the running jobs' summaries and the head of the
  queue (`QUEUE_DEPTH` past the idle nodes), then the policy. Launching the
  chosen jobs is per started job, not per pass, and is left out (the simulated-cluster bench
  covers it).
Scenarios: an idle cluster (1,000 idle nodes: hundreds of jobs placed), a busy one (all nodes
running, none idle: the pass stops before the queue), and a nearly busy one (50 idle nodes,
the head of the queue blocked, the rest a backfill scan of the queue's head). Target: < 50 ms.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batchai import ids, job_state  # noqa: E402
from batchai.adapters.sqlite_store import SqliteStore  # noqa: E402
from batchai.lifecycle import utcnow  # noqa: E402
from batchai.ports import NodeRecord  # noqa: E402
from batchai.records import new_record  # noqa: E402
from batchai.scheduling import place  # noqa: E402
from batchai.scheduling_pass import busy_until, decide, queued_job, usable  # noqa: E402

SUB, RG, WS = "00000000-0000-0000-0000-000000000000", "bench", "ws"
WALL_CLOCKS = ["PT10M", "PT1H", "PT4H", "P1D", None]


def build_store(path: Path, jobs: int, nodes: int, rng: random.Random) -> tuple[SqliteStore, str]:
    store = SqliteStore(path)
    ws = ids.workspace_id(SUB, RG, WS)
    cluster = ids.child_id(ws, "clusters", "c")
    experiments = [ids.child_id(ws, "experiments", f"e{i}") for i in range(20)]
    for i in range(jobs):
        experiment = experiments[0] if i % 2 else rng.choice(experiments)  # one big sweep and many small ones
        props = {
            "cluster": {"id": cluster},
            "nodeCount": rng.choice([1, 1, 1, 2, 2, 4, 8]),
            "schedulingPriority": rng.choice(["low", "normal", "normal", "high"]),
            "constraints": {},
        }
        wall = rng.choice(WALL_CLOCKS)
        if wall:
            props["constraints"]["maxWallClockTime"] = wall
        record = new_record(ids.child_id(experiment, "jobs", f"j{i:05d}"), "jobs", f"j{i:05d}", experiment, props)
        store.create(job_state.new_job(record, utcnow(), uuid=f"u{i:05d}"))
    now = time.time()
    for i in range(nodes):
        store.put_node(NodeRecord(f"n{i:04d}", cluster, f"node-{i}", "idle", last_seen=now))
    return store, cluster


def occupy(store: SqliteStore, cluster: str, busy: int, rng: random.Random) -> None:
    """Start `busy` single-node running jobs (outside the queue) on the first nodes."""
    ws = ids.workspace_id(SUB, RG, WS)
    experiment = ids.child_id(ws, "experiments", "running")
    for i in range(busy):
        job_id = ids.child_id(experiment, "jobs", f"r{i:04d}")
        if store.get(job_id) is None:
            props = {"cluster": {"id": cluster}, "nodeCount": 1, "constraints": {"maxWallClockTime": rng.choice(WALL_CLOCKS[:-1])}}
            record = job_state.new_job(new_record(job_id, "jobs", f"r{i:04d}", experiment, props), utcnow(), uuid=f"r{i:04d}")
            store.create(job_state.start(record, utcnow(), nodes=[(f"n{i:04d}", f"node-{i}")], paths={}))
        store.claim_nodes(cluster, job_id, [f"n{i:04d}"])


def timed(fn, repeat: int) -> tuple[dict, int]:
    times, result = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return {"medianMs": round(statistics.median(times), 2), "maxMs": round(max(times), 2)}, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rng = random.Random(7)
    t0 = time.time()
    store, cluster = build_store(Path(tempfile.mkdtemp(prefix="batchai-pass-")) / "store.db", args.jobs, args.nodes, rng)
    print(f"[pass] {args.jobs} queued jobs and {args.nodes} nodes stored in {time.time() - t0:.1f} s", file=sys.stderr)
    queue = [queued_job(q) for q in store.job_summaries(cluster, ("queued",))]
    results = {"jobs": args.jobs, "nodes": args.nodes}
    for name, busy in (("idle", 0), ("nearlyBusy", args.nodes - 50), ("busy", args.nodes)):
        occupy(store, cluster, busy, rng)
        now = time.time()
        nodes = store.nodes(cluster)
        active = {ids.key(j.id): j for j in store.job_summaries(cluster, ("running", "terminating"))}
        free = [n.id for n in nodes if usable(n, now, 60.0)]
        ends = busy_until(nodes, active, now, 60.0)
        policy, placed = timed(lambda free=free, ends=ends: place(queue, free, ends), args.repeat)
        full, decided = timed(lambda: decide(store, cluster, time.time(), 60.0), args.repeat)
        results[name] = {"idleNodes": len(free), "placed": len(placed), "passPlaced": len(decided), "policy": policy, "pass": full}
        print(
            f"[pass] {name:10s}: {len(free):4d} idle nodes;"
            f" policy over the whole queue {policy['medianMs']:.1f} ms (max {policy['maxMs']:.1f}), {len(placed)} jobs placed;"
            f" pass over the queue's head {full['medianMs']:.1f} ms (max {full['maxMs']:.1f}), {len(decided)} jobs placed"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
