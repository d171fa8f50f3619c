"""Clusters (nodes of one VM size) and file servers."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import Field, StrictBool

from batchai import exec_tickets, ids, node_identity, node_protocol, render
from batchai.api import openapi
from batchai.api.arm import JSONResponse, json_body, page_records, paged
from batchai.api.deletion import begin_delete, workspace_location
from batchai.api.deps import WS, require, services, workspace_path
from batchai.api.files import expiry_minutes, list_directory
from batchai.errors import ApiError
from batchai.frameworks.expand import expand
from batchai.lifecycle import controller_instance, utcnow
from batchai.model import ClusterCreateParameters, ClusterUpdateParameters, FileServerCreateParameters, parse, validate_name
from batchai.model.common import WireModel
from batchai.node_protocol import JOINED
from batchai.ports import Conflict, Unsupported
from batchai.records import new_record
from batchai.scheduling_pass import attached
from batchai.services import Services
from batchai.wake import wake_cluster

log = logging.getLogger("batchai.api")
router = APIRouter()
CLUSTER = WS + "/clusters/{cluster}"
FILE_SERVER = WS + "/fileServers/{fs}"


class EnrollmentTokenParameters(WireModel):
    rotate: StrictBool = False  # void every token given before


class PortForward(WireModel):
    host: str = Field("127.0.0.1", min_length=1, max_length=exec_tickets.MAX_HOST_CHARS)  # as the node resolves it
    port: int = Field(ge=1, le=65535)


class ExecSessionParameters(WireModel):
    """What an execSession asks for: `command` (none: a login shell), or a `forward` from the node."""

    command: str | None = Field(None, min_length=1, max_length=exec_tickets.MAX_COMMAND_CHARS)
    forward: PortForward | None = None


def cluster_path(sub, rg, ws, cluster) -> str:
    validate_name("cluster", cluster, "clusterName")
    return ids.child_id(workspace_path(sub, rg, ws), "clusters", cluster)


def _render(request: Request, record):
    svc = services(request)
    return render.cluster(record, svc.store, svc.settings.node_timeout_seconds)


def target_nodes(scale: dict) -> int:
    if "manual" in scale:
        return scale["manual"]["targetNodeCount"]
    return scale["autoScale"].get("initialNodeCount", 0)


@router.put(CLUSTER, openapi_extra=openapi.body(ClusterCreateParameters))
async def create_cluster(request: Request, sub: str, rg: str, ws: str, cluster: str):
    rid = cluster_path(sub, rg, ws, cluster)
    params = parse(ClusterCreateParameters, await json_body(request))
    return await run_in_threadpool(_create_cluster, request, rid, sub, rg, ws, cluster, params)


def _create_cluster(request: Request, rid: str, sub: str, rg: str, ws: str, cluster: str, params: ClusterCreateParameters) -> JSONResponse:
    svc = services(request)
    workspace = require(svc, ids.workspace_id(sub, rg, ws), "workspace")
    props = params.properties.to_wire()
    record = new_record(rid, "clusters", cluster, workspace.id, props)
    record.internal = {"uuid": uuid.uuid4().hex, "target": target_nodes(props["scaleSettings"]), "allocationTime": utcnow()}
    setup = props.get("nodeSetup", {}).get("setupTask")
    if setup is not None:
        setup["stdOutErrPathSuffix"] = f"{sub}/{rg}/workspaces/{ws}/clusters/{cluster}/{record.internal['uuid']}"
    try:
        record = svc.store.create(record)
    except Conflict:
        raise ApiError.conflict(f"The cluster '{cluster}' already exists; change it with an update (PATCH).") from None
    try:
        svc.engine.schedule("cluster_controller", {"clusterId": rid}, controller_instance(record))
    except Exception:
        # a cluster without its controller would never get nodes, and the client's retry would get a 409:
        # take it back, so that the retry creates it (and its controller) anew
        log.exception("starting the controller of %s failed; the cluster is not created", rid)
        svc.store.delete_tree(rid)
        raise ApiError(503, "ServiceUnavailable", "The cluster's controller could not be started; retry the request.") from None
    return JSONResponse(_render(request, record))


@router.patch(CLUSTER, openapi_extra=openapi.body(ClusterUpdateParameters))
async def update_cluster(request: Request, sub: str, rg: str, ws: str, cluster: str):
    rid = cluster_path(sub, rg, ws, cluster)
    params = parse(ClusterUpdateParameters, await json_body(request))
    return await run_in_threadpool(_update_cluster, request, rid, params)


def _update_cluster(request: Request, rid: str, params: ClusterUpdateParameters) -> JSONResponse:
    svc = services(request)
    require(svc, rid, "cluster")
    scale = params.properties.scale_settings.to_wire()

    def rescale(r):
        r.properties["scaleSettings"] = scale
        r.internal["allocationTime"] = utcnow()
        return r

    record = svc.store.mutate(rid, rescale)
    wake_cluster(svc, record)
    return JSONResponse(_render(request, record))


def _set_paused(request: Request, rid: str, paused: bool):
    svc = services(request)
    require(svc, rid, "cluster")

    def flag(r):
        r.internal["paused"] = paused
        return r

    record = svc.store.mutate(rid, flag)
    wake_cluster(svc, record)
    return JSONResponse(_render(request, record))


@router.post(CLUSTER + "/pause")
def pause_cluster(request: Request, sub: str, rg: str, ws: str, cluster: str):
    """Ours, beyond the 2018-05-01 contract: queued jobs stay queued; running ones go on."""
    return _set_paused(request, cluster_path(sub, rg, ws, cluster), True)


@router.post(CLUSTER + "/resume")
def resume_cluster(request: Request, sub: str, rg: str, ws: str, cluster: str):
    return _set_paused(request, cluster_path(sub, rg, ws, cluster), False)


@router.post(CLUSTER + "/enrollmentToken", openapi_extra=openapi.body(EnrollmentTokenParameters, required=False))
async def enrollment_token(request: Request, sub: str, rg: str, ws: str, cluster: str):
    """Ours: the attached cluster's enrollment token, which machines exchange for a node of their own
    (`batchai node join`); `{"rotate": true}` voids every token given before (joined nodes stay)."""
    rid = cluster_path(sub, rg, ws, cluster)
    rotate = parse(EnrollmentTokenParameters, await json_body(request, required=False)).rotate
    return await run_in_threadpool(_enrollment_token, request, rid, rotate)


def _enrollment_token(request: Request, rid: str, rotate: bool) -> JSONResponse:
    svc = services(request)
    record = require(svc, rid, "cluster")
    if not attached(record):
        raise ApiError.conflict("Only an attached cluster (created with properties.attached) has an enrollment token.", target="attached")
    if rotate:

        def bump(r):
            r.internal["enrollGeneration"] = r.internal.get("enrollGeneration", 0) + 1
            return r

        record = svc.store.mutate(rid, bump) or record
    token = node_identity.enrollment_token(node_identity.node_key(svc.store), rid, record.internal.get("enrollGeneration", 0))
    return JSONResponse({"token": token})


@router.post(CLUSTER + "/nodes/{node}/remove")
def remove_node(request: Request, sub: str, rg: str, ws: str, cluster: str, node: str):
    """Ours: a node leaves the cluster for good; its credential is refused from now on, its job's tasks
    there are void (the job retries elsewhere, within its attempts)."""
    svc = services(request)
    record = require(svc, cluster_path(sub, rg, ws, cluster), "cluster")
    target = next((n for n in svc.store.nodes(record.id) if n.name == node), None)
    if target is None:
        raise ApiError.not_found(f"The cluster has no node '{node}'.", target="node")
    if target.machine != JOINED:
        raise ApiError.conflict("Only a node that joined (batchai node join) is removed this way; size the others.", target="node")
    node_protocol.remove_node(svc, target)
    wake_cluster(svc, record)
    return JSONResponse({"node": node, "removed": True}, status_code=202)


@router.post(CLUSTER + "/nodes/{node}/evict")
def evict_node(request: Request, sub: str, rg: str, ws: str, cluster: str, node: str):
    """Ours: simulate the platform taking a low-priority node back (409 where the compute cannot)."""
    svc = services(request)
    record = require(svc, cluster_path(sub, rg, ws, cluster), "cluster")
    if record.properties.get("vmPriority", "dedicated") != "lowpriority":
        raise ApiError.conflict("Only nodes of a low-priority cluster can be evicted.", target="vmPriority")
    target = next((n for n in svc.store.nodes(record.id) if n.name == node), None)
    if target is None:
        raise ApiError.not_found(f"The cluster has no node '{node}'.", target="node")
    try:
        svc.compute.evict(target.handle())
    except Unsupported as exc:
        raise ApiError.conflict(f"The cluster's nodes cannot be evicted here: {exc}", target="node") from None
    wake_cluster(svc, record)
    return JSONResponse({"node": node, "evicted": True}, status_code=202)


@router.get(CLUSTER)
def get_cluster(request: Request, sub: str, rg: str, ws: str, cluster: str):
    return _render(request, require(services(request), cluster_path(sub, rg, ws, cluster), "cluster"))


@router.delete(CLUSTER)
def delete_cluster(request: Request, sub: str, rg: str, ws: str, cluster: str):
    svc = services(request)
    record = require(svc, cluster_path(sub, rg, ws, cluster), "cluster")
    return begin_delete(request, record, workspace_location(svc, ids.workspace_id(sub, rg, ws)))


@router.get(WS + "/clusters")
def list_clusters(request: Request, sub: str, rg: str, ws: str):
    svc = services(request)
    rid = workspace_path(sub, rg, ws)
    require(svc, rid, "workspace")
    return page_records(
        request, lambda after, n: svc.store.children(rid, "clusters", after_seq=after, limit=n), lambda r: _render(request, r)
    )


def remote_login(nodes) -> list[dict]:
    """Nodes run no SSH server: the address and port are the node agent's exec service, where
    `batchai cluster node exec` logs in with a ticket from `.../nodes/{node}/execSession` (0 until the
    agent has registered). Ours, beyond the 2018-05-01 contract: `gpus`, each node's GPUs as its agent found them."""
    return [
        {"nodeId": n.name, "ipAddress": n.address or "127.0.0.1", "port": n.exec_port or 0, **({"gpus": n.gpu_list()} if n.gpus else {})}
        for n in nodes
    ]


