"""A bounded fuzz run over every route of the served API (hypothesis): whatever arrives, the answer is
a 4xx in ARM's error shape or a success, never a 5xx and never a hang.

The control plane is the embedded host on simulated nodes (a fuzzed cluster of a thousand nodes costs
memory, not processes), served by uvicorn on loopback and called over HTTP with a timeout.
"""

from __future__ import annotations

import collections
import socket
import string
import threading
import time
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchai.services import Settings
from function_app.embedded import EmbeddedHost
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(300)
EXAMPLES = 1500
REQUEST_TIMEOUT = 20.0  # far above any answer: a request past it is a hang
SUB, RG = "00000000-0000-0000-0000-000000000000", "rg"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("fuzz")
    env = pytest.MonkeyPatch()
    env.setenv("BATCHAI_STREAM_SECONDS", "0")  # a drawn GET of a live stream answers its snapshot and ends, not after 300 s
    host = EmbeddedHost(data_dir, settings=Settings(data_dir=data_dir), simulated_nodes={"heartbeat_seconds": 0.5})
    host.build()
    host.engine.start()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(host.app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    until(lambda: server.started, 30, "uvicorn to start")
    client = httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT)
    owner = {"Authorization": f"Bearer {host.token}"}
    ws = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.BatchAI/workspaces/fz"
    client.put(ws, params={"api-version": "2018-05-01"}, json={"location": "local"}, headers=owner).raise_for_status()
    api = {"api-version": "2018-05-01"}
    client.put(f"{ws}/experiments/e", params=api, headers=owner).raise_for_status()
    cluster = {
        "properties": {
            "vmSize": "STANDARD_D1",
            "userAccountSettings": {"adminUserName": "u"},
            "scaleSettings": {"manual": {"targetNodeCount": 1}},
        }
    }
    client.put(f"{ws}/clusters/c1", params=api, json=cluster, headers=owner).raise_for_status()
    job = {
        "properties": {
            "cluster": {"id": f"{ws}/clusters/c1"},
            "nodeCount": 1,
            "stdOutErrPathPrefix": "/tmp",
            "customToolkitSettings": {"commandLine": "true"},
        }
    }
    client.put(f"{ws}/experiments/e/jobs/j1", params=api, json=job, headers=owner).raise_for_status()
    yield host, client
    server.should_exit = True
    thread.join(30)
    host.engine.stop()
    host.compute.close()
    env.undo()


def _templates(app) -> list[tuple[str, list[str]]]:
    routes = [(r.path, sorted(r.methods)) for r in app.routes if isinstance(r, APIRoute)]
    door = [(f"/internal/v1/nodes/{{node}}/{action}", ["POST"]) for action in ("register", "heartbeat", "files")]
    return routes + door + [("/internal/v1/nodes/_enroll", ["POST"])]


KNOWN = {"sub": [SUB], "rg": [RG], "ws": ["fz"], "exp": ["e"], "location": ["eastus"], "cluster": ["c1"], "job": ["j1"], "name": ["files"]}
segments = st.one_of(
    st.sampled_from(["fz", "e", "c1", "j1", "..", ".", "-", "a" * 65, "%00", "x.y", "NUL", "ünï"]),
    st.text(min_size=1, max_size=80).filter(lambda s: "/" not in s and s not in (".", "..")),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=20,
)
FIELDS = [
    "location", "tags", "properties", "vmSize", "scaleSettings", "manual", "autoScale", "targetNodeCount", "nodeCount",
    "cluster", "id", "customToolkitSettings", "commandLine", "pyTorchSettings", "processCount", "mountVolumes",
    "azureBlobFileSystems", "accountName", "containerName", "relativeMountPath", "outputDirectories", "pathPrefix",
    "stdOutErrPathPrefix", "containerSettings", "imageSourceRegistry", "image", "secrets", "environmentVariables",
    "role", "scope", "expiresIn", "name", "waitSeconds", "finished", "tasks", "rotate",
]  # fmt: skip
shaped = st.recursive(
    json_scalars, lambda inner: st.dictionaries(st.sampled_from(FIELDS), inner, max_size=5) | st.lists(inner, max_size=3), max_leaves=25
)
bodies = st.one_of(
    st.none(),
    shaped.map(lambda v: ("json", v)),
    json_values.map(lambda v: ("json", v)),
    st.binary(max_size=200).map(lambda b: ("raw", b)),
    st.integers(min_value=1, max_value=20_000).map(lambda n: ("raw", b"[" * n)),
)
queries = st.dictionaries(
    st.sampled_from(
        [
            "maxresults",
            "$skiptoken",
            "outputdirectoryid",
            "directory",
            "linkexpiryinminutes",
            "since",
            "result",
            "resource",
            "p",
            "se",
            "sig",
            "j",
        ]
    ),
    st.one_of(st.text(alphabet=string.printable, max_size=30), st.integers(min_value=-(10**25), max_value=10**25).map(str)),
    max_size=3,
)
authorizations = st.one_of(
    st.just("owner"),
    st.just("owner"),
    st.just("owner"),
    st.none(),
    st.lists(st.integers(0x20, 0xFF).filter(lambda c: c != 0x7F), max_size=60).map(lambda cs: b"Bearer " + bytes(cs) + b"x"),
)


@st.composite
def requests(draw, templates):
    path, methods = draw(st.sampled_from(templates))
    method = draw(st.sampled_from(methods + ["DELETE", "PATCH"]))
    for name in [part[1:-1] for part in path.split("/") if part.startswith("{")]:
        value = draw(st.sampled_from(KNOWN[name]) if name in KNOWN and draw(st.integers(0, 4)) else segments)
        path = path.replace(f"{{{name}}}", quote(value, safe=""), 1)
    params = draw(queries)
    if draw(st.integers(0, 9)):
        params["api-version"] = "2018-05-01"
    return method, path, params, draw(bodies), draw(authorizations)


def test_no_request_gets_a_5xx_or_hangs(served, capsys):
    host, client = served
    templates = _templates(host.app)
    statuses: collections.Counter[int] = collections.Counter()
    started = time.monotonic()

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(requests(templates))
    def one(request):
        method, path, params, body, authorization = request
        headers: dict = {}
        if authorization == "owner":
            headers["Authorization"] = f"Bearer {host.token}"
        elif authorization is not None:
            headers["Authorization"] = authorization
        kwargs: dict = {}
        if body is not None:
            kind, value = body
            kwargs = {"json": value} if kind == "json" else {"content": value}
        response = client.request(method, path, params=params, headers=headers, **kwargs)
        statuses[response.status_code] += 1
        assert response.status_code < 500, (method, path, params, body, response.text[:500])
        if response.status_code >= 400 and not path.startswith("/_files/"):
            error = response.json()["error"]
            assert isinstance(error["code"], str) and isinstance(error["message"], str), response.text

    one()
    with capsys.disabled():
        print(
            f"\nfuzz: {sum(statuses.values())} requests in {time.monotonic() - started:.1f} s, by status {dict(sorted(statuses.items()))}"
        )
    assert sum(statuses.values()) >= EXAMPLES // 2
