"""New stored records, as every create path makes them (API routes, the submission path, benches)."""

from __future__ import annotations

from batchai import ids
from batchai.lifecycle import utcnow
from batchai.ports import Record


def new_record(resource_id: str, kind: str, name: str, parent: str, properties: dict, **envelope) -> Record:
    now = utcnow()
    properties = {**properties, "creationTime": now, "provisioningState": "succeeded", "provisioningStateTransitionTime": now}
    return Record(id=resource_id, type=kind, name=name, parent=parent, body={"type": ids.TYPES[kind], **envelope, "properties": properties})