def exec_grant(body: dict) -> dict:
    """The grant of an exec ticket for an execSession body (ExecSessionParameters)."""
    params = parse(ExecSessionParameters, body)
    if params.forward is not None:
        return {"kind": "forward", "host": params.forward.host, "port": params.forward.port}
    return {"kind": "exec", "command": params.command}


def exec_session(svc: Services, nodes: list, node: str, grant: dict) -> JSONResponse:
    """A ticket for `grant` on the node named `node` (of `nodes`), and where its agent listens."""
    target = next((n for n in nodes if n.name == node), None)
    if target is None:
        raise ApiError.not_found(f"No node '{node}' here.", target="node")
    if not target.exec_port:
        raise ApiError.conflict(f"The node '{node}' has not registered its agent yet; retry in a moment.", target="node")
    credential = node_identity.node_credential(node_identity.node_key(svc.store), target.id)
    ticket, expires = exec_tickets.issue(credential, target.id, grant)
    return JSONResponse(
        {
            "nodeId": target.name,
            "ipAddress": target.address or "127.0.0.1",
            "port": target.exec_port,
            "ticket": ticket,
            "expiresAt": datetime.fromtimestamp(expires, UTC).isoformat().replace("+00:00", "Z"),
        }
    )


@router.post(CLUSTER + "/nodes/{node}/execSession", openapi_extra=openapi.body(ExecSessionParameters, required=False))
async def cluster_exec_session(request: Request, sub: str, rg: str, ws: str, cluster: str, node: str):
    """Ours: a short-lived ticket that lets the caller run a command or a shell on the node, or forward
    a port from it, through the node agent (`batchai cluster node exec`; batchai/exec_tickets.py)."""
    rid = cluster_path(sub, rg, ws, cluster)
    grant = exec_grant(await json_body(request, required=False))
    svc = services(request)

    def session():
        require(svc, rid, "cluster")
        return exec_session(svc, svc.store.nodes(rid), node, grant)

    return await run_in_threadpool(session)


