"""The Store on Azure Cosmos DB (NoSQL API): the control plane's state when it runs as Functions.

Containers and partition keys, chosen for the queries the control plane runs most:
- `resources` by workspace key: a workspace's hierarchy, a cluster's job queue (job_summaries on
  every scheduling pass) and a workspace's delete_tree are single-partition queries; only listing
  workspaces by subscription or resource group fans out.
- `nodes`, `tasks`, `operations`, `settings` by item id: their hot path is by id (heartbeats read and
  update a node and its tasks; operations are polled by id), so every one is a point operation.
  Their lists (a cluster's nodes, a job's tasks) are small and stay within one physical partition.

Cosmos item ids may not contain '/', so every item id is the SHA-256 of the original id (of the
lower-cased ARM id for resources) and the original is kept in `ref`.
Every read-modify-write is a compare-and-set on the item's etag, retried on 412, so a mutation's
change function always sees the current record, as in the SQLite store (it may run once per lost
race: it must only change the record it is given). A gang spans partitions, so no transactional
batch can take it (nor can the stand-in run one): a claim conditionally replaces each node and
gives back the ones it took when one is gone. Other readers may glimpse a claim half-taken.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any

from azure.core import MatchConditions
from azure.cosmos import CosmosClient, PartitionKey
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from batchai import ids
from batchai.adapters.record_fields import cluster_of, scheduling_of, state_of
from batchai.lifecycle import utcnow
from batchai.ports import REPORTABLE, Conflict, JobSummary, Launch, Mutation, NodeRecord, Record, TaskRecord
from batchai.scheduling import head_limits

CONTAINERS = {  # name -> partition key
    "resources": "/pk",
    "nodes": "/id",
    "tasks": "/id",
    "operations": "/id",
    "settings": "/id",
    "tokens": "/id",
    "audit": "/id",
}
_NODE_FIELDS = [f.name for f in fields(NodeRecord)]
_TASK_FIELDS = [f.name for f in fields(TaskRecord)]
_WORKSPACE = re.compile(r"^/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\.batchai/workspaces/[^/]+")

Doc = dict[str, Any]


def item_id(ref: str) -> str:
    """A Cosmos-safe item id for any original id: ids may not hold '/', ARM ids are made of them."""
    return hashlib.sha256(ref.encode()).hexdigest()


_SUMMARY_SELECT = "c.ref, c.seq, c.parent, c.state, c.node_count, c.priority, c.max_wall_clock, c.start_time, c.gpus_per_node"


def _summary(row: Doc) -> JobSummary:
    return JobSummary._make(row.get("ref" if f == "id" else f) for f in JobSummary._fields)


def _partition(key: str) -> str:
    """A resource's partition: the key of the workspace it is in (itself when it is not in one)."""
    match = _WORKSPACE.match(key)
    return match.group(0) if match else key


def _scope(key: str) -> str | None:
    """The one partition holding `key` and everything under it; None above a workspace (a fan-out)."""
    return _partition(key) if _WORKSPACE.match(key) else None


def _in(name: str, values: Iterable[Any]) -> tuple[str, dict[str, Any]]:
    """A parameterized `c.<name> IN (...)` clause (false for no values, as SQL's empty IN)."""
    params = {f"@{name}{i}": v for i, v in enumerate(values)}
    return (f"c.{name} IN ({', '.join(params)})" if params else "false"), params


# -- documents <-> records ---------------------------------------------------------------------
def _resource_doc(record: Record) -> Doc:
    key = ids.key(record.id)
    node_count, priority, max_wall_clock, start_time, gpus_per_node = scheduling_of(record)
    return {
        "id": item_id(key),
        "pk": _partition(key),
        "key": key,
        "ref": record.id,
        "type": record.type,
        "name": record.name,
        "parent": ids.key(record.parent) if record.parent else None,
        "seq": record.seq,
        "body": record.body,
        "internal": record.internal,
        "state": state_of(record),
        "cluster": cluster_of(record),
        "node_count": node_count,
        "priority": priority,
        "max_wall_clock": max_wall_clock,
        "start_time": start_time,
        "gpus_per_node": gpus_per_node,
    }


