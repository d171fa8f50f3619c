"""Original Batch AI job files (`job.json`) -> `JobCreateParameters`, as the az CLI did it.

Recipe files are `{"$schema": ..., "properties": {...}}` without a cluster and with
`<AZURE_BATCHAI_STORAGE_ACCOUNT>`-style placeholders (reference §3.5, §5).
"""

from __future__ import annotations

import re
from typing import Any

from batchai.errors import ApiError
from batchai.model.common import parse
from batchai.model.job import JobCreateParameters

_PLACEHOLDER = re.compile(r"<([A-Za-z0-9_.\-]+)>")


def substitute(value: Any, placeholders: dict[str, str]) -> Any:
    """Replace `<NAME>` in every string value (not keys); unknown placeholders stay as they are."""
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: placeholders.get(m.group(1), m.group(0)), value)
    if isinstance(value, dict):
        return {k: substitute(v, placeholders) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, placeholders) for v in value]
    return value


def load_job_file(
    raw: dict,
    *,
    cluster_id: str | None = None,
    placeholders: dict[str, str] | None = None,
    require_cluster: bool = False,
    node_count: int | None = None,
) -> JobCreateParameters:
    """Parse a job file, or a bare properties object, into `JobCreateParameters`.

    - `placeholders`: values for `<NAME>` (keys without the brackets; bracketed keys work too).
    - `cluster_id`: sets `properties.cluster.id` (overriding any cluster in the file).
    - `require_cluster`: with the default False a file that names no cluster (and no
      `cluster_id` given) still parses, with `properties.cluster` left None; the server then
      asks for it. Pass True to get the 400 here.
    - `node_count`: overrides `nodeCount` *before* validation, so the defaults derived from it
      (processCount, TensorFlow workerCount/parameterServerCount) follow the override.
    Raises `ApiError` (400) with the target of the first problem, as `parse` does.
    """
    if not isinstance(raw, dict):
        raise ApiError.bad_request("A job file must contain a JSON object.")
    inner = raw.get("properties")
    props = inner if isinstance(inner, dict) else raw
    props = {k: v for k, v in props.items() if k != "$schema"}
    if placeholders:
        props = substitute(props, {k.strip("<>"): v for k, v in placeholders.items()})
    if cluster_id is not None:
        props["cluster"] = {"id": cluster_id}
    if node_count is not None:
        props["nodeCount"] = node_count
    return parse(JobCreateParameters, {"properties": props}, context={"require_cluster": require_cluster})