@router.post(CLUSTER + "/listRemoteLoginInformation")
@router.get(CLUSTER + "/listRemoteLoginInformation")
def cluster_remote_login(request: Request, sub: str, rg: str, ws: str, cluster: str):
    svc = services(request)
    record = require(svc, cluster_path(sub, rg, ws, cluster), "cluster")
    return paged(request, remote_login(svc.store.nodes(record.id)), None)


@router.post(CLUSTER + "/listNodeSetupFiles")
@router.get(CLUSTER + "/listNodeSetupFiles")
def node_setup_files(request: Request, sub: str, rg: str, ws: str, cluster: str):
    """Ours: the node setup task's log files (`{prefix}/{stdOutErrPathSuffix}/<node>/stdout.txt`, ...), as
    listOutputFiles lists a job's: `directory`, `linkexpiryinminutes`, paged, signed download URLs.
    Files a joined machine wrote on its own disk are not here."""
    svc = services(request)
    record = require(svc, cluster_path(sub, rg, ws, cluster), "cluster")
    minutes = expiry_minutes(request)
    setup = (record.properties.get("nodeSetup") or {}).get("setupTask")
    if not setup:
        return paged(request, [], None)
    env = {"AZ_BATCHAI_MOUNT_ROOT": str(svc.settings.cluster_mount_root(record.internal["uuid"]))}
    prefix = expand(setup["stdOutErrPathPrefix"], env).rstrip("/")
    return list_directory(request, record, Path(f"{prefix}/{setup['stdOutErrPathSuffix']}"), minutes)


