"""Bad input gets a 400 in the ARM error shape naming the field, and nothing is stored."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.conftest import SUB, TOKEN
from tests.support.naming import unique_name

BASE = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.BatchAI/workspaces/{unique_name('bad')}"
V = {"api-version": "2018-05-01"}


@pytest.fixture(scope="module")
def http(server):
    client = server.http()
    assert client.put(BASE, params=V, json={"location": "eastus"}).status_code == 200
    assert (
        client.put(
            f"{BASE}/clusters/c",
            params=V,
            json={
                "properties": {
                    "vmSize": "STANDARD_D1",
                    "userAccountSettings": {"adminUserName": "u"},
                    "scaleSettings": {"manual": {"targetNodeCount": 1}},
                }
            },
        ).status_code
        == 200
    )
    assert client.put(f"{BASE}/experiments/e", params=V).status_code == 200
    yield client
    client.delete(BASE, params=V)


def job(**props):
    return {
        "properties": {
            "cluster": {"id": BASE + "/clusters/c"},
            "nodeCount": 1,
            "stdOutErrPathPrefix": "/tmp",
            "customToolkitSettings": {"commandLine": "true"},
            **props,
        }
    }


def assert_error(response: httpx.Response, status: int, target: str | None = None, code: str | None = None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] and error["message"]
    if target is not None:
        assert error.get("target") == target, error
    if code is not None:
        assert error["code"] == code


@pytest.mark.parametrize(
    "name,body,target",
    [
        ("bad name!", job(), "jobName"),
        ("no-command", job(customToolkitSettings=None, customMpiSettings={"processCount": 1}), "properties.customMpiSettings.commandLine"),
        ("two-toolkits", job(pyTorchSettings={"pythonScriptFilePath": "x.py"}), None),
        ("too-many-nodes", job(nodeCount=5), "properties.nodeCount"),
        ("no-prefix", job(stdOutErrPathPrefix=None), "properties.stdOutErrPathPrefix"),
        (
            "zero-ranks",
            job(customToolkitSettings=None, horovodSettings={"pythonScriptFilePath": "t.py", "processCount": 0}),
            "properties.horovodSettings.processCount",
        ),
        (
            "empty-mpi-command",
            job(customToolkitSettings=None, customMpiSettings={"commandLine": ""}),
            "properties.customMpiSettings.commandLine",
        ),
        (
            "absolute-mount",
            job(mountVolumes={"unmanagedFileSystems": [{"mountCommand": "mount -t tmpfs none", "relativeMountPath": "/etc"}]}),
            "properties.mountVolumes.unmanagedFileSystems[0].relativeMountPath",
        ),
        (
            "escaping-mount",
            job(
                mountVolumes={"azureFileShares": [{"azureFileUrl": "https://a.file.core.windows.net/s", "relativeMountPath": "a/../../x"}]}
            ),
            "properties.mountVolumes.azureFileShares[0].relativeMountPath",
        ),
        ("bad-input-id", job(inputDirectories=[{"id": "DATA-SET", "path": "/data"}]), "properties.inputDirectories[0].id"),
    ],
)
def test_bad_job_is_rejected_and_not_stored(http, name, body, target):
    body["properties"] = {k: v for k, v in body["properties"].items() if v is not None}
    response = http.put(f"{BASE}/experiments/e/jobs/{name}", params=V, json=body)
    assert_error(response, 400, target)
    if name == "two-toolkits":
        assert "customToolkitSettings" in response.json()["error"]["message"] or "pyTorchSettings" in response.json()["error"]["message"]
    assert http.get(f"{BASE}/experiments/e/jobs", params=V).json()["value"] == []


def test_malformed_body(http):
    response = http.put(f"{BASE}/experiments/e/jobs/j", params=V, content=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(response, 400, code="InvalidRequestContent")
    assert http.get(f"{BASE}/experiments/e/jobs", params=V).json()["value"] == []


def test_api_version_is_required(http):
    assert_error(http.get(BASE), 400, "api-version", "MissingApiVersionParameter")
    assert_error(http.get(BASE, params={"api-version": "2017-09-01-preview"}), 400, "api-version", "InvalidApiVersionParameter")


def test_token_is_required(server):
    assert_error(httpx.get(server.url + BASE, params=V), 401)
    assert_error(httpx.get(server.url + BASE, params=V, headers={"Authorization": "Bearer wrong"}), 401)
    assert httpx.get(server.url + BASE, params=V, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_unknown_resources_are_404(http):
    assert_error(http.get(f"{BASE}/clusters/nope", params=V), 404)
    assert_error(http.get(f"{BASE}/experiments/e/jobs/nope", params=V), 404)
    assert_error(http.put(f"{BASE}/experiments/nope/jobs/j", params=V, json=job()), 404)


def test_bad_cluster_body_names_the_field(http):
    response = http.put(
        f"{BASE}/clusters/c2",
        params=V,
        json={
            "properties": {
                "vmSize": "x",
                "userAccountSettings": {"adminUserName": "u"},
                "scaleSettings": {"manual": {"targetNodeCount": -1}},
            }
        },
    )
    assert_error(response, 400, "properties.scaleSettings.manual.targetNodeCount")
    assert_error(http.get(f"{BASE}/clusters/c2", params=V), 404)
