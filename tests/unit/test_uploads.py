"""The agent's upload path (batchai/agent/uploads.py): what it sends of a task's directories, and when."""

from __future__ import annotations

import base64
import os

from batchai.agent.uploads import CHUNK_BYTES, Uploads
from batchai.frameworks.plan import NodeTask


def task_with(tmp_path) -> NodeTask:
    uploads = {"stdouterr": str(tmp_path / "logs"), "OUT": str(tmp_path / "out")}
    for path in uploads.values():
        os.makedirs(path)
    return NodeTask(task_id="t", job_id="j", node_id="n", cwd=str(tmp_path), env={}, execution_log="", uploads=uploads)


def test_logs_send_only_their_new_bytes_outputs_go_whole_when_they_change(tmp_path):
    sent: list[tuple[str, str, int, bytes]] = []
    uploads = Uploads(
        lambda what, body, timeout: sent.append((body["directory"], body["path"], body["offset"], base64.b64decode(body["data"]))) or {}
    )
    task = task_with(tmp_path)
    log, model = tmp_path / "logs" / "stdout.txt", tmp_path / "out" / "model.bin"
    log.write_bytes(b"one\n")
    model.write_bytes(b"v1")
    uploads.sync(task)
    assert sorted(sent) == [("OUT", "model.bin", 0, b"v1"), ("stdouterr", "stdout.txt", 0, b"one\n")]

    sent.clear()
    uploads.sync(task)
    assert sent == []  # nothing changed: nothing sent

    with log.open("ab") as f:
        f.write(b"two\n")
    model.write_bytes(b"v2, longer")
    uploads.sync(task)
    assert sorted(sent) == [("OUT", "model.bin", 0, b"v2, longer"), ("stdouterr", "stdout.txt", 4, b"two\n")]


def test_a_large_file_goes_in_bounded_chunks_and_an_empty_one_still_goes(tmp_path):
    sent: list[tuple[int, int]] = []
    uploads = Uploads(lambda what, body, timeout: sent.append((body["offset"], len(base64.b64decode(body["data"])))) or {})
    task = task_with(tmp_path)
    (tmp_path / "out" / "big").write_bytes(b"x" * (2 * CHUNK_BYTES + 1))
    uploads.sync(task)
    assert sent == [(0, CHUNK_BYTES), (CHUNK_BYTES, CHUNK_BYTES), (2 * CHUNK_BYTES, 1)]
    sent.clear()
    (tmp_path / "out" / "empty").write_bytes(b"")
    uploads.sync(task)
    assert sent == [(0, 0)]
