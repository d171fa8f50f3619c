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
from itertools import islice
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from batchai.api.arm import page_size, paged, skip_token
from batchai.api.deps import services
from batchai.errors import ApiError
from batchai.output_sync import STDOUTERR, blob_prefix, open_regular
from batchai.ports import BlobInfo, BlobStore, Record
from batchai.signing import MAX_LINK_MINUTES, SigningKeys

router = APIRouter()
T = TypeVar("T")


def _keys(request: Request) -> SigningKeys:
    return request.app.state.signing_keys


def _sign(key: bytes, job_uuid: str, path: str, expiry: int) -> str:
    return hmac.new(key, f"{job_uuid}\n{path}\n{expiry}".encode(), hashlib.sha256).hexdigest()


def download_url(request: Request, record: Record, path: Path, expiry: int) -> str:
    """Signed for the job too: its URLs die with it (a job of the same name later is another job)."""
    encoded = base64.urlsafe_b64encode(str(path).encode()).decode().rstrip("=")
    period, key = _keys(request).current()
    signature = _sign(key, record.internal["uuid"], str(path), expiry)
    query = urlencode({"p": encoded, "j": record.id, "se": expiry, "kp": period, "sig": signature})
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
    if not 5 <= minutes <= MAX_LINK_MINUTES:
        raise ApiError.bad_request(f"linkexpiryinminutes must be an integer from 5 to {MAX_LINK_MINUTES}.", target="linkexpiryinminutes")
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


def _entry(request: Request, record: Record, entry: os.DirEntry, expiry: int) -> dict:
    if entry.is_dir(follow_symlinks=False):
        return {"name": entry.name, "fileType": "directory"}
    try:
        info = entry.stat(follow_symlinks=False)
        modified, size = datetime.fromtimestamp(info.st_mtime, UTC), info.st_size
    except OSError:  # removed since the directory was read
        modified, size = datetime.now(UTC), 0
    return _file_entry(entry.name, download_url(request, record, Path(entry.path), expiry), modified, size)


MAX_LISTED = 100_000  # entries of one directory a listing reads


def _listable(entry: os.DirEntry) -> bool:
    """A regular file or a directory, not a symlink, with a UTF-8 name: nothing else is listed."""
    try:
        entry.name.encode()
        return not entry.is_symlink() and (entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False))
    except (UnicodeEncodeError, OSError):
        return False


def _inside(root: Path, relative: str) -> Path | None:
    """root/relative when neither it nor a directory on the way is a symlink and it stays inside root."""
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None
    path = root
    for part in ["", *parts]:
        path = path / part if part else path
        if path.is_symlink():
            return None
    return path


def _page(request: Request, children: list[T], render: Callable[[T], dict]):
    """One page of a directory's children (sorted by name), rendered."""
    size, start = page_size(request), skip_token(request)
    window = children[start : start + size]
    more = start + size < len(children)
    return paged(request, [render(c) for c in window], start + size if more else None)


def _relative(request: Request) -> str:
    return request.query_params.get("directory", ".") or "."


def _list_disk(request: Request, record: Record, directory_id: str, minutes: int):
    return list_directory(request, record, _directory(record, directory_id), minutes)


def list_directory(request: Request, record: Record, root: Path | None, minutes: int):
    """One page of the `directory` query parameter's entries under `root`, files with download URLs signed for
    `record` (a job, or a cluster for its setup logs): they die with it."""
    expiry = int(time.time()) + 60 * minutes
    if root is None or not root.is_dir():
        return paged(request, [], None)
    target = _inside(root, _relative(request))
    if target is None:
        raise ApiError.bad_request("directory must stay inside the output directory (no '..', no symlinks).", target="directory")
    if not target.is_dir():
        return paged(request, [], None)
    with os.scandir(target) as entries:
        children = sorted(islice((e for e in entries if _listable(e)), MAX_LISTED), key=lambda e: e.name)
    return _page(request, children, lambda e: _entry(request, record, e, expiry))


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
def download(request: Request, name: str, p: str, j: str, se: int, kp: int, sig: str):
    """Unauthenticated by design: the signature is the authorization."""
    try:
        path = base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)).decode()
    except ValueError:
        raise ApiError(403, "AuthenticationFailed", "The download link is not valid.") from None
    key = _keys(request).key(kp)
    job = services(request).store.get(j) if key is not None and len(j) < 1024 else None
    expected = _sign(key, job.internal.get("uuid", ""), path, se) if job is not None and key is not None else ""
    if not expected or not hmac.compare_digest(expected, sig.encode("ascii", "replace").decode()):
        raise ApiError(403, "AuthenticationFailed", "The download link signature does not match (or its job or key is gone).")
    if se < time.time():
        raise ApiError(403, "AuthenticationFailed", "The download link has expired.")
    try:  # the path signed is the real one: a symlink put in its place since is not followed
        f = open_regular(Path(path))
    except (OSError, ValueError):
        raise ApiError.not_found("The file no longer exists.") from None
    if os.path.realpath(path) != os.path.normpath(path):  # a directory on the way was replaced by a link
        f.close()
        raise ApiError.not_found("The file no longer exists.")
    # served from the file opened here (its /proc link reopens that file, not the path), closed after
    return FileResponse(f"/proc/self/fd/{f.fileno()}", media_type="application/octet-stream", background=BackgroundTask(f.close))
