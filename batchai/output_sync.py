"""Job logs and outputs copied to blob storage as they are written, so they outlive the nodes.

A thread of the embedded host looks at every running or terminating job's stdouterr and output
directories (the real paths `launch` stored) every few seconds. Log files (everything under
stdouterr) grow by appends of their new bytes, so someone following a log blob sees lines
shortly after the job prints them; output files are uploaded whole when their size or
modification time changes. `complete_job` runs one last sync before it makes the job terminal,
so whoever sees the job ended finds everything it wrote in storage.

Blob names are `{jobOutputDirectoryPathSegment}/{output directory id}/{path in the directory}`.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

from batchai.background import Repeating
from batchai.ports import BlobStore, Record, Store

log = logging.getLogger("batchai.outputs")
STDOUTERR = "stdouterr"
SYNCED_STATES = ("running", "terminating")

CHUNK_BYTES = 4 << 20  # a log's new bytes go up in appends of at most this
Signature = tuple[int, int]  # (size, mtime_ns) of an output file as uploaded


def blob_prefix(record: Record, directory_id: str) -> str:
    """Where one output directory of the job lives in blob storage (ends with `/`)."""
    return f"{record.properties['jobOutputDirectoryPathSegment']}/{directory_id}/"


def files_under(root: Path) -> Iterator[tuple[str, Path]]:
    """(path relative to root with `/`, path) of every regular file under root: never a symlink (a job's
    link to a file it may read but the owner of the storage may not see), nor a name that is not UTF-8."""
    if root.is_symlink():
        return
    for parent, _, names in os.walk(root):  # does not descend into linked directories
        for name in sorted(names):
            path = Path(parent, name)
            if path.is_file() and not path.is_symlink() and _utf8(name):
                yield path.relative_to(root).as_posix(), path


def _utf8(name: str) -> bool:
    try:
        name.encode()
    except UnicodeEncodeError:  # os gave undecodable bytes as surrogates
        return False
    return True


def open_regular(path: Path):
    """`path` opened for reading if it is a regular file and no symlink (OSError otherwise)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return os.fdopen(fd, "rb")


class OutputSync:
    def __init__(self, store: Store, blobs: BlobStore, *, interval: float = 1.0):
        self.store, self.blobs = store, blobs
        self._uploaded: dict[str, dict[str, Signature]] = {}  # job id -> blob name -> what was uploaded
        self._locks: dict[str, threading.Lock] = {}  # one sync of a job at a time: the thread and complete_job
        self._guard = threading.Lock()
        self._loop = Repeating("output-sync", self.sync_active, interval, log)
        self.start, self.stop = self._loop.start, self._loop.stop

    def sync(self, record: Record) -> None:
        """Upload what changed in the job's directories since the last sync (nothing before launch)."""
        paths = record.internal.get("paths")
        if not paths:
            return
        with self._lock(record.id):
            self._sync_logs(blob_prefix(record, STDOUTERR), Path(paths["stdouterr"]))
            uploaded = self._uploaded.setdefault(record.id, {})
            for directory_id, root in paths["outputs"].items():
                self._sync_outputs(blob_prefix(record, directory_id), Path(root), uploaded)

    def final_sync(self, record: Record) -> None:
        """The last sync of an ending job. Never raises: a job must end even while storage is
        unreachable (its files stay on the local disk)."""
        try:
            self.sync(record)
        except Exception:  # noqa: BLE001 - any storage failure
            log.exception("the last upload of job %s's files failed", record.id)

    def sync_active(self) -> None:
        """One pass over the jobs whose processes may be writing."""
        jobs = self.store.jobs(states=SYNCED_STATES)
        self._forget(keep={job.id for job in jobs})
        for job in jobs:
            try:
                self.sync(job)
            except Exception:  # noqa: BLE001 - storage or a vanishing file: the next pass tries again
                log.exception("uploading job %s's files failed; the next pass tries again", job.id)

    def _sync_logs(self, prefix: str, root: Path) -> None:
        """Append each log's bytes beyond its blob's length: the blob's length is the only state,
        so a restarted control plane goes on where the last one stopped."""
        uploaded = {blob.name: blob.size for blob in self.blobs.list(prefix)}
        for relative, path in files_under(root):
            name = prefix + relative
            with open_regular(path) as f:
                size = os.fstat(f.fileno()).st_size
                start = uploaded.get(name)
                if start == size:
                    continue
                if start is not None and start > size:  # written again from the start: copy it anew
                    self.blobs.delete(name)
                    start = None
                f.seek(start or 0)
                while True:  # at least once: an empty log shows as an empty blob
                    self.blobs.append(name, f.read(min(CHUNK_BYTES, size - f.tell())))
                    if f.tell() >= size:
                        break

    def _sync_outputs(self, prefix: str, root: Path, uploaded: dict[str, Signature]) -> None:
        for relative, path in files_under(root):
            name = prefix + relative
            try:
                with open_regular(path) as f:
                    info = os.fstat(f.fileno())  # before reading: a write during the upload shows as a change next time
                    signature = (info.st_size, info.st_mtime_ns)
                    if uploaded.get(name) != signature:
                        self.blobs.put(name, f)  # streamed: an output file may be larger than memory
                        uploaded[name] = signature
            except (OSError, ValueError) as exc:  # a file gone meanwhile, or a name the store refuses
                log.warning("output file %s was not uploaded: %s", name, exc)

    def _lock(self, job_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(job_id, threading.Lock())

    def _forget(self, keep: set[str]) -> None:
        """Drop what is remembered of jobs that ended (their final sync already ran)."""
        with self._guard:
            for job_id in set(self._locks) - keep:
                del self._locks[job_id]
            for job_id in set(self._uploaded) - keep:
                del self._uploaded[job_id]
