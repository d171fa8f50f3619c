"""Stored records -> response bodies: read-only fields computed, secrets removed."""

from __future__ import annotations

import copy
import time

from batchai.lifecycle import node_state_counts
from batchai.model import redact_cluster, redact_file_server, redact_job
from batchai.ports import Record


def _envelope(record: Record, properties: dict) -> dict:
    body = {"id": record.id, "name": record.name, "type": record.body.get("type")}
    for extra in ("location", "tags"):
        if extra in record.body:
            body[extra] = copy.deepcopy(record.body[extra])
    body["properties"] = properties
    return body


def workspace(record: Record) -> dict:
    return _envelope(record, copy.deepcopy(record.properties))


def experiment(record: Record) -> dict:
    return _envelope(record, copy.deepcopy(record.properties))


def job(record: Record) -> dict:
    """The job; `properties.events` (queued, started, node lost, warnings, ended: each with its
    attempt) is ours, beyond the 2018-05-01 contract: the SDK ignores it, people and the CLI read it."""
    props = redact_job(record.properties)
    props["events"] = list(record.internal.get("events", []))
    return _envelope(record, props)


def task(record: Record) -> dict:
    """An array job's task: its index, state, attempts and result (ours, beyond 2018-05-01)."""
    props = record.properties
    properties = {
        "index": record.internal["arrayTask"]["index"],
        "executionState": props["executionState"],
        "executionStateTransitionTime": props["executionStateTransitionTime"],
        "attempts": record.internal.get("attempt", 1),
        "retries": record.internal.get("retries", 0),
        "nodes": [record.internal.get("nodeNames", {}).get(n, n) for n in record.internal.get("nodes", [])],
        "events": list(record.internal.get("events", [])),
    }
    if "executionInfo" in props:
        properties["executionInfo"] = copy.deepcopy(props["executionInfo"])
    return {"id": record.id, "name": record.name, "type": "Microsoft.BatchAI/workspaces/experiments/jobs/tasks", "properties": properties}


def file_server(record: Record) -> dict:
    return _envelope(record, redact_file_server(record.properties))


def cluster(record: Record, store, node_timeout: float) -> dict:
    props = redact_cluster(record.properties)
    nodes = store.nodes(record.id)
    counts = node_state_counts(nodes, time.time(), node_timeout)
    target = record.internal.get("target", 0)
    live = [n for n in nodes if n.state != "leaving"]
    resizing = counts["preparingNodeCount"] > 0 or counts["leavingNodeCount"] > 0 or len(live) != target
    props["currentNodeCount"] = len(live)
    props["nodeStateCounts"] = counts
    props["allocationState"] = "resizing" if resizing else "steady"
    props["allocationStateTransitionTime"] = record.internal.get("allocationTime", props.get("creationTime"))
    gpus = sum(len(n.gpu_list()) for n in live)
    if gpus:  # ours, beyond the 2018-05-01 contract: what the nodes' agents found (each node's: listRemoteLoginInformation)
        props["gpuCount"] = gpus
    errors = [
        {
            "code": e["code"],
            "message": e["message"],
            "details": [{"name": "failedPasses", "value": str(e["failures"])}, {"name": "lastFailureTime", "value": e["time"]}],
        }
        for e in (record.internal.get("errors") or {}).values()
    ]
    errors += [{"code": "NodeUnusable", "message": f"{n.name}: {n.error}"} for n in nodes if n.error]
    if errors:
        props["errors"] = errors
    return _envelope(record, props)
