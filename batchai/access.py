"""Who may do what: principals, role assignments, API tokens, and what a request asks of a role.

Pure and without I/O. Roles rank Reader < Contributor < Owner, as Azure RBAC's built-in roles:
Reader gets, lists and reads logs and outputs; Contributor also creates, changes, deletes and
terminates; Owner also manages tokens (role assignments) and reads the audit log. An assignment's
scope is `/` (the whole service) or a workspace's resource id, which covers everything in it.

An API token is `bai.<id>.<secret>`: the id finds its record, the record keeps only the secret's
SHA-256, so a copy of the store reveals no usable token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

from batchai import ids

ROLES = ("Reader", "Contributor", "Owner")
ACTIONS = {"read": "Reader", "write": "Contributor", "manage": "Owner"}
SERVICE = "/"
TOKEN_PREFIX = "bai."
MAX_TOKEN_DAYS = 3650  # a token lives at most ten years
MAX_TOKEN_NAME = 64
READ_ACTIONS = ("listoutputfiles", "listremotelogininformation", "listnodesetupfiles")  # POSTs that only read
_WORKSPACE = re.compile(r"^(/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\.batchai/workspaces/[^/]+)(/.*)?$", re.IGNORECASE)
_DURATION = re.compile(r"^(\d{1,6})([mhd])$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}
_NAME = re.compile(r"^[-\w. @]{1,64}$")


@dataclass(frozen=True)
class Assignment:
    scope: str  # "/" or a workspace's resource id
    role: str

    def to_wire(self) -> dict:
        return {"scope": self.scope, "role": self.role}


@dataclass(frozen=True)
class Principal:
    id: str
    name: str
    kind: str  # token | oidc | owner-token
    assignments: tuple[Assignment, ...] = field(default_factory=tuple)

    def to_wire(self) -> dict:
        return {"principal": {"id": self.id, "name": self.name, "kind": self.kind}, "assignments": [a.to_wire() for a in self.assignments]}


OWNER = Principal("owner-token", "owner-token", "owner-token", (Assignment(SERVICE, "Owner"),))


def role_rank(role: str) -> int:
    return ROLES.index(role)


def normalize_role(text: str) -> str:
    """`reader`, `Reader` -> `Reader`; ValueError for anything else."""
    for role in ROLES:
        if text.lower() == role.lower():
            return role
    raise ValueError(f"role must be one of {', '.join(ROLES)}")


def workspace_scope(resource_id: str) -> str | None:
    """The workspace id a resource id is in (itself for a workspace), lower-cased; None when it is in none."""
    match = _WORKSPACE.match(resource_id.rstrip("/"))
    return ids.key(match.group(1)) if match else None


def covers(scope: str, resource_id: str) -> bool:
    """Whether an assignment at `scope` covers `resource_id` (`/` covers every resource)."""
    if scope == SERVICE:
        return True
    key, within = ids.key(scope), ids.key(resource_id)
    return within == key or within.startswith(key + "/")


def allowed(principal: Principal, action: str, resource_id: str) -> bool:
    """Whether `principal` may do `action` (read | write | manage) on `resource_id` (`/` for the service)."""
    needed = role_rank(ACTIONS[action])
    return any(role_rank(a.role) >= needed and covers(a.scope, resource_id) for a in principal.assignments)


def visible(principal: Principal, resource_id: str) -> bool:
    """Whether `principal` may read `resource_id`: lists leave out what it may not."""
    return allowed(principal, "read", resource_id)


def request_action(method: str, path: str) -> tuple[str, str] | None:
    """What an ARM request inside a workspace asks: (action, workspace id); None for a request in no
    workspace (the route decides: lists filter, tokens and audit need Owner)."""
    scope = workspace_scope(path)
    if scope is None:
        return None
    if method in ("GET", "HEAD") or (method == "POST" and path.rstrip("/").rsplit("/", 1)[-1].lower() in READ_ACTIONS):
        return "read", scope
    return "write", scope


def audit_action(method: str, path: str) -> str:
    """The activity-log name of a change: `Microsoft.BatchAI/workspaces/clusters/write`, `.../delete`,
    `.../jobs/terminate/action`."""
    tail = path.split("/providers/Microsoft.BatchAI/", 1)[-1].strip("/").split("/") if "/providers/" in path else []
    types = tail[0::2]
    verb = {"PUT": "write", "PATCH": "write", "DELETE": "delete"}.get(method)
    if verb is None:  # POST .../{name}/{action}: the resource types before it, then the action
        types = tail[0:-1:2] if len(tail) % 2 else types
        verb = f"{tail[-1]}/action" if tail else "action"
    return "/".join(["Microsoft.BatchAI", *types, verb])


# -- tokens --------------------------------------------------------------------------------------
def new_token() -> tuple[str, str, str]:
    """(id, the token a user is given, the hash kept)."""
    token_id = secrets.token_hex(8)
    token = f"{TOKEN_PREFIX}{token_id}.{secrets.token_urlsafe(32)}"
    return token_id, token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_id_of(token: str) -> str | None:
    """The id a presented token names, or None when it is not one of ours."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    token_id, dot, secret = token[len(TOKEN_PREFIX) :].partition(".")
    return token_id if dot and secret and re.fullmatch(r"[0-9a-f]{16}", token_id) else None


def token_matches(record: dict, presented: str) -> bool:
    return hmac.compare_digest(record["hash"], token_hash(presented))


def token_usable(record: dict, now: float) -> str | None:
    """Why a stored token may not be used now (revoked, expired), or None."""
    if record.get("revoked"):
        return "The token has been revoked."
    if record.get("expires") is not None and record["expires"] <= now:
        return "The token has expired."
    return None


def token_principal(record: dict) -> Principal:
    return Principal(f"token:{record['id']}", record["name"], "token", (Assignment(record["scope"], record["role"]),))


def parse_duration(text: str) -> int:
    """`90m`, `12h`, `30d` -> seconds (at most MAX_TOKEN_DAYS); ValueError otherwise."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError("a duration is a number followed by m, h or d (e.g. 30d)")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not 0 < seconds <= MAX_TOKEN_DAYS * 86400:
        raise ValueError(f"a duration is from 1m to {MAX_TOKEN_DAYS}d")
    return seconds


def valid_token_name(name: str) -> bool:
    return bool(_NAME.match(name))


def public_token(record: dict) -> dict:
    """A token's record as the API shows it: never its hash."""
    return {k: record.get(k) for k in ("id", "name", "role", "scope", "createdOn", "createdBy", "expiresOn", "revoked")}
