"""ARM resource ids of Microsoft.BatchAI: building, parsing and the lookup key.

ARM ids are case-insensitive, so the store keys every resource by the lower-cased id while
responses echo the id as the caller spelled it at creation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PROVIDER = "Microsoft.BatchAI"

# Child collections as they appear in paths, and the ARM `type` the service reported.
TYPES = {
    "workspaces": "Microsoft.BatchAI/workspaces",
    "clusters": "Microsoft.BatchAI/workspaces/clusters",
    "fileServers": "Microsoft.BatchAI/workspaces/fileservers",
    "experiments": "Microsoft.BatchAI/workspaces/experiments",
    "jobs": "Microsoft.BatchAI/workspaces/experiments/jobs",
    "sweeps": "Microsoft.BatchAI/workspaces/experiments/sweeps",  # an addition to 2018-05-01 (README)
}

_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.BatchAI"
    r"/workspaces/(?P<ws>[^/]+)(?:/(?P<kind>clusters|fileServers|experiments)/(?P<name>[^/]+)"
    r"(?:/jobs/(?P<job>[^/]+))?)?$",
    re.IGNORECASE,
)


def key(resource_id: str) -> str:
    return resource_id.rstrip("/").lower()


def resource_group_id(sub: str, rg: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}"


def workspace_id(sub: str, rg: str, ws: str) -> str:
    return f"{resource_group_id(sub, rg)}/providers/{PROVIDER}/workspaces/{ws}"


def child_id(parent_id: str, collection: str, name: str) -> str:
    return f"{parent_id}/{collection}/{name}"


@dataclass(frozen=True)
class ParsedId:
    subscription: str
    resource_group: str
    workspace: str
    kind: str  # workspaces | clusters | fileServers | experiments | jobs
    name: str
    experiment: str | None = None

    @property
    def workspace_id(self) -> str:
        return workspace_id(self.subscription, self.resource_group, self.workspace)


def parse(resource_id: str) -> ParsedId | None:
    """Parse a Batch AI ARM id; None when it is not one."""
    m = _ID.match(resource_id.rstrip("/"))
    if not m:
        return None
    sub, rg, ws = m["sub"], m["rg"], m["ws"]
    if not m["kind"]:
        return ParsedId(sub, rg, ws, "workspaces", ws)
    kind = {"clusters": "clusters", "fileservers": "fileServers", "experiments": "experiments"}[m["kind"].lower()]
    if m["job"]:
        if kind != "experiments":
            return None
        return ParsedId(sub, rg, ws, "jobs", m["job"], experiment=m["name"])
    return ParsedId(sub, rg, ws, kind, m["name"])


def output_segment(job_id: str, job_uuid: str) -> str:
    """`jobOutputDirectoryPathSegment`: {sub}/{rg}/workspaces/{ws}/experiments/{exp}/jobs/{job}/{uuid}."""
    p = parse(job_id)
    assert p is not None and p.kind == "jobs", job_id
    return f"{p.subscription}/{p.resource_group}/workspaces/{p.workspace}/experiments/{p.experiment}/jobs/{p.name}/{job_uuid}"
