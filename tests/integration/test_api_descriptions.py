"""/openapi.json says what each operation accepts; the official 2018-05-01 description is served too."""

from __future__ import annotations

import httpx

BODIES = {
    ("put", "/workspaces/{ws}"): "WorkspaceCreateParameters",
    ("patch", "/workspaces/{ws}"): "WorkspaceUpdateParameters",
    ("put", "/clusters/{cluster}"): "ClusterCreateParameters",
    ("patch", "/clusters/{cluster}"): "ClusterUpdateParameters",
    ("put", "/fileServers/{fs}"): "FileServerCreateParameters",
    ("put", "/jobs/{job}"): "JobCreateParameters",
    ("put", "/sweeps/{sweep}"): "SweepCreateParameters",
    ("post", "/nodes/{node}/execSession"): "ExecSessionParameters",
}


def test_openapi_declares_request_bodies_and_arm_errors(server):
    doc = httpx.get(f"{server.url}/openapi.json").json()  # open: it describes, it holds no data
    found = {}
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            for (m, suffix), name in BODIES.items():
                if m == method and path.endswith(suffix):
                    found[(m, suffix)] = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
                    assert found[(m, suffix)] == name
            if path.startswith("/subscriptions/"):
                assert any(p["name"] == "api-version" for p in op["parameters"])
                assert "422" not in op["responses"] and op["responses"]["default"]["content"]
    assert set(found) == set(BODIES)
    schemas = doc["components"]["schemas"]
    job = schemas["JobProperties"]["properties"]
    assert {"nodeCount", "cluster", "customToolkitSettings", "mountVolumes"} <= set(job)  # the wire (camelCase) names
    assert schemas["CloudError"]["properties"]["error"]["required"] == ["code", "message"]


def test_the_official_description_is_served(server):
    doc = httpx.get(f"{server.url}/openapi/2018-05-01/batchai.json").json()
    assert doc["info"]["version"] == "2018-05-01" and doc["servers"] == [{"url": server.url}]
    assert (
        "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.BatchAI/workspaces/{workspaceName}/clusters/{clusterName}"
        in doc["paths"]
    )
