"""Metrics from running jobs: JSON lines a job appends to `$AZ_BATCHAI_METRICS_FILE` (or writes with
`batchai metric`), relayed by the node agent on its heartbeats, kept with the job.

A report is `{"taskId", "from": N, "lines": [...]}`: the task's lines from its N-th on. The job keeps
how many lines of each task it has, so a report sent again after a lost answer adds nothing. Lines
that are not JSON objects are counted and dropped; a job keeps at most MAX_PER_JOB entries (later
ones are counted in `metricsDropped`). Readable at `.../jobs/{j}/metrics` and with `batchai job metrics`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from batchai.ports import Record

if TYPE_CHECKING:
    from batchai.services import Services

MAX_PER_JOB = 10_000
MAX_LINES_PER_REPORT = 1000  # the agent sends at most this many lines of a task per heartbeat
MAX_LINE_BYTES = 4096  # longer lines are dropped by the agent
MAX_REPORT_BYTES = 256 * 1024  # metric lines in one heartbeat, all tasks together (its body is bounded: api/nodes.py)


def _entry(line) -> dict | None:
    try:
        entry = json.loads(line) if isinstance(line, str) else None
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def _add(record: Record, task_id: str, start: int, lines: list) -> Record | None:
    counts = record.internal.setdefault("metricLines", {})
    have = counts.get(task_id, 0)
    fresh = lines[max(0, have - start) :]
    if not fresh or start > have:  # nothing new, or a gap (lines this job never saw): keep the order true
        return None
    counts[task_id] = have + len(fresh)
    entries = record.internal.setdefault("metrics", [])
    for line in fresh:
        entry = _entry(line)
        if entry is None:
            record.internal["metricsMalformed"] = record.internal.get("metricsMalformed", 0) + 1
        elif len(entries) >= MAX_PER_JOB:
            record.internal["metricsDropped"] = record.internal.get("metricsDropped", 0) + 1
        else:
            entries.append(entry)
    return record


def record_report(svc: Services, node_id: str, report: dict) -> Record | None:
    """Keep a node's report for its task's job; the job as stored after, or None when nothing changed
    (a repeat, or a task that is not this node's)."""
    task_id, start, lines = report["taskId"], report["from"], report["lines"]
    if not isinstance(start, int) or start < 0 or not isinstance(lines, list) or len(lines) > MAX_LINES_PER_REPORT:
        raise ValueError(f"a metrics report is {{taskId, from: a line number, lines: a list of at most {MAX_LINES_PER_REPORT}}}")
    task = svc.store.get_task(task_id)
    if task is None or task.node != node_id:
        return None
    job = svc.store.get(task.job)
    if job is None or job.type != "jobs":  # a node setup task's "job" is its cluster
        return None
    return svc.store.mutate(job.id, lambda record: _add(record, task_id, start, lines))


def of(record: Record) -> dict:
    """A job's metrics as the API answers them."""
    body: dict = {"value": list(record.internal.get("metrics", []))}
    for key in ("metricsDropped", "metricsMalformed"):
        if record.internal.get(key):
            body[key] = record.internal[key]
    return body
