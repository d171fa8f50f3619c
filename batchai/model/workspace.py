"""Workspaces: PUT `{"location", "tags"}`, PATCH `{"tags"}`."""

from __future__ import annotations

from typing import Annotated

from batchai.model.common import WireModel, matching

Location = Annotated[str, matching(r"[-\w\._]+", "a location may contain only letters, digits, '-', '_' and '.'")]


class WorkspaceCreateParameters(WireModel):
    location: Location
    tags: dict[str, str] | None = None


class WorkspaceUpdateParameters(WireModel):
    tags: dict[str, str] | None = None
