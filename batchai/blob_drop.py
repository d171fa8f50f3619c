"""Blob-drop submission: an original job file dropped at `<workspace>/<experiment>/<job>.json`.

The drop may name its cluster and placeholder values in a sidecar `<job>.params.json`
(`{"cluster", "placeholders", "resourceGroup", "subscription"}`; write it before the drop). The
outcome goes beside the drop as `<job>.status.json`: `{"status": "accepted", "jobId"}` or
`{"status": "rejected", "error": {"code", "message", "target"}}`; the drop and its sidecar move
to `processed/` or `rejected/` (same relative path).

Drops live in a BlobStore under `inbox/`: a directory for the embedded host (`drops/` in the data
dir) or an Azure Blob container. `DropBox.process` is the one path; the embedded host polls with
`DropBox.start`, the Functions app's blob trigger calls `process` for each new drop.
"""

from __future__ import annotations

import hashlib
import json
import logging

from batchai.background import Repeating
from batchai.errors import ApiError
from batchai.ports import BlobStore
from batchai.services import Services
from batchai.submission import submit_message

log = logging.getLogger("batchai.blobdrop")
SIDE_SUFFIXES = (".status.json", ".params.json")
INBOX = "inbox/"


def parse_drop_path(relative: str) -> tuple[str, str, str]:
    """`ws/exp/job.json` -> (ws, exp, job); ValueError for any other shape."""
    parts = relative.strip("/").split("/")
    if len(parts) != 3 or not parts[2].endswith(".json") or parts[2].endswith(SIDE_SUFFIXES):
        raise ValueError(f"a drop must be <workspace>/<experiment>/<job>.json, not '{relative}'")
    return parts[0], parts[1], parts[2][: -len(".json")]


def process_drop(svc: Services, relative: str, content: bytes, params: dict | None = None) -> dict:
    """Submit one dropped job file; returns its status document (never raises for bad input).

    The idempotency key is the drop's path and content: a drop processed again (a crash before it was
    moved, or a blob trigger delivering it twice) answers the job it already made."""
    try:
        workspace, experiment, job = parse_drop_path(relative)
        try:
            job_file = json.loads(content)
        except ValueError as exc:
            raise ApiError.bad_request(f"The job file is not JSON: {exc}") from None
        params = params or {}
        message = {
            "workspace": workspace,
            "experiment": experiment,
            "jobName": job,
            "job": job_file,
            **{k: params[k] for k in ("cluster", "placeholders", "resourceGroup", "subscription") if k in params},
        }
        key = "drop:" + hashlib.sha256(relative.encode() + b"\0" + content).hexdigest()
        accepted = submit_message(svc, message, via="drop", idempotency_key=key)
        return {"status": "accepted", "jobId": accepted["id"]}
    except ApiError as exc:
        return {"status": "rejected", "error": exc.to_body()["error"]}
    except ValueError as exc:
        return {"status": "rejected", "error": {"code": "InvalidDropPath", "message": str(exc)}}


class DropBox:
    """The drops of one BlobStore: `inbox/<ws>/<exp>/<job>.json`, processed into `processed/` or `rejected/`."""

    def __init__(self, svc: Services, blobs: BlobStore, *, interval: float = 0.5):
        self.svc, self.blobs = svc, blobs
        self._loop = Repeating("drop-box", self.scan, interval, log)
        self.start, self.stop = self._loop.start, self._loop.stop

    def pending(self) -> list[str]:
        """Names of the drops waiting in the inbox, oldest name first."""
        return [b.name for b in self.blobs.list(INBOX) if is_drop(b.name)]

    def process(self, name: str) -> dict | None:
        """Submit the drop `name` (`inbox/...`), write its status, move it; None when it is no drop (a status
        file, a sidecar, or one another worker already took)."""
        if not is_drop(name):
            return None
        content = self.blobs.get(name)
        if content is None:
            return None
        relative, stem = name[len(INBOX) :], name[: -len(".json")]
        sidecar_name = stem + ".params.json"
        sidecar = self.blobs.get(sidecar_name)
        try:
            params = parse_sidecar(sidecar)
        except ValueError as exc:
            status = {
                "status": "rejected",
                "error": {"code": "InvalidDrop", "message": str(exc), "target": sidecar_name.rsplit("/", 1)[-1]},
            }
        else:
            status = process_drop(self.svc, relative, content, params)
        self.blobs.put(stem + ".status.json", (json.dumps(status, indent=2) + "\n").encode())
        outcome = "processed" if status["status"] == "accepted" else "rejected"
        self._move(name, f"{outcome}/{relative}", content)
        if sidecar is not None:
            self._move(sidecar_name, f"{outcome}/{sidecar_name[len(INBOX) :]}", sidecar)
        log.info("drop %s %s", relative, status["status"])
        return status

    def scan(self) -> int:
        """Process every drop waiting now; returns how many. A drop that cannot be processed now (storage
        failing, a file unreadable) is logged and left for the next scan: it must not hold up the others."""
        done = 0
        for name in self.pending():
            try:
                done += self.process(name) is not None
            except Exception:  # noqa: BLE001 - the next scan tries it again
                log.exception("processing drop %s failed; it stays in the inbox", name)
        return done

    def _move(self, source: str, target: str, content: bytes) -> None:
        self.blobs.put(target, content)
        self.blobs.delete(source)


def parse_sidecar(raw: bytes | None) -> dict | None:
    """The sidecar's parameters; ValueError saying what is wrong with it."""
    if raw is None:
        return None
    try:
        params = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"the sidecar is not JSON: {exc}") from None
    if not isinstance(params, dict):
        raise ValueError("the sidecar must be a JSON object")
    return params


def is_drop(name: str) -> bool:
    """`inbox/<ws>/<exp>/<job>.json`, not a status file or sidecar."""
    if not name.startswith(INBOX):
        return False
    try:
        parse_drop_path(name[len(INBOX) :])
    except ValueError:
        return False
    return True
