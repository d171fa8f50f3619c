"""Node identities: a credential per node, and cluster enrollment tokens that machines exchange for one.

Both are HMAC-SHA256 under one key kept in the store (`node_key`), so nothing secret is stored per
node and nothing needs looking up to check a call:

- a node's credential is `HMAC(key, "node\\n" + node id)`. Node ids are never reused (they end in a
  random part), so a node that is removed (its record deleted) cannot come back with its old
  credential: the door refuses calls for nodes that do not exist.
- a cluster's enrollment token is `ENROLL_PREFIX + base64(cluster id) + "." + HMAC(key, "enroll\\n" +
  cluster id + "\\n" + generation)`. Rotating bumps the generation kept with the cluster, which
  voids every token handed out before; the nodes already enrolled keep their own credentials.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable
from functools import partial

ENROLL_PREFIX = "bai-enroll."
MAX_TOKEN_CHARS = 2048  # far above any token made here: a bound on what is decoded


def node_key(store) -> bytes:
    """The key of every node credential and enrollment token, made on first use and kept in the store."""
    return store.setting("node_key", lambda: secrets.token_hex(32)).encode()


def node_credentials(store) -> Callable[[str], str]:
    """node id -> its credential, for the compute adapters that start nodes."""
    return partial(node_credential, node_key(store))


def node_credential(key: bytes, node_id: str) -> str:
    return hmac.new(key, f"node\n{node_id}".encode(), hashlib.sha256).hexdigest()


def credential_matches(key: bytes, node_id: str, presented: str) -> bool:
    return hmac.compare_digest(node_credential(key, node_id).encode(), presented.encode())


def enrollment_token(key: bytes, cluster_id: str, generation: int) -> str:
    encoded = base64.urlsafe_b64encode(cluster_id.encode()).decode().rstrip("=")
    return f"{ENROLL_PREFIX}{encoded}.{_enroll_signature(key, cluster_id, generation)}"


def enrollment_cluster(token: str) -> str | None:
    """The cluster id a token names (not yet checked: see `enrollment_matches`), or None if malformed."""
    if len(token) > MAX_TOKEN_CHARS or not token.startswith(ENROLL_PREFIX):
        return None
    encoded, _, signature = token[len(ENROLL_PREFIX) :].rpartition(".")
    if not encoded or not signature:
        return None
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, ValueError):
        return None


def enrollment_matches(key: bytes, token: str, cluster_id: str, generation: int) -> bool:
    return hmac.compare_digest(enrollment_token(key, cluster_id, generation).encode(), token.encode())


def _enroll_signature(key: bytes, cluster_id: str, generation: int) -> str:
    return hmac.new(key, f"enroll\n{cluster_id}\n{generation}".encode(), hashlib.sha256).hexdigest()
