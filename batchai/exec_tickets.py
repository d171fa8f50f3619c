"""Exec tickets: how a user's `cluster node exec` (a command, a shell, a port forward) reaches a node's agent.

Standard library only (the agent imports it). The control plane authorizes the user's request with
the user's bearer token, then hands back a ticket the node's agent checks without calling anyone:
`base64url(JSON grant) + "." + HMAC-SHA256(node credential, "exec-ticket\\n" + that base64)`. The
node credential (batchai/node_identity.py) is known to the control plane and to that node's agent
only (never to the jobs it runs), so no one else can make a ticket, and a ticket for one node is
worthless on another. A grant names its node, when it expires (`exp`, epoch seconds; short-lived:
TTL_SECONDS), a random `nonce`, and what it allows:

- `{"kind": "exec", "command": str | None, "job": job id | None}`: run the command (None: a shell)
  on the node, or inside the job's task there when `job` is given. Good for one connection.
- `{"kind": "forward", "host": str, "port": int}`: open one TCP connection from the node to
  host:port and relay it. Good for any number of connections until it expires (a browser opens many).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time

TTL_SECONDS = 120
CLOCK_SLACK_SECONDS = 60  # a joined machine's clock may be off by this much
MAX_TICKET_CHARS = 96 * 1024  # the command it carries is at most MAX_COMMAND_CHARS
MAX_COMMAND_CHARS = 64 * 1024
MAX_HOST_CHARS = 255
KINDS = ("exec", "forward")


class InvalidTicket(ValueError):
    """The ticket is malformed, forged, expired or for another node."""


def _signature(credential: str, payload: str) -> str:
    return hmac.new(credential.encode(), f"exec-ticket\n{payload}".encode(), hashlib.sha256).hexdigest()


def issue(credential: str, node_id: str, grant: dict, *, now: float | None = None, ttl: float = TTL_SECONDS) -> tuple[str, float]:
    """(ticket, its expiry in epoch seconds) for `grant` on node `node_id`, signed with the node's credential."""
    expires = (time.time() if now is None else now) + ttl
    body = {**grant, "node": node_id, "exp": expires, "nonce": secrets.token_hex(16)}
    payload = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode().rstrip("=")
    return f"{payload}.{_signature(credential, payload)}", expires


def verify(credential: str, node_id: str, ticket: object, *, now: float | None = None) -> dict:
    """The grant of a ticket signed for this node and not expired; InvalidTicket otherwise."""
    if not isinstance(ticket, str) or len(ticket) > MAX_TICKET_CHARS:
        raise InvalidTicket("the ticket is malformed")
    payload, _, signature = ticket.rpartition(".")
    if not payload or not hmac.compare_digest(_signature(credential, payload).encode(), signature.encode()):
        raise InvalidTicket("the ticket was not issued for this node")
    try:
        grant = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise InvalidTicket("the ticket is malformed") from exc
    if not isinstance(grant, dict) or grant.get("node") != node_id or grant.get("kind") not in KINDS:
        raise InvalidTicket("the ticket was not issued for this node")
    exp = grant.get("exp")
    if not isinstance(exp, (int, float)) or (time.time() if now is None else now) > exp + CLOCK_SLACK_SECONDS:
        raise InvalidTicket("the ticket has expired: ask the control plane for a new one")
    return grant
