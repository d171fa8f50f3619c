"""The audit log's entries (the Store port keeps them): who changed what, with what result.

Recorded by the API's front door (`batchai.api.auth`: every change and failed authentication), the
token routes (role changes) and the submission channels (jobs by queue message or blob drop).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

log = logging.getLogger("batchai.audit")

MAX_RESOURCE = 1024  # a path as long as a request line may be: the entry keeps its start
JOB_WRITE = "Microsoft.BatchAI/workspaces/experiments/jobs/write"


def audit(store, principal: str, name: str, action: str, resource: str, result: int, message: str = "") -> None:
    """One audit entry. Only names, ids and paths: never a body, a header or a query string."""
    now = time.time()
    entry = {
        "time": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
        "ts": now,
        "principal": principal,
        "principalName": name,
        "action": action,
        "resource": resource[:MAX_RESOURCE],
        "result": result,
    }
    if message:
        entry["message"] = message
    try:
        store.record_audit(entry)
    except Exception:  # the request it records is done either way; losing its entry must be loud
        log.exception("could not record an audit entry for %s %s", action, resource)