def _record(doc: Doc) -> Record:
    return Record(
        id=doc["ref"],
        type=doc["type"],
        name=doc["name"],
        parent=doc["parent"],
        body=doc["body"],
        internal=doc["internal"],
        etag=doc["_etag"],
        seq=doc["seq"],
    )


def _node_doc(node: NodeRecord) -> Doc:
    # share_jobs: what a query for a job's shared nodes matches (shares itself is JSON text)
    return {**asdict(node), "id": item_id(node.id), "ref": node.id, "share_jobs": list(node.share_map())}


def _node(doc: Doc) -> NodeRecord:
    return NodeRecord(**{f: doc[f] for f in _NODE_FIELDS if f != "id" and f in doc}, id=doc["ref"])  # older docs lack newer fields


def _task_doc(task: TaskRecord, position: int) -> Doc:
    return {**asdict(task), "id": item_id(task.id), "ref": task.id, "job": ids.key(task.job), "position": position}


def _task(doc: Doc) -> TaskRecord:
    return TaskRecord(**{f: doc[f] for f in _TASK_FIELDS if f != "id"}, id=doc["ref"])


def _operation(doc: Doc) -> dict:
    return {"id": doc["ref"], **{k: doc[k] for k in ("kind", "resource", "status", "error", "created")}}


def _freed_of(job: str, now: float) -> Callable[[Doc], Doc | None]:
    """The change that frees a node of `job`, held whole or shared; None (no change) once it holds the node no more."""

    def free(doc: Doc) -> Doc | None:
        node = _node(doc)
        shares = node.share_map()
        if job in shares:
            del shares[job]
            node.shares = json.dumps(shares) if shares else None
        elif node.job == job:
            node.job = None
        else:
            return None
        if node.job is None and not shares:
            node.idle_since, node.state = now, "idle" if node.state == "running" else node.state
        return {**doc, **_node_doc(node)}

    return free


