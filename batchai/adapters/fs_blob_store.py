"""The BlobStore port on a local directory: a blob is a file whose path under the root is its name.

For development, tests, and the embedded host's drop box (a directory users copy files into).
A path with a segment starting with `.` is not a blob: that is where this adapter stages its
writes, and where a person copying a file in writes it before renaming it into place. Download
URLs are `file:` URLs: the disk has no one to enforce an expiry, so they are as good as the
reader's access to the root.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from batchai.ports import BlobInfo


class FsBlobStore:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.staging = self.root / ".staging"  # a dot segment is never a blob, so a put in progress is never listed
        self.staging.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        """Refuse names that would leave the root: a blob name is never a way out."""
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts) or "\\" in name:
            raise ValueError(f"not a relative blob name: {name!r}")
        if any(p.startswith(".") for p in parts):
            raise ValueError(f"a blob name has no segment starting with '.': {name!r}")
        return self.root.joinpath(*parts)

    def put(self, name: str, data: bytes | BinaryIO) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.staging, delete=False) as temporary:
            if isinstance(data, bytes):
                temporary.write(data)
            else:
                shutil.copyfileobj(data, temporary)
        os.replace(temporary.name, path)  # readers see the old blob or the new one, never half of it

    def append(self, name: str, data: bytes) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as f:
            f.write(data)

    def get(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def list(self, prefix: str) -> list[BlobInfo]:
        directory = prefix.rpartition("/")[0]
        found = []
        for parent, folders, files in os.walk(self._path(directory) if directory else self.root):
            folders[:] = [f for f in folders if not f.startswith(".")]
            for file in files:
                if file.startswith("."):
                    continue
                path = Path(parent, file)
                name = path.relative_to(self.root).as_posix()
                if name.startswith(prefix):
                    stat = path.stat()
                    found.append(BlobInfo(name, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC)))
        return sorted(found, key=lambda b: b.name)

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def download_url(self, name: str, expires_in: timedelta) -> str:
        return self._path(name).as_uri()
