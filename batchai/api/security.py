"""Additions to the 2018-05-01 API for access control: who am I, API tokens, and the audit log.

GET    /providers/Microsoft.BatchAI/whoami              the caller's principal and role assignments
POST   /providers/Microsoft.BatchAI/tokens              {"role", "scope"?, "name"?, "expiresIn"?}: a new token (Owner of its scope)
GET    /providers/Microsoft.BatchAI/tokens              the tokens of the scopes the caller owns (never their secrets)
DELETE /providers/Microsoft.BatchAI/tokens/{id}         revoke (Owner of its scope)
GET    /providers/Microsoft.BatchAI/auditLog            entries of the scopes the caller owns, oldest first; filters:
       principal, action, resource (and what is under it), result (HTTP status), since, until (ISO-8601)
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from batchai import access, ids
from batchai.access import Principal
from batchai.api.arm import JSONResponse, json_body, page_size, paged, skip_token
from batchai.api.deps import services, workspace_path
from batchai.audit import audit
from batchai.errors import ApiError

router = APIRouter()
BASE = "/providers/Microsoft.BatchAI"


def principal(request: Request) -> Principal:
    return request.state.principal


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _time(request: Request, name: str) -> float | None:
    text = request.query_params.get(name)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError.bad_request(f"{name} must be an ISO-8601 time.", target=name) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


@router.get(BASE + "/whoami")
def whoami(request: Request):
    return principal(request).to_wire()


def _scope(body: dict) -> str:
    scope = body.get("scope", access.SERVICE)
    if not isinstance(scope, str):
        raise ApiError.bad_request("scope must be '/' or a workspace's resource id.", target="scope")
    if scope == access.SERVICE:
        return scope
    parsed = ids.parse(scope) if access.workspace_scope(scope) == ids.key(scope) else None
    if parsed is None or parsed.kind != "workspaces":
        raise ApiError.bad_request("scope must be '/' or a workspace's resource id.", target="scope")
    return workspace_path(parsed.subscription, parsed.resource_group, parsed.workspace)


def _require_owner(who: Principal, scope: str) -> None:
    if not access.allowed(who, "manage", scope):
        raise ApiError(403, "AuthorizationFailed", f"Managing tokens of '{scope}' needs the Owner role there.")


@router.post(BASE + "/tokens")
async def create_token(request: Request):
    body = await json_body(request)
    try:
        role = access.normalize_role(str(body.get("role", "")))
    except ValueError as exc:
        raise ApiError.bad_request(str(exc), target="role") from None
    scope = _scope(body)
    name = body.get("name", f"{role.lower()}-token")
    if not isinstance(name, str) or not access.valid_token_name(name):
        raise ApiError.bad_request("name: 1 to 64 letters, digits, spaces and -_.@", target="name")
    expires_in = body.get("expiresIn")
    try:
        seconds = None if expires_in is None else access.parse_duration(str(expires_in))
    except ValueError as exc:
        raise ApiError.bad_request(str(exc), target="expiresIn") from None
    who = principal(request)
    _require_owner(who, scope)
    token_id, token, digest = access.new_token()
    now = time.time()
    expires = None if seconds is None else now + seconds
    record = {
        "id": token_id,
        "name": name,
        "role": role,
        "scope": scope,
        "hash": digest,
        "created": now,
        "createdOn": _iso(now),
        "createdBy": who.id,
        "expires": expires,
        "expiresOn": _iso(expires),
        "revoked": False,
    }
    store = services(request).store

    def save() -> None:
        store.put_token(record)
        audit(store, who.id, who.name, "Microsoft.BatchAI/tokens/write", f"{BASE}/tokens/{token_id}", 201, f"{role} at {scope}")

    await run_in_threadpool(save)
    return JSONResponse({**access.public_token(record), "token": token}, status_code=201)


def _an_owner(who: Principal, what: str) -> None:
    if not any(a.role == "Owner" for a in who.assignments):
        raise ApiError(403, "AuthorizationFailed", f"{what} needs the Owner role.")


@router.get(BASE + "/tokens")
def list_tokens(request: Request):
    who = principal(request)
    _an_owner(who, "Listing tokens")
    tokens = [access.public_token(t) for t in services(request).store.tokens() if access.allowed(who, "manage", t["scope"])]
    return {"value": tokens}


@router.delete(BASE + "/tokens/{token_id}")
def revoke_token(request: Request, token_id: str):
    store, who = services(request).store, principal(request)
    record = store.get_token(token_id)
    if record is None or not access.allowed(who, "read", record["scope"]):
        raise ApiError.not_found(f"The token '{token_id}' was not found.")
    _require_owner(who, record["scope"])
    revoked = store.revoke_token(token_id) or record
    audit(
        store,
        who.id,
        who.name,
        "Microsoft.BatchAI/tokens/delete",
        f"{BASE}/tokens/{token_id}",
        200,
        f"{record['role']} at {record['scope']}",
    )
    return access.public_token(revoked)


AUDIT_FILTERS = ("principal", "action", "resource", "result")
MAX_SCAN = 10_000  # entries looked at for one page when most are not the caller's to see


@router.get(BASE + "/auditLog")
def audit_log(request: Request):
    who = principal(request)
    _an_owner(who, "Reading the audit log")
    filters: dict = {name: request.query_params.get(name) for name in AUDIT_FILTERS}
    if filters["result"] is not None:
        if not filters["result"].isdigit() or len(filters["result"]) > 3:
            raise ApiError.bad_request("result must be an HTTP status code.", target="result")
        filters["result"] = int(filters["result"])
    filters["since"], filters["until"] = _time(request, "since"), _time(request, "until")
    size, after = page_size(request), skip_token(request)
    store, scanned = services(request).store, 0
    entries: list[dict] = []
    while len(entries) <= size and scanned < MAX_SCAN:
        batch = store.audit_log(after_seq=after, limit=size + 1, **filters)
        if not batch:
            break
        scanned += len(batch)
        after = batch[-1]["seq"]
        entries += [e for e in batch if access.allowed(who, "manage", e["resource"])]
    more = len(entries) > size or scanned >= MAX_SCAN
    entries = entries[:size]
    token = (entries[-1]["seq"] if len(entries) == size else after) if more else None
    return paged(request, [{k: v for k, v in e.items() if k != "ts"} for e in entries], token)
