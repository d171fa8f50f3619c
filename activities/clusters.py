"""Cluster activities: bring nodes up to the cluster's target and tear them down."""

from __future__ import annotations

import uuid

from batchai.ports import NodeRecord, Record


def target_node_count(cluster: Record) -> int:
    scale = cluster.properties.get("scaleSettings") or {}
    if "manual" in scale:
        return scale["manual"].get("targetNodeCount", 0)
    if "autoScale" in scale:
        return scale["autoScale"].get("initialNodeCount", 0)
    return 0


def file_server_export(svc):
    """file server id -> the directory it exports (its mount point), for the compute port."""
    def export(file_server_id: str) -> str | None:
        record = svc.store.get(file_server_id)
        return (record.properties.get("mountSettings") or {}).get("mountPoint") if record else None
    return export


def provision_cluster(svc, inp: dict) -> dict:
    """Mount the cluster's volumes, then start node agents until the cluster has its target
    count; replaces dead agents too."""
    cluster = svc.store.get(inp["clusterId"])
    if cluster is None:
        return {"nodes": 0}
    volumes = (cluster.properties.get("nodeSetup") or {}).get("mountVolumes")
    svc.compute.mount(str(svc.settings.cluster_mount_root(cluster.internal["uuid"])), volumes, file_server_export(svc))
    existing = {n.name: n for n in svc.store.nodes(cluster.id)}
    target = target_node_count(cluster)
    for i in range(target):
        name = f"node-{i}"
        node = existing.get(name)
        if node is not None and node.state != "unusable" and svc.compute.is_alive({"id": node.id, "pid": node.pid}):
            continue
        node_id = f"{cluster.internal['uuid'][:8]}-{i}-{uuid.uuid4().hex[:6]}"
        if node is not None:
            svc.store.update_node(node.id, state="leaving", job=None)
            svc.compute.stop_node({"id": node.id, "pid": node.pid}, grace=1.0)
            svc.store.delete_node(node.id)
        started = svc.compute.start_node(node_id=node_id, cluster_id=cluster.id, cluster_key=cluster.internal["uuid"], name=name)
        svc.store.put_node(NodeRecord(
            id=node_id, cluster=cluster.id, name=name, state="starting",
            pid=started["pid"], address=started["address"], root=started["root"],
        ))
    return {"nodes": target}


def stop_cluster_nodes(svc, cluster_id: str) -> None:
    for node in svc.store.delete_nodes(cluster_id):
        svc.compute.stop_node({"id": node.id, "pid": node.pid}, grace=2.0)
