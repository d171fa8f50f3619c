"""Blob-drop submission: an original job file dropped at `<workspace>/<experiment>/<job>.json`.

The drop may name its cluster and placeholder values in a sidecar `<job>.params.json`
(`{"cluster", "placeholders", "resourceGroup", "subscription"}`) or, for blobs, in the blob's
metadata. The outcome goes beside the drop as `<job>.status.json`: `{"status": "accepted",
"jobId"}` or `{"status": "rejected", "error": {"code", "message", "target"}}`; the drop itself
moves to `processed/` or `rejected/` (same relative path). `process_drop` is the one path; the
embedded host watches a directory with `InboxWatcher`, the Functions app has a blob trigger.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from batchai.errors import ApiError
from batchai.submission import submit_message

log = logging.getLogger("batchai.blobdrop")
SIDE_SUFFIXES = (".status.json", ".params.json")


def parse_drop_path(relative: str) -> tuple[str, str, str]:
    """`ws/exp/job.json` -> (ws, exp, job); ValueError for any other shape."""
    parts = relative.strip("/").split("/")
    if len(parts) != 3 or not parts[2].endswith(".json") or parts[2].endswith(SIDE_SUFFIXES):
        raise ValueError(f"a drop must be <workspace>/<experiment>/<job>.json, not '{relative}'")
    return parts[0], parts[1], parts[2][: -len(".json")]


def process_drop(svc, relative: str, content: bytes, params: dict | None = None) -> dict:
    """Submit one dropped job file; returns its status document (never raises for bad input)."""
    try:
        workspace, experiment, job = parse_drop_path(relative)
        try:
            job_file = json.loads(content)
        except ValueError as exc:
            raise ApiError.bad_request(f"The job file is not JSON: {exc}") from None
        params = params or {}
        message = {"workspace": workspace, "experiment": experiment, "jobName": job, "job": job_file,
                   **{k: params[k] for k in ("cluster", "placeholders", "resourceGroup", "subscription") if k in params}}
        accepted = submit_message(svc, message)
        return {"status": "accepted", "jobId": accepted["id"]}
    except ApiError as exc:
        return {"status": "rejected", "error": exc.to_body()["error"]}
    except ValueError as exc:
        return {"status": "rejected", "error": {"code": "InvalidDropPath", "message": str(exc)}}


class InboxWatcher:
    """Watches `{inbox}` for drops; moves them to `{root}/processed` or `{root}/rejected`."""

    def __init__(self, svc, root: Path, *, interval: float = 0.5):
        self.svc, self.root, self.interval = svc, Path(root), interval
        self.inbox = self.root / "inbox"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.inbox.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="inbox-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def scan(self) -> int:
        """Process every complete drop now; returns how many."""
        done = 0
        for path in sorted(self.inbox.glob("*/*/*.json")):
            if path.name.endswith(SIDE_SUFFIXES) or path.name.startswith("."):
                continue  # writers should drop via a temporary name and rename; dot files are in progress
            relative = path.relative_to(self.inbox).as_posix()
            sidecar = path.with_name(path.name[: -len(".json")] + ".params.json")
            try:
                params = json.loads(sidecar.read_text()) if sidecar.exists() else None
                status = process_drop(self.svc, relative, path.read_bytes(), params)
            except (OSError, ValueError) as exc:
                status = {"status": "rejected", "error": {"code": "InvalidDrop", "message": str(exc)}}
            path.with_name(path.name[: -len(".json")] + ".status.json").write_text(json.dumps(status, indent=2) + "\n")
            target = self.root / ("processed" if status["status"] == "accepted" else "rejected") / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            path.replace(target)
            if sidecar.exists():
                sidecar.replace(target.with_name(sidecar.name))
            log.info("drop %s %s", relative, status["status"])
            done += 1
        return done

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan()
            except Exception:  # noqa: BLE001 - keep watching
                log.exception("scanning the inbox failed")
            self._stop.wait(self.interval)
