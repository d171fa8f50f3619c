"""The BlobStore port on a local directory: a blob is a file whose path under `{root}/blobs` is its name.

For development and tests without a storage account. Its download URLs are `file:` URLs: the
disk has no one to enforce an expiry, so they are as good as the reader's access to the root.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from batchai.ports import BlobInfo


class FsBlobStore:
    def __init__(self, root: Path):
        self.root = Path(root).resolve() / "blobs"
        self.staging = self.root.parent / "staging"  # outside every name, so a put in progress is never listed
        self.root.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir(exist_ok=True)

    def _path(self, name: str) -> Path:
        """Refuse names that would leave the root: a blob name is never a way out."""
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts) or "\\" in name:
            raise ValueError(f"not a relative blob name: {name!r}")
        return self.root.joinpath(*parts)

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.staging, delete=False) as temporary:
            temporary.write(data)
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
        for parent, _, files in os.walk(self._path(directory) if directory else self.root):
            for file in files:
                path = Path(parent, file)
                name = path.relative_to(self.root).as_posix()
                if name.startswith(prefix):
                    stat = path.stat()
                    found.append(BlobInfo(name, stat.st_size, datetime.fromtimestamp(stat.st_mtime, timezone.utc)))
        return sorted(found, key=lambda b: b.name)

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def download_url(self, name: str, expires_in: timedelta) -> str:
        return self._path(name).as_uri()