def file_server_path(sub, rg, ws, fs) -> str:
    validate_name("file server", fs, "fileServerName")
    return ids.child_id(workspace_path(sub, rg, ws), "fileServers", fs)


@router.put(FILE_SERVER, openapi_extra=openapi.body(FileServerCreateParameters))
async def create_file_server(request: Request, sub: str, rg: str, ws: str, fs: str):
    rid = file_server_path(sub, rg, ws, fs)
    params = parse(FileServerCreateParameters, await json_body(request))
    return await run_in_threadpool(_create_file_server, services(request), rid, sub, rg, ws, fs, params)


def _create_file_server(svc: Services, rid: str, sub: str, rg: str, ws: str, fs: str, params: FileServerCreateParameters) -> JSONResponse:
    workspace = require(svc, ids.workspace_id(sub, rg, ws), "workspace")
    props = params.properties.to_wire()
    record = new_record(rid, "fileServers", fs, workspace.id, props)
    record.internal = {"uuid": uuid.uuid4().hex}
    props = record.properties
    if svc.file_servers is not None:  # an NFS server VM, made by an orchestration: mountSettings once it serves
        props["provisioningState"] = "creating"
    else:
        export = svc.settings.data_dir / "fileservers" / record.internal["uuid"]
        export.mkdir(parents=True, exist_ok=True)
        props["mountSettings"] = {"mountPoint": str(export), "fileServerPublicIP": "127.0.0.1", "fileServerInternalIP": "127.0.0.1"}
    try:
        record = svc.store.create(record)
    except Conflict:
        raise ApiError.conflict(f"The file server '{fs}' already exists.") from None
    if svc.file_servers is not None:
        svc.engine.schedule("file_server_creation", {"fileServerId": record.id}, f"fs-create-{record.internal['uuid']}")
    return JSONResponse(render.file_server(record), status_code=201 if svc.file_servers is not None else 200)


@router.get(FILE_SERVER)
def get_file_server(request: Request, sub: str, rg: str, ws: str, fs: str):
    return render.file_server(require(services(request), file_server_path(sub, rg, ws, fs), "file server"))


@router.delete(FILE_SERVER)
def delete_file_server(request: Request, sub: str, rg: str, ws: str, fs: str):
    svc = services(request)
    record = require(svc, file_server_path(sub, rg, ws, fs), "file server")
    return begin_delete(request, record, workspace_location(svc, ids.workspace_id(sub, rg, ws)))


@router.get(WS + "/fileServers")
def list_file_servers(request: Request, sub: str, rg: str, ws: str):
    svc = services(request)
    rid = workspace_path(sub, rg, ws)
    require(svc, rid, "workspace")
    return page_records(request, lambda after, n: svc.store.children(rid, "fileServers", after_seq=after, limit=n), render.file_server)
