"""What a task writes on a machine that joined a cluster, sent to the control plane as it is written.

Nothing on such a node is on the control plane's disk, so the agent sends the job's directories
(the task's `uploads`: output directory id -> path here) over its own authenticated calls:
`POST {node}/files` with `{taskId, directory, path, offset, data (base64)}`, which the control plane
writes at `offset` and cuts after. Logs (stdouterr) grow, so only their new bytes go; any other
file goes whole again when its size or modification time changes. A task's last sync runs before
its result is reported, so whoever sees the job ended finds everything it wrote.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from batchai.frameworks.plan import NodeTask
from batchai.output_sync import STDOUTERR, files_under, open_regular

log = logging.getLogger("batchai.agent.uploads")

CHUNK_BYTES = 512 * 1024  # per call; base64 keeps it under the node door's body limit
UPLOAD_TIMEOUT = 30.0

Post = Callable[[str, dict, float], dict]


class Uploads:
    """Sends tasks' files through `post(what, body, timeout)` (the agent's authenticated call)."""

    def __init__(self, post: Post):
        self._post = post
        self._sent: dict[str, dict[str, tuple[int, int]]] = {}  # task id -> file -> (size, mtime_ns) sent

    def sync(self, task: NodeTask) -> None:
        """Send what changed in the task's directories since the last call; raises what the post raises."""
        sent = self._sent.setdefault(task.task_id, {})
        for directory, root in task.uploads.items():
            for relative, path in files_under(Path(root)):
                key = f"{directory}/{relative}"
                try:
                    stat = path.stat()
                except OSError:
                    continue  # gone meanwhile
                signature = (stat.st_size, stat.st_mtime_ns)
                before = sent.get(key)
                if before == signature:
                    continue
                grows = directory == STDOUTERR and before is not None and before[0] <= stat.st_size
                try:
                    f = open_regular(path)
                except OSError:  # gone, or a link put in its place (never followed): not sent
                    continue
                with f:
                    self._send(task.task_id, directory, relative, f, before[0] if grows and before else 0, stat.st_size)
                sent[key] = signature

    def forget(self, task_id: str) -> None:
        self._sent.pop(task_id, None)

    def _send(self, task_id: str, directory: str, relative: str, f: BinaryIO, start: int, end: int) -> None:
        f.seek(start)
        offset = start
        while True:  # an empty file still goes once, so that it exists on the other side
            data = f.read(min(CHUNK_BYTES, max(0, end - offset)))
            body = {
                "taskId": task_id,
                "directory": directory,
                "path": relative,
                "offset": offset,
                "data": base64.b64encode(data).decode(),
            }
            self._post("files", body, UPLOAD_TIMEOUT)
            offset += len(data)
            if offset >= end or not data:
                return


def sync_quietly(uploads: Uploads, task: NodeTask) -> bool:
    """One sync; a failure is logged (the next sync sends it again). True if it went through."""
    try:
        uploads.sync(task)
        return True
    except Exception as e:  # noqa: BLE001 - the control plane unreachable or refusing: the job goes on
        log.warning("sending task %s's files failed: %s", task.task_id, e)
        return False