class CosmosStore:
    """The Store port on one Cosmos DB database; creates the database and its containers if missing, unless
    told they exist (`create=False`: a data-plane role cannot create them; infra/main.bicep does, as CONTAINERS)."""

    def __init__(self, client: CosmosClient, database: str = "batchai", *, create: bool = True):
        if create:
            db = client.create_database_if_not_exists(database)
            self._c = {name: db.create_container_if_not_exists(name, partition_key=PartitionKey(path)) for name, path in CONTAINERS.items()}
        else:
            db = client.get_database_client(database)
            self._c = {name: db.get_container_client(name) for name in CONTAINERS}
        self._create_counter("resources")
        self._create_counter("tasks")
        self._create_counter("audit")

    @classmethod
    def connect(cls, endpoint: str, key: str, database: str = "batchai", **options: Any) -> CosmosStore:
        return cls(CosmosClient(endpoint, credential=key, **options), database)

    @classmethod
    def connect_with(cls, endpoint: str, credential: Any, database: str = "batchai", **options: Any) -> CosmosStore:
        """With a token credential (a managed identity holding the built-in data contributor role): the
        database and containers must exist."""
        return cls(CosmosClient(endpoint, credential=credential, **options), database, create=False)

    # -- plumbing ---------------------------------------------------------------------------
    def _read(self, container: str, doc_id: str, pk: str) -> Doc | None:
        try:
            return self._c[container].read_item(doc_id, partition_key=pk)
        except CosmosResourceNotFoundError:
            return None

    def _query(self, container: str, sql: str, params: dict[str, Any], pk: str | None = None) -> list[Doc]:
        scope: dict[str, Any] = {"partition_key": pk} if pk is not None else {"enable_cross_partition_query": True}
        parameters = [{"name": n, "value": v} for n, v in params.items()]
        return list(self._c[container].query_items(sql, parameters=parameters, **scope))

    def _resources(self, where: str, params: dict[str, Any], pk: str | None, *, select: str = "*", order: str = "c.seq") -> list[Doc]:
        """Resources matching `where`, in one partition when `pk` is known. The partition is also a
        condition, as the stand-in requires of a single-partition query (and then honours it)."""
        if pk is not None:
            where, params = f"c.pk = @pk AND ({where})", {**params, "@pk": pk}
        return self._query("resources", f"SELECT {select} FROM c WHERE {where} ORDER BY {order}", params, pk)

    def _cas(self, container: str, doc_id: str, pk: str, change: Callable[[Doc], Doc | None]) -> Doc | None:
        """Read, change, replace if nobody wrote in between; again on a lost race. None: missing or refused."""
        while True:
            doc = self._read(container, doc_id, pk)
            if doc is None:
                return None
            etag = doc["_etag"]
            changed = change(doc)
            if changed is None:
                return None
            try:
                return self._c[container].replace_item(doc_id, changed, etag=etag, match_condition=MatchConditions.IfNotModified)
            except CosmosAccessConditionFailedError:
                continue

    def _delete(self, container: str, doc_id: str, pk: str) -> None:
        try:
            self._c[container].delete_item(doc_id, partition_key=pk)
        except CosmosResourceNotFoundError:
            pass

    def _create_counter(self, name: str) -> None:
        try:
            self._c["settings"].create_item({"id": item_id(f"counter:{name}"), "ref": f"counter:{name}", "count": 0})
        except CosmosResourceExistsError:
            pass

    def _advance(self, name: str, by: int = 1) -> int:
        """Atomically add `by` to a counter (a server-side increment: no retry loop), return the new count."""
        doc_id = item_id(f"counter:{name}")
        doc = self._c["settings"].patch_item(doc_id, partition_key=doc_id, patch_operations=[{"op": "incr", "path": "/count", "value": by}])
        return doc["count"]

    # -- resources --------------------------------------------------------------------------
    def create(self, record: Record) -> Record:
        return self.create_many([record])[0]

    def create_many(self, records: Sequence[Record]) -> list[Record]:
        """In turn; on a conflict the ones created are deleted again (a crash between leaves them: the
        caller's id, taken, is what tells it so)."""
        last = self._advance("resources", len(records)) if records else 0
        created: list[Record] = []
        for seq, record in enumerate(records, start=last - len(records) + 1):
            record.seq = seq
            try:
                doc = self._c["resources"].create_item(_resource_doc(record))
            except CosmosResourceExistsError:
                for done in created:
                    key = ids.key(done.id)
                    self._delete("resources", item_id(key), _partition(key))
                raise Conflict(record.id) from None
            record.etag = doc["_etag"]
            created.append(record)
        return created

    def get(self, resource_id: str) -> Record | None:
        key = ids.key(resource_id)
        doc = self._read("resources", item_id(key), _partition(key))
        return _record(doc) if doc else None

    def _page(self, where: str, params: dict[str, Any], pk: str | None, after_seq: int, limit: int | None) -> list[Record]:
        top = "" if limit is None else "TOP @limit "
        params = {**params, "@after": after_seq, **({} if limit is None else {"@limit": limit})}
        return [_record(d) for d in self._resources(f"{where} AND c.seq > @after", params, pk, select=f"{top}*")]

    def children(self, parent_id: str, type: str, *, after_seq: int = 0, limit: int | None = None) -> list[Record]:
        parent = ids.key(parent_id)
        return self._page("c.parent = @parent AND c.type = @type", {"@parent": parent, "@type": type}, _scope(parent), after_seq, limit)

    def workspaces(self, prefix: str, *, after_seq: int = 0, limit: int | None = None) -> list[Record]:
        return self._page(
            "c.type = 'workspaces' AND STARTSWITH(c.key, @prefix)", {"@prefix": ids.key(prefix) + "/"}, None, after_seq, limit
        )

    def mutate(self, resource_id: str, change: Mutation) -> Record | None:
        key = ids.key(resource_id)

        def apply(doc: Doc) -> Doc | None:
            updated = change(_record(doc))
            return None if updated is None else {**_resource_doc(updated), "seq": doc["seq"]}

        doc = self._cas("resources", item_id(key), _partition(key), apply)
        return _record(doc) if doc else None

    def delete_tree(self, resource_id: str) -> list[Record]:
        key = ids.key(resource_id)
        docs = self._resources(
            "c.key = @key OR STARTSWITH(c.key, @prefix)", {"@key": key, "@prefix": key + "/"}, _scope(key), order="c.seq DESC"
        )
        for doc in docs:
            self._delete("resources", doc["id"], doc["pk"])
        keys = [d["key"] for d in docs]
        self._forget_jobs(keys)
        for node in self._query("nodes", "SELECT * FROM c WHERE ARRAY_CONTAINS(@keys, c.cluster)", {"@keys": keys}):
            self._delete("nodes", node["id"], node["id"])
        return [_record(d) for d in docs]

    def _forget_jobs(self, keys: list[str]) -> None:
        """Deleted jobs' tasks go, and the nodes they ran on are free again."""
        for task in self._query("tasks", "SELECT c.id FROM c WHERE ARRAY_CONTAINS(@keys, c.job)", {"@keys": keys}):
            self._delete("tasks", task["id"], task["id"])
        for node in self._query(
            "nodes", "SELECT c.id, c.job, c.share_jobs FROM c WHERE ARRAY_CONTAINS(@keys, c.job) OR c.shares != null", {"@keys": keys}
        ):
            for job in {node["job"], *(node.get("share_jobs") or [])} & set(keys):
                # freed now: auto scale counts idleness from here
                self._cas("nodes", node["id"], node["id"], _freed_of(job, time.time()))

    def jobs(self, *, states: Iterable[str], cluster: str | None = None) -> list[Record]:
        clause, params = _in("state", states)
        where, pk = f"c.type = 'jobs' AND {clause}", None
        if cluster is not None:
            where, pk = where + " AND c.cluster = @cluster", _partition(ids.key(cluster))
            params["@cluster"] = ids.key(cluster)
        return [_record(d) for d in self._resources(where, params, pk)]

    def job_summaries(self, cluster: str, states: Iterable[str]) -> list[JobSummary]:
        """What scheduling needs of a cluster's jobs, in submission order: one single-partition query, no bodies."""
        clause, params = _in("state", states)
        cluster_key = ids.key(cluster)
        rows = self._resources(
            f"c.type = 'jobs' AND c.cluster = @cluster AND {clause}",
            {**params, "@cluster": cluster_key},
            _partition(cluster_key),
            select=_SUMMARY_SELECT,
        )
        return [_summary(row) for row in rows]

    def job_counts(self, parent: str) -> dict[str, int]:
        key = ids.key(parent)
        rows = self._resources("c.parent = @parent AND c.type = 'jobs'", {"@parent": key}, _scope(key), select="c.state")
        return dict(Counter(row["state"] for row in rows))

    def queue_head(self, cluster: str, depth: int) -> list[JobSummary]:
        # Cosmos has GROUP BY, its stand-in does not: the groups come from a three-field projection.
        cluster_key = ids.key(cluster)
        pk = _partition(cluster_key)
        queued = "c.type = 'jobs' AND c.cluster = @cluster AND c.state = 'queued'"
        groups: dict[tuple[str | None, str], list[int]] = {}
        for row in self._resources(queued, {"@cluster": cluster_key}, pk, select="c.priority, c.parent, c.seq"):
            group = groups.setdefault((row.get("priority"), row["parent"]), [row["seq"], 0])  # in seq order: the first is the oldest
            group[1] += 1
        rows = []
        for priority, parent, limit in head_limits(((p, e, oldest, size) for (p, e), (oldest, size) in groups.items()), depth):
            rows += self._resources(
                f"{queued} AND c.priority = @priority AND c.parent = @parent",
                {"@cluster": cluster_key, "@priority": priority, "@parent": parent},
                pk,
                select=f"TOP {int(limit)} {_SUMMARY_SELECT}",
            )
        rows.sort(key=lambda row: row["seq"])
        return [_summary(row) for row in rows]

    # -- nodes ------------------------------------------------------------------------------
    def put_node(self, node: NodeRecord) -> None:
        node.cluster = ids.key(node.cluster)
        self._c["nodes"].upsert_item(_node_doc(node))

    def get_node(self, node_id: str) -> NodeRecord | None:
        doc = self._read("nodes", item_id(node_id), item_id(node_id))
        return _node(doc) if doc else None

    def nodes(self, cluster: str | None = None) -> list[NodeRecord]:
        if cluster is None:
            docs = self._query("nodes", "SELECT * FROM c", {})
        else:
            docs = self._query("nodes", "SELECT * FROM c WHERE c.cluster = @cluster", {"@cluster": ids.key(cluster)})
        return sorted((_node(d) for d in docs), key=lambda n: (n.cluster, n.name))

    def placeable_nodes(self, cluster: str) -> list[NodeRecord]:
        # filtered here: the Functions app, which runs on Cosmos, schedules in its controller's passes, which read all nodes
        return [n for n in self.nodes(cluster) if n.may_take_jobs()]

    def update_node(self, node_id: str, **changes: Any) -> NodeRecord | None:
        unknown = set(changes) - set(_NODE_FIELDS)
        assert not unknown, unknown
        if not changes:
            return self.get_node(node_id)
        doc = self._cas("nodes", item_id(node_id), item_id(node_id), lambda d: {**d, **changes})
        return _node(doc) if doc else None

    def touch_nodes(self, seen: Mapping[str, float]) -> None:
        for node_id, when in seen.items():

            def later(doc: Doc, when: float = when) -> Doc | None:
                return {**doc, "last_seen": when} if when > (doc.get("last_seen") or 0.0) else None

            self._cas("nodes", item_id(node_id), item_id(node_id), later)

    def claim_nodes(self, cluster: str, job: str, node_ids: list[str]) -> bool:
        """Reserve all of `node_ids` for `job`, or none: each node is taken by a conditional replace,
        and a failed one gives back those already taken (no transactions to lean on)."""
        job_key, cluster_key = ids.key(job), ids.key(cluster)
        if self._query("nodes", "SELECT TOP 1 c.id FROM c WHERE c.job = @job", {"@job": job_key}):
            return False  # a job holds one gang at a time

        def take(doc: Doc) -> Doc | None:
            free = doc["cluster"] == cluster_key and doc["state"] == "idle" and doc["job"] is None and not doc.get("shares")
            return {**doc, "state": "running", "job": job_key} if free else None

        return self._take_each(node_ids, lambda node_id: take, job_key)

    def _take_each(self, node_ids: Iterable[str], change_for: Callable[[str], Callable[[Doc], Doc | None]], job_key: str) -> bool:
        """Each node changed by its conditional replace, or, when one refuses, those done given back."""
        taken: list[str] = []
        for node_id in node_ids:
            if self._cas("nodes", item_id(node_id), item_id(node_id), change_for(node_id)) is None:
                for done in taken:
                    self._cas("nodes", item_id(done), item_id(done), _freed_of(job_key, time.time()))
                return False
            taken.append(node_id)
        return True

    def _claim_gpus(self, cluster: str, job: str, gpus: dict[str, list[str]]) -> bool:
        """Each node's GPUs of `gpus`, shared with the jobs already there, or nothing."""
        job_key, cluster_key = ids.key(job), ids.key(cluster)
        if self._query("nodes", "SELECT TOP 1 c.id FROM c WHERE c.job = @job OR ARRAY_CONTAINS(c.share_jobs, @job)", {"@job": job_key}):
            return False

        def share(node_id: str) -> Callable[[Doc], Doc | None]:
            def take(doc: Doc) -> Doc | None:
                node = _node(doc)
                if doc["cluster"] != cluster_key or node.job is not None or node.state not in ("idle", "running"):
                    return None
                if (node.state == "running" and not node.shares) or not set(gpus[node_id]) <= set(node.free_gpus()):
                    return None
                node.shares, node.state = json.dumps({**node.share_map(), job_key: gpus[node_id]}), "running"
                return {**doc, **_node_doc(node)}

            return take

        return self._take_each(gpus, share, job_key)

    def start_jobs(self, cluster: str, launches: Sequence[Launch]) -> list[Record | None]:
        return [self._start_job(cluster, launch) for launch in launches]

    def _start_job(self, cluster: str, launch: Launch) -> Record | None:
        """Claim, change, put tasks, one after another (no transaction spans containers): a refused change
        gives the claim back; a crash before the tasks are put leaves a running job without tasks, which
        its lifecycle requeues, and a claim the next scheduling pass frees."""
        claimed = (
            self.claim_nodes(cluster, launch.job, launch.node_ids)
            if launch.gpus is None
            else self._claim_gpus(cluster, launch.job, launch.gpus)
        )
        if not claimed:
            return None
        started = self.mutate(launch.job, launch.change)
        if started is None:
            self.release_nodes(launch.job)
            return None
        self.put_tasks(launch.tasks)
        return started

    def release_nodes(self, job: str) -> list[str]:
        job_key = ids.key(job)
        held = self._query("nodes", "SELECT c.id, c.ref FROM c WHERE c.job = @job OR ARRAY_CONTAINS(c.share_jobs, @job)", {"@job": job_key})
        for node in held:
            self._cas("nodes", node["id"], node["id"], _freed_of(job_key, time.time()))
        return [n["ref"] for n in held]

    def end_job(
        self,
        job: str,
        change: Mutation,
        *,
        ending: Sequence[str] = (),
        killing: Sequence[str] = (),
        finished: tuple[str, dict] | None = None,
    ) -> tuple[Record | None, list[str]]:
        if finished is not None and not self.update_task(finished[0], only_if_state=REPORTABLE, **finished[1]):
            return None, []
        ended = self.mutate(job, change)
        if ended is None:
            return None, []
        now = utcnow()
        for task_id in ending:
            self.update_task(task_id, only_if_state=["pending", "running"], state="finished", error="terminated", end_time=now)
        for task_id in killing:
            self.update_task(task_id, only_if_state=["running"], state="killing")
        return ended, self.release_nodes(job)

    def delete_node(self, node_id: str) -> None:
        self._delete("nodes", item_id(node_id), item_id(node_id))

    def delete_nodes(self, cluster: str) -> list[NodeRecord]:
        docs = self._query("nodes", "SELECT * FROM c WHERE c.cluster = @cluster", {"@cluster": ids.key(cluster)})
        for doc in docs:
            self._delete("nodes", doc["id"], doc["id"])
        return [_node(d) for d in docs]

    # -- tasks ------------------------------------------------------------------------------
    def put_tasks(self, tasks: list[TaskRecord]) -> None:
        """Numbered from one counter increment, so task lists come back in the order they were put."""
        if not tasks:
            return
        last = self._advance("tasks", len(tasks))
        for position, task in enumerate(tasks, start=last - len(tasks) + 1):
            self._c["tasks"].create_item(_task_doc(task, position))

    def tasks(self, *, job: str | None = None, node: str | None = None, states: Iterable[str] | None = None) -> list[TaskRecord]:
        where, params = ["true"], {}
        if job is not None:
            where.append("c.job = @job")
            params["@job"] = ids.key(job)
        if node is not None:
            where.append("c.node = @node")
            params["@node"] = node
        if states is not None:
            clause, state_params = _in("state", states)
            where.append(clause)
            params.update(state_params)
        docs = self._query("tasks", f"SELECT * FROM c WHERE {' AND '.join(where)} ORDER BY c.position", params)
        return [_task(d) for d in docs]

    def get_task(self, task_id: str) -> TaskRecord | None:
        doc = self._read("tasks", item_id(task_id), item_id(task_id))
        return _task(doc) if doc else None

    def update_task(self, task_id: str, *, only_if_state: Iterable[str] | None = None, **changes: Any) -> bool:
        unknown = set(changes) - set(_TASK_FIELDS)
        assert not unknown and changes, unknown
        allowed = None if only_if_state is None else set(only_if_state)

        def apply(doc: Doc) -> Doc | None:
            return None if allowed is not None and doc["state"] not in allowed else {**doc, **changes}

        return self._cas("tasks", item_id(task_id), item_id(task_id), apply) is not None

    # -- operations -------------------------------------------------------------------------
    def create_operation(self, op_id: str, kind: str, resource_id: str) -> None:
        self._c["operations"].create_item(
            {
                "id": item_id(op_id),
                "ref": op_id,
                "kind": kind,
                "resource": resource_id,
                "status": "InProgress",
                "error": None,
                "created": time.time(),
            }
        )

    def get_operation(self, op_id: str) -> dict | None:
        doc = self._read("operations", item_id(op_id), item_id(op_id))
        return _operation(doc) if doc else None

    def operations(self, status: str) -> list[dict]:
        docs = self._query("operations", "SELECT * FROM c WHERE c.status = @status ORDER BY c.created", {"@status": status})
        return [_operation(d) for d in docs]

    def finish_operation(self, op_id: str, status: str, error: str | None = None) -> None:
        self._cas("operations", item_id(op_id), item_id(op_id), lambda d: {**d, "status": status, "error": error})

    # -- settings and flags -----------------------------------------------------------------
    def setting(self, name: str, default: Callable[[], str]) -> str:
        """The stored value; the first caller's default when there is none (a racing loser reads the winner's)."""
        doc_id = item_id(f"setting:{name}")
        doc = self._read("settings", doc_id, doc_id)
        if doc is not None:
            return doc["text"]
        value = default()
        try:
            self._c["settings"].create_item({"id": doc_id, "ref": f"setting:{name}", "text": value})
        except CosmosResourceExistsError:
            return self._c["settings"].read_item(doc_id, partition_key=doc_id)["text"]
        return value

    def set_flag(self, name: str) -> bool:
        """Raise a flag; true if it was down (so the caller is the one to act on it)."""
        try:
            self._c["settings"].create_item({"id": item_id(f"flag:{name}"), "ref": f"flag:{name}"})
        except CosmosResourceExistsError:
            return False
        return True

    def clear_flag(self, name: str) -> None:
        self._delete("settings", item_id(f"flag:{name}"), item_id(f"flag:{name}"))

    # -- tokens and the audit log -----------------------------------------------------------
    def put_token(self, token: dict) -> None:
        self._c["tokens"].upsert_item({**token, "id": token["id"]})

    def get_token(self, token_id: str) -> dict | None:
        doc = self._read("tokens", token_id, token_id)
        return _plain(doc) if doc else None

    def tokens(self) -> list[dict]:
        return [_plain(d) for d in self._query("tokens", "SELECT * FROM c ORDER BY c.created", {})]

    def revoke_token(self, token_id: str) -> dict | None:
        doc = self._cas("tokens", token_id, token_id, lambda d: {**d, "revoked": True})
        return _plain(doc) if doc else None

    def record_audit(self, entry: dict) -> None:
        seq = self._advance("audit")
        self._c["audit"].create_item({**entry, "id": f"a{seq}", "seq": seq, "rkey": ids.key(entry["resource"])})

    def audit_log(self, *, after_seq: int = 0, limit: int = 100, **filters: Any) -> list[dict]:
        where = ["c.seq > @after"]
        params: dict[str, Any] = {"@after": after_seq}
        for name in ("principal", "action", "result"):
            if filters.get(name) is not None:
                where.append(f"c.{name} = @{name}")
                params[f"@{name}"] = filters[name]
        if filters.get("resource"):
            where.append("(c.rkey = @rkey OR STARTSWITH(c.rkey, @rprefix))")
            params["@rkey"] = ids.key(filters["resource"])
            params["@rprefix"] = ids.key(filters["resource"]) + "/"
        if filters.get("since") is not None:
            where.append("c.ts >= @since")
            params["@since"] = filters["since"]
        if filters.get("until") is not None:
            where.append("c.ts < @until")
            params["@until"] = filters["until"]
        sql = f"SELECT TOP {int(limit)} * FROM c WHERE {' AND '.join(where)} ORDER BY c.seq"
        return [{k: v for k, v in _plain(d).items() if k not in ("rkey", "id")} for d in self._query("audit", sql, params)]


def _plain(doc: Doc) -> dict:
    """A document without Cosmos DB's system properties."""
    return {k: v for k, v in doc.items() if not k.startswith("_")}
