"""Roles, tokens, OIDC, the audit log and the host's least privilege, against a live `batchai serve`
driven by the official SDK, HTTP and the CLI, and attacked from a job and from an unprivileged user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import jwt
import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.batchai import models
from cryptography.hazmat.primitives.asymmetric import rsa

from batchai.adapters.fs_blob_store import FsBlobStore
from batchai.adapters.sqlite_store import SqliteStore
from batchai.node_identity import node_credential, node_key
from batchai.output_sync import OutputSync
from tests.integration.conftest import ROOT, SUB, TOKEN, Server, kill_agents, make_sdk
from tests.support.naming import unique_name
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(240)
RG = "rg"
ISSUER, AUDIENCE = "https://login.example/tenant/v2.0", "api://batchai-test"
AZURE_SECRET = "azure-client-secret-do-not-leak-7f3a"
JOB_SECRET = "job-secret-value-do-not-leak-91c2"
BASE = "/providers/Microsoft.BatchAI"
API = {"api-version": "2018-05-01"}


def _key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def signing_key():
    return _key()


@pytest.fixture(scope="module")
def server(tmp_path_factory, signing_key):
    keys = tmp_path_factory.mktemp("issuer")
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    (keys / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    env = {
        "BATCHAI_OIDC_ISSUER": ISSUER,
        "BATCHAI_OIDC_AUDIENCE": AUDIENCE,
        "BATCHAI_OIDC_JWKS": str(keys / "jwks.json"),
        "AZURE_CLIENT_SECRET": AZURE_SECRET,  # what a user's shell may hold: no job may see it
    }
    srv = Server(tmp_path_factory.mktemp("secured"), env=env).start()
    yield srv
    srv.stop()
    kill_agents(srv.data_dir)


def http(server, token: str | None = TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, params=API, timeout=30)


def make_token(server, role: str, scope: str = "/", **extra) -> dict:
    response = http(server).post(f"{BASE}/tokens", json={"role": role, "scope": scope, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def ws_id(name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.BatchAI/workspaces/{name}"


def status_of(call) -> int:
    with pytest.raises(HttpResponseError) as caught:
        call()
    return caught.value.status_code


@pytest.fixture(scope="module")
def owner(server):
    return make_sdk(server, TOKEN)


@pytest.fixture(scope="module")
def workspace(owner):
    name = unique_name("sec")
    owner.workspaces.begin_create(RG, name, models.WorkspaceCreateParameters(location="eastus")).result()
    owner.experiments.begin_create(RG, name, "e1").result()
    return name


@pytest.fixture(scope="module")
def cluster(owner, workspace):
    owner.clusters.begin_create(
        RG,
        workspace,
        "c1",
        models.ClusterCreateParameters(
            vm_size="STANDARD_D1",
            user_account_settings=models.UserAccountSettings(admin_user_name="u", admin_user_password="pw"),
            scale_settings=models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=1)),
        ),
    ).result()
    return until(
        lambda: (c := owner.clusters.get(RG, workspace, "c1")).node_state_counts.idle_node_count == 1 and c,
        60,
        "an idle node",
        interval=0.2,
    )


def run_job(owner, workspace, cluster, name: str, command: str):
    owner.jobs.begin_create(
        RG,
        workspace,
        "e1",
        name,
        models.JobCreateParameters(
            cluster=models.ResourceId(id=cluster.id),
            node_count=1,
            std_out_err_path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
            output_directories=[models.OutputDirectory(id="OUT", path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/out")],
            secrets=[models.EnvironmentVariableWithSecretValue(name="JOB_SECRET", value=JOB_SECRET)],
            custom_toolkit_settings=models.CustomToolkitSettings(command_line=command),
            constraints=models.JobBasePropertiesConstraints(max_wall_clock_time=timedelta(minutes=5)),
        ),
    ).result()
    job = until(
        lambda: (j := owner.jobs.get(RG, workspace, "e1", name)).execution_state in ("succeeded", "failed") and j, 90, f"job {name} to end"
    )
    assert job.execution_state == "succeeded", job.execution_info
    return job


def output_files(sdk, workspace, job, output_id="OUT"):
    options = models.JobsListOutputFilesOptions(outputdirectoryid=output_id)
    return {f.name: f for f in sdk.jobs.list_output_files(RG, workspace, "e1", job, options)}


# -- identities and roles ---------------------------------------------------------------------
def test_whoami_names_the_owner_token_and_its_service_wide_role(server):
    answer = http(server).get(f"{BASE}/whoami").json()
    assert answer == {
        "principal": {"id": "owner-token", "name": "owner-token", "kind": "owner-token"},
        "assignments": [{"scope": "/", "role": "Owner"}],
    }


def test_reader_token_reads_but_every_create_update_delete_and_terminate_is_403(server, owner, workspace):
    token = make_token(server, "reader")
    reader = make_sdk(server, token["token"])
    assert reader.workspaces.get(RG, workspace).name == workspace
    assert "e1" in [e.name for e in reader.experiments.list_by_workspace(RG, workspace)]
    assert workspace in [w.name for w in reader.workspaces.list_by_resource_group(RG)]
    assert (
        status_of(
            lambda: reader.workspaces.begin_create(RG, unique_name("no"), models.WorkspaceCreateParameters(location="eastus")).result()
        )
        == 403
    )
    assert status_of(lambda: reader.workspaces.update(RG, workspace, models.WorkspaceUpdateParameters(tags={"a": "b"}))) == 403
    assert status_of(lambda: reader.experiments.begin_create(RG, workspace, "e2").result()) == 403
    assert status_of(lambda: reader.experiments.begin_delete(RG, workspace, "e1").result()) == 403
    assert status_of(lambda: reader.jobs.begin_terminate(RG, workspace, "e1", "nojob").result()) == 403
    assert status_of(lambda: reader.workspaces.begin_delete(RG, workspace).result()) == 403
    denied = http(server, token["token"]).put(f"{ws_id(workspace)}/experiments/e3", json={})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "AuthorizationFailed"
    assert owner.experiments.get(RG, workspace, "e1").name == "e1"  # nothing was changed


def test_contributor_scoped_to_one_workspace_cannot_see_another(server, owner):
    mine, other = unique_name("mine"), unique_name("other")
    for name in (mine, other):
        owner.workspaces.begin_create(RG, name, models.WorkspaceCreateParameters(location="eastus")).result()
    token = make_token(server, "Contributor", ws_id(mine))
    contributor = make_sdk(server, token["token"])
    contributor.experiments.begin_create(RG, mine, "mine-exp").result()
    listed = [w.name for w in contributor.workspaces.list_by_resource_group(RG)]
    assert mine in listed and other not in listed
    assert other not in [w.name for w in contributor.workspaces.list()]
    assert status_of(lambda: contributor.workspaces.get(RG, other)) == 403
    assert status_of(lambda: contributor.experiments.begin_create(RG, other, "x").result()) == 403
    assert (
        http(server, token["token"]).post(f"{BASE}/tokens", json={"role": "Reader", "scope": ws_id(mine)}).status_code == 403
    )  # not an Owner
    whoami = http(server, token["token"]).get(f"{BASE}/whoami").json()
    assert whoami["principal"]["kind"] == "token" and whoami["assignments"] == [{"scope": ws_id(mine), "role": "Contributor"}]


def test_revoked_and_expired_tokens_are_401(server):
    token = make_token(server, "reader")
    client = http(server, token["token"])
    assert client.get(f"{BASE}/whoami").status_code == 200
    assert http(server).delete(f"{BASE}/tokens/{token['id']}").json()["revoked"] is True
    refused = client.get(f"{BASE}/whoami")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "AuthenticationFailed"
    short = make_token(server, "reader", expiresIn="1m")
    store = SqliteStore(server.data_dir / "store.db")  # a minute is long for a test: its end is moved to the past
    store.put_token({**store.get_token(short["id"]), "expires": time.time() - 1})
    assert http(server, short["token"]).get(f"{BASE}/whoami").status_code == 401
    assert http(server, short["token"][:-2] + "xx").get(f"{BASE}/whoami").status_code == 401


def _jwt(key, **claims) -> str:
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "preferred_username": "ada@example.org",
        "iat": now,
        "exp": now + 600,
        "roles": ["Reader"],
    }
    return jwt.encode({**body, **claims}, key, algorithm="RS256", headers={"kid": "k1"})


def test_a_jwt_signed_by_the_issuers_key_is_accepted_and_refused_otherwise(server, signing_key, workspace):
    good = http(server, _jwt(signing_key))
    assert good.get(f"{BASE}/whoami").json() == {
        "principal": {"id": "oidc:user-1", "name": "ada@example.org", "kind": "oidc"},
        "assignments": [{"scope": "/", "role": "Reader"}],
    }
    assert good.get(ws_id(workspace)).status_code == 200
    assert good.put(f"{ws_id(workspace)}/experiments/jwt", json={}).status_code == 403  # a Reader
    for bad in (
        _jwt(signing_key, aud="api://someone-else"),
        _jwt(signing_key, iss="https://evil.example/"),
        _jwt(signing_key, exp=int(time.time()) - 60),
        _jwt(_key()),  # not the issuer's key
    ):
        assert http(server, bad).get(f"{BASE}/whoami").status_code == 401


# -- the CLI ----------------------------------------------------------------------------------
def cli(server, *args: str, token: str = TOKEN) -> subprocess.CompletedProcess:
    env = {**os.environ, "BATCHAI_URL": server.url, "BATCHAI_TOKEN": token, "PYTHONPATH": str(ROOT), "BATCHAI_RESOURCE_GROUP": RG}
    return subprocess.run([sys.executable, "-m", "batchai.cli.main", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_cli_makes_lists_and_revokes_tokens_and_reads_the_audit_log(server, workspace):
    made = cli(server, "token", "create", "--role", "reader", "--workspace", workspace, "--expires", "30d", "--name", "cli-reader")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("bai.")
    assert cli(server, "--json", "workspace", "show", workspace, token=secret).returncode == 0
    listed = json.loads(cli(server, "--json", "token", "list").stdout)
    mine = next(t for t in listed if t["name"] == "cli-reader")
    assert mine["role"] == "Reader" and mine["scope"] == ws_id(workspace) and mine["expiresOn"] and "hash" not in mine
    assert secret not in json.dumps(listed)
    denied = cli(server, "token", "list", token=secret)
    assert denied.returncode != 0 and "AuthorizationFailed" in denied.stderr
    assert cli(server, "token", "revoke", mine["id"]).returncode == 0
    assert "AuthenticationFailed" in cli(server, "workspace", "show", workspace, token=secret).stderr
    audit = json.loads(cli(server, "--json", "audit", "--action", "Microsoft.BatchAI/tokens/delete").stdout)
    assert any(e["resource"].endswith(mine["id"]) and e["principal"] == "owner-token" for e in audit)


# -- the audit log ----------------------------------------------------------------------------
def test_audit_records_a_create_a_failed_authentication_and_a_role_change_and_no_secret(server, owner, workspace, cluster):
    token = make_token(server, "Contributor", ws_id(workspace), name="auditor")
    created = http(server, token["token"]).put(f"{ws_id(workspace)}/experiments/audited", json={})
    assert created.status_code == 200
    assert http(server, "not-a-token-" + JOB_SECRET).get(ws_id(workspace)).status_code == 401
    run_job(owner, workspace, cluster, "secretive", "echo done")
    entries = http(server).get(f"{BASE}/auditLog", params={**API, "resource": ws_id(workspace)}).json()["value"]
    create = next(e for e in entries if e["resource"].endswith("/experiments/audited"))
    assert create["principal"] == f"token:{token['id']}" and create["principalName"] == "auditor"
    assert create["action"] == "Microsoft.BatchAI/workspaces/experiments/write" and create["result"] == 200 and create["time"]
    assert any(e["action"] == "authenticate" and e["result"] == 401 and e["principal"] == "anonymous" for e in entries)
    assert any(e["action"] == "Microsoft.BatchAI/workspaces/experiments/jobs/write" and e["principal"] == "owner-token" for e in entries)
    role_changes = http(server).get(f"{BASE}/auditLog", params={**API, "action": "Microsoft.BatchAI/tokens/write"}).json()["value"]
    assert any(e["resource"] == f"{BASE}/tokens/{token['id']}" and "Contributor" in e["message"] for e in role_changes)
    everything = json.dumps(http(server).get(f"{BASE}/auditLog", params={**API, "maxresults": "1000"}).json())
    audit_rows = subprocess.run(["sqlite3", str(server.data_dir / "store.db"), "SELECT doc FROM audit"], capture_output=True, text=True)
    server_log = (server.data_dir / "serve.log").read_text(errors="replace")
    for secret in (token["token"], TOKEN, JOB_SECRET, token["token"].rsplit(".", 1)[-1]):
        assert secret not in everything and secret not in audit_rows.stdout and secret not in server_log


def test_the_audit_log_is_for_owners_and_filters_by_time(server):
    reader = make_token(server, "Reader")
    assert http(server, reader["token"]).get(f"{BASE}/auditLog").status_code == 403
    future = http(server).get(f"{BASE}/auditLog", params={**API, "since": "2999-01-01T00:00:00Z"}).json()
    assert future["value"] == [] and future["nextLink"] is None
    assert http(server).get(f"{BASE}/auditLog", params={**API, "since": "yesterday"}).status_code == 400


# -- least privilege on the host --------------------------------------------------------------
def test_the_data_dir_and_its_secrets_are_the_owners_alone(server):
    assert (server.data_dir.stat().st_mode & 0o777) == 0o700
    for name in ("store.db", "token", "queue.db"):
        path = server.data_dir / name
        if path.exists():
            assert (path.stat().st_mode & 0o077) == 0, name


AS_NOBODY = """
import encodings.idna, json, os, socket, sys, time  # idna: before the switch, the interpreter's files may be unreadable
os.setgroups([]); os.setgid(65534); os.setuid(65534)
data_dir, port = sys.argv[1], int(sys.argv[2])
results = {}
for name in ("", "token", "store.db", "queue.db"):
    try:
        path = os.path.join(data_dir, name)
        os.listdir(path) if not name else open(path, "rb").read(1)
        results[name or "dir"] = "read"
    except PermissionError:
        results[name or "dir"] = "refused"
    except FileNotFoundError:
        results[name or "dir"] = "absent"
