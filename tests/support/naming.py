"""Names no other test uses: tests that share a server (session or module fixtures) never collide."""

from __future__ import annotations

import re
import uuid

MAX_LENGTH = 64  # Batch AI names: letters, digits, '-' and '_', 1 to 64 characters (batchai/model/names.py)
_OWNER_LENGTH = 24


def unique_name(prefix: str, owner: str = "") -> str:
    """`prefix-owner-1a2b3c4d`: a valid workspace (cluster, experiment, job) name, never the same twice.

    owner: who makes it, for whoever reads a leftover name, e.g. a pytest node name: a test's
    ("test_x[a]" gives "x_a") or a module's ("test_mod.py" gives "mod"), shortened.
    """
    if not re.fullmatch(r"[A-Za-z0-9][-\w]*", prefix, re.ASCII):
        raise ValueError(f"{prefix!r}: a name starts with a letter or digit and has only letters, digits, '-' and '_'")
    slug = re.sub(r"^test_|\.py$", "", owner)
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", slug).strip("_-")[:_OWNER_LENGTH].strip("_-")
    name = "-".join(part for part in (prefix, slug, uuid.uuid4().hex[:8]) if part)
    if len(name) > MAX_LENGTH:
        raise ValueError(f"{name!r} is longer than {MAX_LENGTH} characters: use a shorter prefix")
    return name
