"""Request-scoped access to the control plane's parts, and shared lookups."""

from __future__ import annotations

from fastapi import Request

from batchai import access, ids
from batchai.errors import ApiError
from batchai.model import validate_name, validate_resource_group
from batchai.model.names import validate_subscription
from batchai.ports import Record
from batchai.services import Services

RG = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.BatchAI"
WS = RG + "/workspaces/{ws}"


def services(request: Request) -> Services:
    return request.app.state.services


def workspace_path(sub: str, rg: str, ws: str) -> str:
    validate_subscription(sub)
    validate_resource_group(rg)
    validate_name("workspace", ws, "workspaceName")
    return ids.workspace_id(sub, rg, ws)


def require(svc: Services, resource_id: str, what: str) -> Record:
    record = svc.store.get(resource_id)
    if record is None:
        raise ApiError.not_found(f"The {what} '{resource_id.rsplit('/', 1)[-1]}' was not found.")
    return record


def visible_only(request: Request, fetch):
    """A paged store listing (`fetch(after_seq, limit)`) without the records the caller may not read."""
    who = request.state.principal
    if access.allowed(who, "read", access.SERVICE):
        return fetch

    def filtered(after: int, limit: int) -> list[Record]:
        found: list[Record] = []
        while len(found) < limit:
            batch = fetch(after, limit)
            if not batch:
                break
            found += [r for r in batch if access.visible(who, r.id)]
            after = batch[-1].seq
        return found[:limit]

    return filtered
