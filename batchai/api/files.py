"""Job output files: listing with signed download URLs, and the download endpoint.

A `downloadUrl` works without the bearer token, as the service's SAS URLs did: it carries the
file's path and an expiry signed with HMAC-SHA256 under a key kept in the store. Downloads
honour `Range` (clients tail growing logs with `Range: bytes=<offset>-`).
With blob storage configured, the files are listed from there instead (`batchai.output_sync`
uploads them as they are written) and each `downloadUrl` is the blob's read-only SAS URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from batchai.api.arm import page_size, paged, skip_token
from batchai.api.deps import services
from batchai.errors import ApiError
from batchai.output_sync import STDOUTERR, blob_prefix
from batchai.ports import BlobInfo, BlobStore, Record

router = APIRouter()
T = TypeVar("T")


def _key(request: Request) -> bytes:
    return request.app.state.signing_key


def _sign(key: bytes, path: str, expiry: int) -> str:
    return hmac.new(key, f"{path}\n{expiry}".encode(), hashlib.sha256).hexdigest()


def download_url(request: Request, path: Path, expiry: int) -> str:
    encoded = base64.urlsafe_b64encode(str(path).encode()).decode().rstrip("=")
    query = urlencode({"p": encoded, "se": expiry, "sig": _sign(_key(request), str(path), expiry)})
    return f"{str(request.base_url).rstrip('/')}/_files/{quote(path.name)}?{query}"


def _directory_id(request: Request, record: Record) -> str:
    """The requested output directory's id as the job spells it (the query's case may differ)."""
    output_id = request.query_params.get("outputdirectoryid")
    if not output_id:
        raise ApiError.bad_request("The outputdirectoryid query parameter is required.", target="outputdirectoryid")
    known = [STDOUTERR, *(d["id"] for d in record.properties.get("outputDirectories", []))]
    for directory_id in known:
        if directory_id.lower() == output_id.lower():
            return directory_id
    raise ApiError.bad_request(f"The job has no output directory '{output_id}'.", target="outputdirectoryid")


def _directory(record: Record, directory_id: str) -> Path | None:
    paths = record.internal.get("paths")
    if paths is None:
        return None  # not launched yet: nothing written
    if directory_id == STDOUTERR:
        return Path(paths["stdouterr"])
    return Path(next(v for k, v in paths["outputs"].items() if k.lower() == directory_id.lower()))


def expiry_minutes(request: Request) -> int:
    try:
        minutes = int(request.query_params.get("linkexpiryinminutes", "60"))
    except ValueError:
        minutes = 0
    if not 5 <= minutes <= 600:
        raise ApiError.bad_request("linkexpiryinminutes must be an integer from 5 to 600.", target="linkexpiryinminutes")
    return minutes


def _file_entry(name: str, url: str, last_modified: datetime, size: int) -> dict:
    return {
        "name": name,
        "fileType": "file",
        "downloadUrl": url,
        "properties": {
            "lastModified": last_modified.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "contentLength": size,
        },
    }


def _entry(request: Request, path: Path, expiry: int) -> dict:
    if path.is_dir():
        return {"name": path.name, "fileType": "directory"}
    stat = path.stat()
    return _file_entry(path.name, download_url(request, path, expiry), datetime.fromtimestamp(stat.st_mtime, UTC), stat.st_size)


def _page(request: Request, children: list[T], render: Callable[[T], dict]):
    """One page of a directory's children (sorted by name), rendered."""
    size, start = page_size(request), skip_token(request)
    window = children[start : start + size]
    more = start + size < len(children)
    return paged(request, [render(c) for c in window], start + size if more else None)


def _relative(request: Request) -> str:
    return request.query_params.get("directory", ".") or "."


def _list_disk(request: Request, record: Record, directory_id: str, minutes: int):
    return list_directory(request, _directory(record, directory_id), minutes)


def list_directory(request: Request, root: Path | None, minutes: int):
    """One page of the `directory` query parameter's entries under `root`, files with signed download URLs."""
    expiry = int(time.time()) + 60 * minutes
    if root is None or not root.is_dir():
        return paged(request, [], None)
    target = (root / _relative(request)).resolve()
    if target != root.resolve() and root.resolve() not in target.parents:
        raise ApiError.bad_request("directory must stay inside the output directory.", target="directory")
    if not target.is_dir():
        return paged(request, [], None)
    children = sorted(target.iterdir(), key=lambda p: p.name)
    return _page(request, children, lambda p: _entry(request, p, expiry))


def _blob_children(blobs: list[BlobInfo], prefix: str) -> list[tuple[str, BlobInfo | None]]:
    """The names directly under prefix: a file with its blob, or a directory (None) standing
    for every blob further down."""
    children: dict[str, BlobInfo | None] = {}
    for blob in blobs:
        first, _, rest = blob.name[len(prefix) :].partition("/")
        children[first] = None if rest else blob
    return sorted(children.items())


def _list_blobs(request: Request, blobs: BlobStore, record: Record, directory_id: str, minutes: int):
    parts = [p for p in _relative(request).split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ApiError.bad_request("directory must stay inside the output directory.", target="directory")
    prefix = blob_prefix(record, directory_id) + "".join(f"{p}/" for p in parts)
    expires_in = timedelta(minutes=minutes)

    def render(child: tuple[str, BlobInfo | None]) -> dict:
        name, blob = child
        if blob is None:
            return {"name": name, "fileType": "directory"}
        return _file_entry(name, blobs.download_url(blob.name, expires_in), blob.last_modified, blob.size)

    return _page(request, _blob_children(blobs.list(prefix), prefix), render)


def list_output_files(request: Request, record: Record):
    directory_id = _directory_id(request, record)
    minutes = expiry_minutes(request)
    blobs = services(request).blobs
    if blobs is None:
        return _list_disk(request, record, directory_id, minutes)
    return _list_blobs(request, blobs, record, directory_id, minutes)


@router.get("/_files/{name}")
def download(request: Request, name: str, p: str, se: int, sig: str):
    """Unauthenticated by design: the signature is the authorization."""
    try:
        path = base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)).decode()
    except ValueError:
        raise ApiError(403, "AuthenticationFailed", "The download link is not valid.") from None
    if not hmac.compare_digest(_sign(_key(request), path, se), sig):
        raise ApiError(403, "AuthenticationFailed", "The download link signature does not match.")
    if se < time.time():
        raise ApiError(403, "AuthenticationFailed", "The download link has expired.")
    if not os.path.isfile(path):
        raise ApiError.not_found("The file no longer exists.")
    return FileResponse(path, media_type="application/octet-stream")
