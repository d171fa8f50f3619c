"""Job output files: listing with signed download URLs, and the download endpoint.

A `downloadUrl` works without the bearer token, as the service's SAS URLs did: it carries the
file's path and an expiry signed with HMAC-SHA256 under a key kept in the store. Downloads
honour `Range` (clients tail growing logs with `Range: bytes=<offset>-`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from batchai.api.arm import paged, page_size, skip_token
from batchai.api.deps import services
from batchai.errors import ApiError
from batchai.ports import Record

router = APIRouter()
STDOUTERR = "stdouterr"


def _key(request: Request) -> bytes:
    return request.app.state.signing_key


def _sign(key: bytes, path: str, expiry: int) -> str:
    return hmac.new(key, f"{path}\n{expiry}".encode(), hashlib.sha256).hexdigest()


def download_url(request: Request, path: Path, expiry: int) -> str:
    encoded = base64.urlsafe_b64encode(str(path).encode()).decode().rstrip("=")
    query = urlencode({"p": encoded, "se": expiry, "sig": _sign(_key(request), str(path), expiry)})
    return f"{str(request.base_url).rstrip('/')}/_files/{quote(path.name)}?{query}"


def _directory(request: Request, record: Record) -> Path | None:
    output_id = request.query_params.get("outputdirectoryid")
    if not output_id:
        raise ApiError.bad_request("The outputdirectoryid query parameter is required.", target="outputdirectoryid")
    paths = record.internal.get("paths")
    known = {STDOUTERR.lower(), *(d["id"].lower() for d in record.properties.get("outputDirectories", []))}
    if output_id.lower() not in known:
        raise ApiError.bad_request(f"The job has no output directory '{output_id}'.", target="outputdirectoryid")
    if paths is None:
        return None  # not launched yet: nothing written
    if output_id.lower() == STDOUTERR:
        return Path(paths["stdouterr"])
    return Path(next(v for k, v in paths["outputs"].items() if k.lower() == output_id.lower()))


def _expiry_minutes(request: Request) -> int:
    try:
        minutes = int(request.query_params.get("linkexpiryinminutes", "60"))
    except ValueError:
        minutes = 0
    if not 5 <= minutes <= 600:
        raise ApiError.bad_request("linkexpiryinminutes must be an integer from 5 to 600.", target="linkexpiryinminutes")
    return minutes


def _entry(request: Request, path: Path, expiry: int) -> dict:
    if path.is_dir():
        return {"name": path.name, "fileType": "directory"}
    stat = path.stat()
    return {
        "name": path.name,
        "fileType": "file",
        "downloadUrl": download_url(request, path, expiry),
        "properties": {
            "lastModified": datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat().replace("+00:00", "Z"),
            "contentLength": stat.st_size,
        },
    }


def list_output_files(request: Request, record: Record):
    root = _directory(request, record)
    expiry = int(time.time()) + 60 * _expiry_minutes(request)
    size, start = page_size(request), skip_token(request)
    relative = request.query_params.get("directory", ".") or "."
    if root is None or not root.is_dir():
        return paged(request, [], None)
    target = (root / relative).resolve()
    if target != root.resolve() and root.resolve() not in target.parents:
        raise ApiError.bad_request("directory must stay inside the output directory.", target="directory")
    if not target.is_dir():
        return paged(request, [], None)
    children = sorted(target.iterdir(), key=lambda p: p.name)
    window = children[start:start + size]
    more = start + size < len(children)
    return paged(request, [_entry(request, p, expiry) for p in window], start + size if more else None)


@router.get("/_files/{name}")
def download(request: Request, name: str, p: str, se: int, sig: str):
    """Unauthenticated by design: the signature is the authorization."""
    try:
        path = base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)).decode()
    except ValueError:
        raise ApiError(403, "AuthenticationFailed", "The download link is not valid.")
    if not hmac.compare_digest(_sign(_key(request), path, se), sig):
        raise ApiError(403, "AuthenticationFailed", "The download link signature does not match.")
    if se < time.time():
        raise ApiError(403, "AuthenticationFailed", "The download link has expired.")
    if not os.path.isfile(path):
        raise ApiError.not_found("The file no longer exists.")
    return FileResponse(path, media_type="application/octet-stream")