start = time.monotonic()
sock = socket.create_connection(("127.0.0.1", port), timeout=10)
sock.sendall(json.dumps({"secret": "guessed-secret", "command": "id"}).encode() + b"\\n")
answer = b""
while True:
    chunk = sock.recv(65536)
    if not chunk:
        break
    answer += chunk
results["exec"] = answer[5:].decode(errors="replace")
results["exec_seconds"] = time.monotonic() - start
print(json.dumps(results))
"""


def test_an_unprivileged_user_cannot_read_the_data_dir_nor_use_a_nodes_exec_service(server, cluster):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to the unprivileged user 'nobody'")
    node = next(n for n in SqliteStore(server.data_dir / "store.db").nodes() if n.exec_port)
    done = subprocess.run(
        [sys.executable, "-c", AS_NOBODY, str(server.data_dir), str(node.exec_port)], capture_output=True, text=True, timeout=60, cwd="/"
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results["dir"] == "refused" and results["token"] in ("refused", "absent") and results["store.db"] == "refused"
    assert results["queue.db"] in ("refused", "absent")
    exec_answer = json.loads(results["exec"])
    assert exec_answer["exitCode"] == 255 and "uid=" not in results["exec"] and results["exec_seconds"] < 10


def test_a_job_running_env_sees_no_control_plane_or_node_credential(server, owner, workspace, cluster):
    run_job(owner, workspace, cluster, "env", "env > $AZ_BATCHAI_OUTPUT_OUT/env.txt")
    env_text = httpx.get(output_files(owner, workspace, "env")["env.txt"].download_url).text
    store = SqliteStore(server.data_dir / "store.db")
    credentials = [node_credential(node_key(store), n.id) for n in store.nodes()]
    names = {line.split("=", 1)[0] for line in env_text.splitlines() if "=" in line}
    assert "AZ_BATCHAI_OUTPUT_OUT" in names and "JOB_SECRET" in names  # its own contract and its own secret
    for secret in (TOKEN, AZURE_SECRET, *credentials):
        assert secret not in env_text
    assert not names & {"BATCHAI_TOKEN", "BATCHAI_NODE_TOKEN", "BATCHAI_ENROLL_TOKEN", "AZURE_CLIENT_SECRET", "BATCHAI_OIDC_JWKS"}


def test_a_symlink_in_an_output_dir_is_not_listed_downloaded_or_uploaded(server, owner, workspace, cluster, tmp_path):
    private = tmp_path / "root-only.txt"
    private.write_text("root-only-content")
    private.chmod(0o600)
    out = "$AZ_BATCHAI_OUTPUT_OUT"
    command = (
        f"echo ok > {out}/real.txt; ln -s {private} {out}/leak; ln -s /nonexistent {out}/dangling; "
        f"ln -s {tmp_path} {out}/leakdir; touch {out}/$'bad\\xff'"
    )
    run_job(owner, workspace, cluster, "links", command)
    listed = output_files(owner, workspace, "links")
    assert set(listed) == {"real.txt"}
    directory = http(server).post(
        f"{ws_id(workspace)}/experiments/e1/jobs/links/listOutputFiles", params={**API, "outputdirectoryid": "OUT", "directory": "leakdir"}
    )
    assert directory.status_code == 400
    url = listed["real.txt"].download_url
    record = SqliteStore(server.data_dir / "store.db").get(f"{ws_id(workspace)}/experiments/e1/jobs/links")
    real = Path(record.internal["paths"]["outputs"]["OUT"]) / "real.txt"
    real.unlink()
    real.symlink_to(private)  # swapped for a link after it was listed, as a running job could
    swapped = httpx.get(url)
    assert swapped.status_code == 404 and "root-only-content" not in swapped.text
    blobs = FsBlobStore(tmp_path / "blobs")
    real.unlink()
    real.write_text("ok\n")
    OutputSync(SqliteStore(server.data_dir / "store.db"), blobs).sync(record)
    uploaded = [b.name.rsplit("/", 1)[-1] for b in blobs.list("")]
    assert "real.txt" in uploaded and not {"leak", "dangling"} & set(uploaded)
    assert all("root-only-content" != (blobs.get(b.name) or b"").decode(errors="replace") for b in blobs.list(""))


def test_a_jobs_download_urls_die_with_the_job(server, owner, workspace, cluster):
    run_job(owner, workspace, cluster, "gone", "echo bye > $AZ_BATCHAI_OUTPUT_OUT/bye.txt")
    url = output_files(owner, workspace, "gone")["bye.txt"].download_url
    assert httpx.get(url).text == "bye\n"
    owner.jobs.begin_delete(RG, workspace, "e1", "gone").result()
    assert httpx.get(url).status_code == 403


# -- bounds and malformed input: each a 4xx in ARM's shape ------------------------------------
def arm_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_a_body_over_the_limit_is_413(server, workspace):
    big = b'{"properties": {"x": "' + b"a" * (5 << 20) + b'"}}'
    response = http(server).put(f"{ws_id(workspace)}/experiments/big", content=big, headers={"Content-Type": "application/json"})
    assert arm_error(response, 413)["code"] == "RequestEntityTooLarge"


def test_deeply_nested_json_is_400(server, workspace):
    for depth in (40, 100_000):
        body = "[" * depth + "]" * depth
        response = http(server).put(ws_id(unique_name("deep")), content='{"location": "eastus", "tags": ' + body + "}")
        assert "nests deeper" in arm_error(response, 400)["message"]


def test_a_skiptoken_past_int64_is_400(server):
    response = http(server).get(f"/subscriptions/{SUB}/providers/Microsoft.BatchAI/workspaces", params={**API, "$skiptoken": str(1 << 64)})
    assert arm_error(response, 400)["target"] == "$skiptoken"


def test_a_non_ascii_authorization_header_is_401_and_leaves_no_traceback(server):
    response = httpx.get(f"{server.url}{BASE}/whoami", params=API, headers=[(b"Authorization", "Bearer jéton".encode("latin-1"))])
    assert arm_error(response, 401)["code"] == "AuthenticationFailed"
    assert "Traceback" not in (server.data_dir / "serve.log").read_text(errors="replace")


def test_node_and_process_counts_over_their_bounds_are_400(server, workspace):
    cluster = {
        "properties": {
            "vmSize": "STANDARD_D1",
            "scaleSettings": {"manual": {"targetNodeCount": 10**12}},
            "userAccountSettings": {"adminUserName": "u", "adminUserPassword": "p"},
        }
    }
    assert "targetNodeCount" in arm_error(http(server).put(f"{ws_id(workspace)}/clusters/huge", json=cluster), 400)["target"]
    job = {
        "properties": {
            "cluster": {"id": f"{ws_id(workspace)}/clusters/c1"},
            "nodeCount": 1,
            "stdOutErrPathPrefix": "/tmp",
            "pyTorchSettings": {"pythonScriptFilePath": "a.py", "processCount": 10**9},
        }
    }
    assert "processCount" in arm_error(http(server).put(f"{ws_id(workspace)}/experiments/e1/jobs/huge", json=job), 400)["target"]


def test_malformed_node_requests_are_4xx(server):
    client = httpx.Client(base_url=server.url, timeout=10)
    for path, body, headers in (
        ("/internal/v1/nodes/n1/heartbeat", b"{}", {"Authorization": "Bearer x"}),
        ("/internal/v1/nodes/n1/heartbeat", b"{}", {}),
        ("/internal/v1/nodes/_enroll", b"[" * 100_000, {"Authorization": "Bearer bai-enroll.@@.x"}),
        ("/internal/v1/nodes/_enroll", b'{"name": 5}', {"Authorization": "Bearer bai-enroll.YQ.x"}),
        ("/internal/v1/nodes/%ff/register", b"not json", {"Authorization": "Bearer x"}),
    ):
        response = client.post(path, content=body, headers=headers)
        assert 400 <= response.status_code < 500 and "error" in response.json(), (path, response.text)


def test_dot_dot_in_names_that_become_paths_is_400(server, workspace):
    assert arm_error(http(server).get(f"/subscriptions/{SUB}/resourceGroups/rg../providers/Microsoft.BatchAI/workspaces/{workspace}"), 400)
    job = {
        "properties": {
            "cluster": {"id": f"{ws_id(workspace)}/clusters/c1"},
            "nodeCount": 1,
            "stdOutErrPathPrefix": "/tmp",
            "customToolkitSettings": {"commandLine": "true"},
            "mountVolumes": {"azureBlobFileSystems": [{"accountName": "..", "containerName": "/etc", "relativeMountPath": "b"}]},
        }
    }
    error = arm_error(http(server).put(f"{ws_id(workspace)}/experiments/e1/jobs/escape", json=job), 400)
    assert "accountName" in error["target"] or "containerName" in error["target"]
