"""Uploading a job's logs and outputs to a BlobStore (the directory adapter stands in), and the
last upload that `complete_job` runs before the job turns terminal."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from activities.jobs import complete_job
from batchai.adapters.fs_blob_store import FsBlobStore
from batchai.adapters.sqlite_store import SqliteStore
from batchai.output_sync import OutputSync
from batchai.ports import Record, TaskRecord
from batchai.services import Services, Settings

WS = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.BatchAI/workspaces/ws"
CL = WS + "/clusters/c1"
EXP = WS + "/experiments/e1"
SEGMENT = "s/rg/workspaces/ws/experiments/e1/jobs/j1/u1"


class CountingBlobs(FsBlobStore):
    """Counts whole uploads, to see that unchanged outputs are not uploaded again."""

    puts = 0

    def put(self, name: str, data: bytes) -> None:
        self.puts += 1
        super().put(name, data)


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "store.db")
    s.create(Record(WS, "workspaces", "ws", "/subscriptions/s/resourceGroups/rg", {"properties": {}}))
    s.create(Record(CL, "clusters", "c1", WS, {"properties": {}}, internal={"uuid": "c-uuid"}))
    s.create(Record(EXP, "experiments", "e1", WS, {"properties": {}}))
    return s


@pytest.fixture
def dirs(tmp_path) -> tuple[Path, Path]:
    logs, out = tmp_path / "job" / "stdouterr", tmp_path / "job" / "outputs"
    logs.mkdir(parents=True)
    out.mkdir()
    return logs, out


def running_job(store: SqliteStore, logs: Path, out: Path) -> Record:
    properties = {
        "executionState": "running",
        "cluster": {"id": CL},
        "jobOutputDirectoryPathSegment": SEGMENT,
        "outputDirectories": [{"id": "MODEL"}],
        "executionInfo": {"startTime": "2024-01-01T00:00:00Z"},
    }
    internal = {"uuid": "u1", "attempt": 1, "paths": {"stdouterr": str(logs), "outputs": {"MODEL": str(out)}}}
    return store.create(Record(f"{EXP}/jobs/j1", "jobs", "j1", EXP, {"properties": properties}, internal=internal))


def test_logs_grow_by_appends_and_outputs_upload_when_changed(store, dirs, tmp_path):
    logs, out = dirs
    blobs = CountingBlobs(tmp_path / "blobs")
    sync = OutputSync(store, blobs)
    job = running_job(store, logs, out)
    (logs / "stdout.txt").write_text("one\n")
    (logs / "stderr.txt").write_text("")
    (out / "sub").mkdir()
    (out / "sub" / "model.bin").write_bytes(b"v1")
    sync.sync_active()
    with (logs / "stdout.txt").open("a") as f:
        f.write("two\n")
    sync.sync_active()
    sync.sync_active()
    assert blobs.get(f"{SEGMENT}/stdouterr/stdout.txt") == b"one\ntwo\n"
    assert blobs.get(f"{SEGMENT}/stdouterr/stderr.txt") == b""
    assert blobs.get(f"{SEGMENT}/MODEL/sub/model.bin") == b"v1" and blobs.puts == 1
    (out / "sub" / "model.bin").write_bytes(b"v2!")
    sync.sync(job)
    assert blobs.get(f"{SEGMENT}/MODEL/sub/model.bin") == b"v2!" and blobs.puts == 2


def test_a_log_written_anew_is_copied_anew(store, dirs, tmp_path):
    logs, out = dirs
    blobs = FsBlobStore(tmp_path / "blobs")
    job = running_job(store, logs, out)
    (logs / "stdout.txt").write_text("a long first attempt\n")
    OutputSync(store, blobs).sync(job)
    (logs / "stdout.txt").write_text("short\n")
    OutputSync(store, blobs).sync(job)  # a restarted host: the blob's length is all it knows
    assert blobs.get(f"{SEGMENT}/stdouterr/stdout.txt") == b"short\n"


def test_a_job_not_launched_has_nothing_to_upload(store, tmp_path):
    blobs = FsBlobStore(tmp_path / "blobs")
    job = store.create(Record(f"{EXP}/jobs/q", "jobs", "q", EXP, {"properties": {"executionState": "queued"}}))
    OutputSync(store, blobs).sync(job)
    assert blobs.list("") == []


def test_the_final_sync_never_raises(store, dirs, tmp_path):
    class Down(FsBlobStore):
        def list(self, prefix):
            raise ConnectionError("storage unreachable")

    logs, out = dirs
    OutputSync(store, Down(tmp_path / "blobs")).final_sync(running_job(store, logs, out))


def test_complete_job_uploads_before_the_job_turns_terminal(store, dirs, tmp_path):
    logs, out = dirs
    job = running_job(store, logs, out)
    store.put_tasks([TaskRecord("t1", job.id, "n1", 1, {"processes": [{"command": "x"}]}, state="finished", exit_code=0)])
    (logs / "stdout.txt").write_text("last words\n")
    blobs = FsBlobStore(tmp_path / "blobs")
    sync = OutputSync(store, blobs)
    seen = []

    def final_sync(record: Record) -> None:
        seen.append(store.get(record.id).properties["executionState"])
        sync.final_sync(record)

    engine = SimpleNamespace(raise_event=lambda *args: True)
    svc = Services(store=store, compute=None, engine=engine, settings=Settings(data_dir=tmp_path), blobs=blobs, sync_job_files=final_sync)
    assert complete_job(svc, {"jobId": job.id})["state"] == "succeeded"
    assert seen == ["running"]
    assert blobs.get(f"{SEGMENT}/stdouterr/stdout.txt") == b"last words\n"
    complete_job(svc, {"jobId": job.id})  # a retried completion of an ended job uploads nothing more
    assert seen == ["running"]


def test_a_file_the_store_refuses_is_skipped_and_the_others_are_uploaded(tmp_path):
    blobs = FsBlobStore(tmp_path / "blobs")
    out = tmp_path / "out"
    (out / ".hydra").mkdir(parents=True)
    (out / ".hydra" / "config.yaml").write_text("lr: 0.1")
    (out / "model.bin").write_bytes(b"weights")
    OutputSync(None, blobs)._sync_outputs("job/OUT/", out, {})
    assert blobs.get("job/OUT/model.bin") == b"weights"
    assert [b.name for b in blobs.list("job/")] == ["job/OUT/model.bin"]
