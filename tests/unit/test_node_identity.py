"""One identity per node: enrollment into an attached cluster, per-node credentials, removal and rotation,
over the node door's real HTTP routes (the API's ASGI app in process)."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from batchai.node_identity import node_credential, node_key
from batchai.ports import TaskRecord
from function_app.embedded import EmbeddedHost

SUB = "00000000-0000-0000-0000-000000000000"
API = {"api-version": "2018-05-01"}
WS = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.BatchAI/workspaces/w"
CLUSTER = f"{WS}/clusters/c"
DOOR = "/internal/v1/nodes"


@pytest.fixture
def world(tmp_path):
    host = EmbeddedHost(tmp_path, simulated_nodes={"heartbeat_seconds": 5.0})
    host.build()
    host.engine.start()
    http = TestClient(host.app)
    user = {"Authorization": f"Bearer {host.token}"}
    assert http.put(WS, params=API, headers=user, json={"location": "local"}).status_code in (200, 201)
    cluster = {"properties": {"vmSize": "STANDARD_D1_V2", "userAccountSettings": {"adminUserName": "u"}, "attached": True}}
    assert http.put(CLUSTER, params=API, headers=user, json=cluster).status_code in (200, 201)
    try:
        yield host, http, user
    finally:
        host.engine.stop()
        host.compute.close()


def token(http, user, rotate: bool = False) -> str:
    answer = http.post(f"{CLUSTER}/enrollmentToken", params=API, headers=user, json={"rotate": rotate})
    assert answer.status_code == 200, answer.text
    return answer.json()["token"]


def enroll(http, enrollment: str, name: str) -> dict:
    answer = http.post(f"{DOOR}/_enroll", headers={"Authorization": f"Bearer {enrollment}"}, json={"name": name})
    assert answer.status_code == 200, answer.text
    node = answer.json()
    http.post(f"{DOOR}/{node['nodeId']}/register", headers=auth(node), json={"bootId": f"boot-{name}", "address": "127.0.0.1"})
    return node


def auth(node: dict) -> dict:
    return {"Authorization": f"Bearer {node['credential']}"}


def beat(http, node: dict, *, as_node: dict | None = None, **body):
    body = {"bootId": f"boot-{node['name']}", "running": [], "finished": [], "waitSeconds": 0, **body}
    return http.post(f"{DOOR}/{node['nodeId']}/heartbeat", headers=auth(as_node or node), json=body)


def test_a_node_sees_and_reports_only_its_own_tasks(world):
    host, http, user = world
    enrollment = token(http, user)
    a, b = enroll(http, enrollment, "a"), enroll(http, enrollment, "b")
    assert a["credential"] != b["credential"] and a["credential"] == node_credential(node_key(host.store), a["nodeId"])
    host.store.put_tasks([TaskRecord("task-b", f"{WS}/experiments/e/jobs/j", b["nodeId"], 1, {"task_id": "task-b"})])

    assert beat(http, b, as_node=a).status_code == 403  # A's credential on B's heartbeat: B's tasks stay hidden
    finished = [{"taskId": "task-b", "exitCode": 0}]
    refused = beat(http, a, finished=finished)  # A reporting B's result
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "AuthorizationFailed"
    assert host.store.get_task("task-b").state == "pending"
    upload = {"taskId": "task-b", "directory": "stdouterr", "path": "stdout.txt", "offset": 0, "data": base64.b64encode(b"x").decode()}
    assert http.post(f"{DOOR}/{a['nodeId']}/files", headers=auth(a), json=upload).status_code == 403

    assert beat(http, a).json()["start"] == []
    assert [t["task_id"] for t in beat(http, b).json()["start"]] == ["task-b"]


def test_a_removed_node_is_refused_and_a_rotated_token_enrolls_no_one(world):
    host, http, user = world
    old = token(http, user)
    a = enroll(http, old, "a")
    assert beat(http, a).status_code == 200
    assert http.post(f"{CLUSTER}/nodes/a/remove", params=API, headers=user).status_code == 202
    for action, body in (("heartbeat", {"bootId": "boot-a"}), ("register", {"bootId": "boot-a"})):
        answer = http.post(f"{DOOR}/{a['nodeId']}/{action}", headers=auth(a), json=body)
        assert answer.status_code == 403, (action, answer.text)

    new = token(http, user, rotate=True)
    assert new != old
    assert http.post(f"{DOOR}/_enroll", headers={"Authorization": f"Bearer {old}"}, json={"name": "a"}).status_code == 401
    again = enroll(http, new, "a")  # the same machine, back under its name: a new node with a new credential
    assert again["nodeId"] != a["nodeId"] and again["credential"] != a["credential"]


@pytest.mark.parametrize(
    ("body", "target"),
    [({"name": "not a name!"}, "name"), ({"name": ""}, "name"), ({"name": 7}, "name"), ({"name": "x" * 64}, "name")],
)
def test_bad_enrollments_are_400_naming_the_field_and_create_nothing(world, body, target):
    host, http, user = world
    answer = http.post(f"{DOOR}/_enroll", headers={"Authorization": f"Bearer {token(http, user)}"}, json=body)
    assert answer.status_code == 400 and answer.json()["error"]["target"] == target
    assert host.store.nodes(host.store.get(CLUSTER).id) == []


def test_enrollment_needs_an_attached_cluster_and_a_real_token(world):
    host, http, user = world
    for bad in ("", "bai-enroll.", "bai-enroll.eA.00", "Bearer", "x" * 5000):
        assert http.post(f"{DOOR}/_enroll", headers={"Authorization": f"Bearer {bad}"}, json={}).status_code == 401
    assert http.post(f"{CLUSTER}/enrollmentToken", params=API, headers=user, json={"rotate": "yes"}).json()["error"]["target"] == "rotate"
    plain = {"properties": {"vmSize": "STANDARD_D1_V2", "userAccountSettings": {"adminUserName": "u"}}}
    assert http.put(f"{WS}/clusters/plain", params=API, headers=user, json=plain).status_code in (200, 201)
    assert http.post(f"{WS}/clusters/plain/enrollmentToken", params=API, headers=user).status_code == 409
    assert http.post(f"{CLUSTER}/nodes/ghost/remove", params=API, headers=user).status_code == 404


def test_the_enrollment_token_and_credentials_never_show_in_the_cluster(world):
    host, http, user = world
    enrollment = token(http, user)
    a = enroll(http, enrollment, "a")
    shown = http.get(CLUSTER, params=API, headers=user).text
    assert enrollment not in shown and a["credential"] not in shown and "attached" in shown


@pytest.mark.parametrize(
    "gpus", ["four", [{"index": "x", "name": "n", "uuid": "u"}], [{"index": "0"}], [{"index": "0", "name": "n", "uuid": "u"}] * 65]
)
def test_a_node_reporting_malformed_gpus_is_400(world, gpus):
    host, http, user = world
    node = enroll(http, token(http, user), "a")
    answer = http.post(f"{DOOR}/{node['nodeId']}/register", headers=auth(node), json={"bootId": "b2", "gpus": gpus})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "InvalidRequestContent"
    assert host.store.get_node(node["nodeId"]).gpus is None


def test_a_node_sends_its_tasks_files_inside_the_jobs_directories_only(world, tmp_path):
    from batchai.ports import Record

    host, http, user = world
    node = enroll(http, token(http, user), "a")
    job_id = f"{WS}/experiments/e/jobs/j"
    files = tmp_path / "files"
    logs, out = files / "stdouterr", files / "OUT"
    paths = {"stdouterr": str(logs), "outputs": {"OUT": str(out)}}
    host.store.create(
        Record(id=job_id, type="jobs", name="j", parent=f"{WS}/experiments/e", body={"properties": {}}, internal={"paths": paths})
    )
    host.store.put_tasks([TaskRecord("task-a", job_id, node["nodeId"], 1, {"task_id": "task-a"})])

    def send(**fields):
        body = {
            "taskId": "task-a",
            "directory": "stdouterr",
            "path": "stdout.txt",
            "offset": 0,
            "data": base64.b64encode(b"hello\n").decode(),
        }
        return http.post(f"{DOOR}/{node['nodeId']}/files", headers=auth(node), json={**body, **fields})

    assert send().status_code == 200
    assert send(offset=6, data=base64.b64encode(b"world\n").decode()).status_code == 200
    assert (logs / "stdout.txt").read_bytes() == b"hello\nworld\n"
    assert send(directory="OUT", path="model/w.bin").status_code == 200 and (out / "model" / "w.bin").read_bytes() == b"hello\n"
    for fields, target in (
        ({"path": "../escape.txt"}, "path"),
        ({"path": "/etc/passwd"}, "path"),
        ({"directory": "NOPE"}, "directory"),
        ({"offset": -1}, "offset"),
        ({"offset": True}, "offset"),
        ({"data": "not base64!"}, "data"),
    ):
        answer = send(**fields)
        assert answer.status_code == 400 and answer.json()["error"]["target"] == target, (fields, answer.text)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and files in p.parents) == ["stdout.txt", "w.bin"]
    assert not (tmp_path / "escape.txt").exists()


def test_a_joined_machine_mounts_the_clusters_volumes_under_its_own_root_before_its_setup(world):
    host, http, user = world
    share = {
        "accountName": "acct",
        "azureFileUrl": "https://acct.file.core.windows.net/data",
        "credentials": {"accountKey": "c2VjcmV0LWtleQ=="},
        "relativeMountPath": "data",
    }
    cluster = {
        "properties": {
            "vmSize": "STANDARD_D1_V2",
            "userAccountSettings": {"adminUserName": "u"},
            "attached": True,
            "nodeSetup": {"mountVolumes": {"azureFileShares": [share]}},
        }
    }
    assert http.put(f"{WS}/clusters/m", params=API, headers=user, json=cluster).status_code in (200, 201)
    enrollment = http.post(f"{WS}/clusters/m/enrollmentToken", params=API, headers=user, json={}).json()["token"]
    node = http.post(f"{DOOR}/_enroll", headers={"Authorization": f"Bearer {enrollment}"}, json={"name": "gpu-box"}).json()
    registered = http.post(
        f"{DOOR}/{node['nodeId']}/register", headers=auth(node), json={"bootId": "b1", "address": "10.0.0.7", "root": "/srv/node"}
    )
    assert registered.status_code == 200, registered.text
    assert host.store.get_node(node["nodeId"]).state == "preparing"
    (setup,) = host.store.tasks(node=node["nodeId"])
    assert "mount -t cifs" in setup.spec["mounts"] and "/srv/node/mounts/data" in setup.spec["mounts"]
    assert setup.spec["env"]["AZ_BATCHAI_MOUNT_ROOT"] == "/srv/node/mounts"  # its own disk, not the control plane's
