"""Queue messages and blob drops end in the same create-job path as HTTP (embedded adapters).

The control plane runs in process (EmbeddedHost with simulated nodes: nothing here needs a
job to run) and the cluster is paused, so the queue's effect is exactly the jobs it creates.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from batchai.adapters.sqlite_queue import LockLost
from batchai.queue_consumer import handle
from tests.support.paused_host import V, job_names, paused_host, workspace_path
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(300)
EXP = "qexp"
RECIPES = Path(__file__).resolve().parents[1] / "fixtures" / "recipes"


@pytest.fixture
def host(tmp_path, unique_name):
    with paused_host(tmp_path, unique_name("q"), EXP) as h:
        yield h


def message(workspace: str, name: str, **extra) -> str:
    return json.dumps(
        {
            "workspace": workspace,
            "experiment": EXP,
            "jobName": name,
            "cluster": "c",
            "job": {
                "properties": {
                    "nodeCount": 1,
                    "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
                    "customToolkitSettings": {"commandLine": "true"},
                }
            },
            **extra,
        }
    )


def jobs(host) -> list[str]:
    return job_names(host, host.workspace, EXP)


def test_300_messages_become_300_jobs_high_before_normal_before_low(host):
    priorities = ["low", "normal", "high"] * 100
    for i, priority in enumerate(priorities):
        host.queue.publish(message(host.workspace, f"m{i:03d}"), priority=priority)
    assert host.queue.depth() == {"high": 100, "normal": 100, "low": 100}
    host.consumer.start()
    names = until(lambda: (lambda n: n if len(n) >= 300 else None)(jobs(host)), 120, "300 jobs", interval=0.1)
    assert len(names) == len(set(names)) == 300
    rank = [{"high": 0, "normal": 1, "low": 2}[priorities[int(n[1:])]] for n in names]
    assert rank == sorted(rank)  # every high before every normal before every low
    # the last job is stored a moment before its message is completed
    until(lambda: host.queue.depth() == {"high": 0, "normal": 0, "low": 0}, 120, "the queue to drain")
    assert host.queue.dead_letters() == []


def test_bad_messages_are_dead_lettered_with_the_reason_and_create_nothing(host):
    host.queue.publish("{not json", message_id="malformed")
    host.queue.publish(message("nowhere", "x1"), message_id="no-workspace")
    bad = json.loads(message(host.workspace, "x2"))
    bad["job"]["properties"]["nodeCount"] = 0
    host.queue.publish(json.dumps(bad), message_id="invalid-job")
    host.queue.publish(message(host.workspace, "good"), message_id="good")
    host.consumer.start()
    dead = until(lambda: (lambda d: d if len(d) == 3 else None)(host.queue.dead_letters()), 120, "3 dead letters")
    reasons = {d["id"]: (d["reason"], d["description"]) for d in dead}
    assert reasons["malformed"][0] == "MalformedMessage" and "not JSON" in reasons["malformed"][1]
    assert reasons["no-workspace"][0] == "ResourceNotFound" and "nowhere" in reasons["no-workspace"][1]
    assert "properties.nodeCount" in reasons["invalid-job"][1]
    until(lambda: jobs(host) == ["good"], 120, "the good message's job")  # the consumer kept going
    audited = {(e["principal"], e["resource"].rsplit("/", 1)[-1], e["result"]) for e in host.services.store.audit_log(principal="queue")}
    assert ("queue", "good", 200) in audited and ("queue", "x1", 404) in audited and ("queue", "x2", 400) in audited


def test_a_redelivered_message_creates_one_job(host):
    host.queue.publish(message(host.workspace, "once"), message_id="key-1")
    (first,) = host.queue.receive(lock_seconds=0.2)
    from batchai.submission import submit_message

    submit_message(host.services, json.loads(first.body), via="queue", idempotency_key=first.id)  # stored, then "crash" before complete
    (again,) = until(lambda: host.queue.receive(), 10, "the message to come back once its lock expired")
    assert again.id == "key-1" and again.delivery_count == 2
    with pytest.raises(LockLost):
        host.queue.complete(first)  # the first receiver's lock is gone
    assert handle(host.services, host.queue, again) == "completed"
    assert jobs(host) == ["once"] and host.queue.depth()["normal"] == 0


def test_publishing_the_same_idempotency_key_twice_queues_it_once(host):
    host.queue.publish(message(host.workspace, "dup"), message_id="same")
    host.queue.publish(message(host.workspace, "dup"), message_id="same")
    assert host.queue.depth()["normal"] == 1


@pytest.fixture(params=["directory", "blob container"])
def drop_host(request, monkeypatch):
    """The host, with its drop box in `drops/` of the data dir or in an Azurite container."""
    if request.param == "blob container":
        monkeypatch.setenv("BATCHAI_BLOB_CONNECTION_STRING", request.getfixturevalue("azurite_connection"))
        monkeypatch.setenv("BATCHAI_DROP_CONTAINER", f"drops-{uuid.uuid4().hex[:12]}")
    return request.getfixturevalue("host")


def test_a_dropped_recipe_is_submitted_and_a_broken_one_rejected(drop_host):
    host, drops = drop_host, drop_host.inbox.blobs
    ws = host.workspace
    inbox = f"inbox/{ws}/{EXP}"
    drops.put(f"{inbox}/tf.params.json", json.dumps({"cluster": "c", "placeholders": {"AZURE_BATCHAI_STORAGE_ACCOUNT": "acct"}}).encode())
    drops.put(f"{inbox}/tf.json", (RECIPES / "TensorFlow-GPU-Distributed" / "job.json").read_bytes())
    drops.put(f"{inbox}/broken.json", b'{"properties": {"nodeCount": 2}}')
    assert host.inbox.scan() == 2
    accepted = json.loads(drops.get(f"{inbox}/tf.status.json"))
    assert accepted["status"] == "accepted" and accepted["jobId"].endswith(f"/experiments/{EXP}/jobs/tf")
    rejected = json.loads(drops.get(f"{inbox}/broken.status.json"))
    assert rejected["status"] == "rejected" and rejected["error"]["code"] and rejected["error"]["target"]
    assert {b.name for b in drops.list("processed/")} == {f"processed/{ws}/{EXP}/tf.json", f"processed/{ws}/{EXP}/tf.params.json"}
    assert {b.name for b in drops.list("rejected/")} == {f"rejected/{ws}/{EXP}/broken.json"}
    assert host.inbox.pending() == [] and jobs(host) == ["tf"]
    tf = host.http.get(f"{workspace_path(ws)}/experiments/{EXP}/jobs/tf", params=V).json()["properties"]
    assert tf["toolType"] == "tensorflow" and "acct" in json.dumps(tf["mountVolumes"])


def test_a_drop_processed_again_answers_the_job_it_made(host):
    """A crash after the job was stored but before the drop moved: the same drop comes round again."""
    inbox = f"inbox/{host.workspace}/{EXP}"
    drop, sidecar = f"{inbox}/again.json", f"{inbox}/again.params.json"
    body = json.dumps(json.loads(message(host.workspace, "again"))["job"]).encode()
    host.inbox.blobs.put(sidecar, b'{"cluster": "c"}')
    host.inbox.blobs.put(drop, body)
    first = host.inbox.process(drop)
    host.inbox.blobs.put(sidecar, b'{"cluster": "c"}')
    host.inbox.blobs.put(drop, body)
    assert host.inbox.process(drop) == first and first["status"] == "accepted"
    assert jobs(host) == ["again"]
    assert host.inbox.process(f"{inbox}/again.status.json") is None  # status files are no drops


def test_a_drop_written_in_place_is_not_read_until_renamed(host):
    """Copying into the directory: a file whose name starts with `.` is still being written."""
    folder = host.data_dir / "drops" / "inbox" / host.workspace / EXP
    folder.mkdir(parents=True)
    (folder / ".half.json").write_text('{"properties": ')
    assert host.inbox.scan() == 0 and (folder / ".half.json").exists()


def test_a_drop_that_fails_does_not_hold_up_the_ones_behind_it(host, monkeypatch):
    inbox, job = f"inbox/{host.workspace}/{EXP}", json.dumps(json.loads(message(host.workspace, "x"))["job"]).encode()
    for name in ("a-unreadable", "b-bad-sidecar", "c-fine"):
        host.inbox.blobs.put(f"{inbox}/{name}.params.json", b"5" if name == "b-bad-sidecar" else b'{"cluster": "c"}')
        host.inbox.blobs.put(f"{inbox}/{name}.json", job)
    real_get = host.inbox.blobs.get

    def get(name):
        if name.endswith("a-unreadable.json"):
            raise PermissionError(f"cannot read {name}")
        return real_get(name)

    monkeypatch.setattr(host.inbox.blobs, "get", get)
    assert host.inbox.scan() == 2
    bad = json.loads(real_get(f"{inbox}/b-bad-sidecar.status.json"))
    assert bad["status"] == "rejected" and "JSON object" in bad["error"]["message"]
    assert bad["error"]["target"] == "b-bad-sidecar.params.json"
    assert jobs(host) == ["c-fine"]
    assert host.inbox.pending() == [f"{inbox}/a-unreadable.json"]  # left for the next scan
