"""The Compute port's contract, run on every adapter: local agent processes, simulated nodes in memory,
and VM scale set instances (the real azure-mgmt-compute client against the fake ARM of tests/support).

Whatever a machine is, the control plane sees the same thing: `start_node` answers a handle's fields,
the handle alone (as the store keeps it, `NodeRecord.handle()`) finds the machine again, stopping is
idempotent, and an eviction takes a node away and is reported until the node is stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from batchai.adapters.local_compute import LocalCompute
from batchai.adapters.simulated_compute import SimulatedCompute
from batchai.adapters.sqlite_store import SqliteStore
from batchai.adapters.vmss_compute import VmssCompute
from batchai.ports import Compute, NodeRecord
from batchai.services import Services, Settings
from tests.support.fake_arm import RG, SUB, FakeArm, FakeCredential
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(60)

KEY = "3f1c2d4e-aaaa-bbbb-cccc-1234567890ab"
CLUSTER_ID = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.BatchAI/workspaces/ws/clusters/c1"
SPOT_CLUSTER = {
    "vmSize": "STANDARD_D1",
    "vmPriority": "lowpriority",
    "userAccountSettings": {"adminUserName": "u", "adminUserPassword": "pw"},
    "subnet": {"id": f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/virtualNetworks/v/subnets/s"},
}
HANDLE_FIELDS = {"id", "pid", "address", "root", "machine"}
UNKNOWN = {"id": "n-unknown", "pid": None, "root": None, "machine": None}


class Machines:
    """An adapter under test, and the nodes a test started on it: stopped at teardown, then the adapter closed."""

    def __init__(self, compute: Compute, store: SqliteStore):
        self.compute = compute
        self.store = store
        self.handles: list[dict] = []

    def start(self, name: str) -> dict:
        """Starts a node as the cluster controller does: the answer is stored, and its handle is what comes back."""
        node_id = f"n-{name}"
        started = self.compute.start_node(node_id=node_id, cluster_id=CLUSTER_ID, cluster_key=KEY, name=name)
        record = NodeRecord(
            id=node_id,
            cluster=CLUSTER_ID,
            name=name,
            state="starting",
            pid=started["pid"],
            address=started["address"],
            root=started["root"],
            machine=started["machine"],
        )
        self.store.put_node(record)
        self.handles.append(record.handle())
        return record.handle()

    def cleanup(self) -> None:
        for handle in self.handles:
            self.compute.stop_node(handle, grace=0.5)
        self.compute.close()


@pytest.fixture(params=["local", "simulated", "vmss"])
def machines(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Machines]:
    store = SqliteStore(tmp_path / "store.db")
    if request.param == "local":  # no control plane answers: the agents run and keep trying to reach it
        compute: Compute = LocalCompute(
            tmp_path / "data", control_plane_file=tmp_path / "nowhere.json", credential=lambda node_id: "t", heartbeat=0.2
        )
    elif request.param == "simulated":
        services = None
        compute = SimulatedCompute(lambda: services, heartbeat_seconds=60.0)
        services = Services(store=store, compute=compute, engine=None, settings=Settings(data_dir=tmp_path))
    else:
        compute = VmssCompute(
            FakeCredential(),
            SUB,
            resource_group=RG,
            location="westeurope",
            control_plane_url="https://cp.example.net",
            node_credential=lambda node_id: "t",
            agent_package="batchai-serverless",
            transport=FakeArm(),
            polling_interval=0,
            cluster_properties=lambda cluster_id: SPOT_CLUSTER if cluster_id == CLUSTER_ID else None,
        )
    machines = Machines(compute, store)
    yield machines
    machines.cleanup()


def test_node_root_is_stable_and_one_per_node(machines):
    root = machines.compute.node_root
    assert str(root(KEY, "node-0")) == str(root(KEY, "node-0"))
    assert len({str(root(KEY, "node-0")), str(root(KEY, "node-1")), str(root("another-key", "node-0"))}) == 3


def test_start_node_answers_the_handle_fields_and_the_node_is_alive(machines):
    started = machines.compute.start_node(node_id="n-first", cluster_id=CLUSTER_ID, cluster_key=KEY, name="node-0")
    machines.handles.append(started)
    assert HANDLE_FIELDS <= started.keys()
    assert started["id"] == "n-first" and str(started["root"]) == str(machines.compute.node_root(KEY, "node-0"))
    handle = NodeRecord(
        id="n-first",
        cluster=CLUSTER_ID,
        name="node-0",
        state="starting",
        pid=started["pid"],
        root=started["root"],
        machine=started["machine"],
    ).handle()
    assert machines.compute.is_alive(handle)


def test_start_nodes_answers_each_nodes_handle_in_order_and_they_are_alive(machines):
    answers = machines.compute.start_nodes(cluster_id=CLUSTER_ID, cluster_key=KEY, nodes=[("n-a", "node-0"), ("n-b", "node-1")])
    machines.handles.extend(answers)
    assert [a["id"] for a in answers] == ["n-a", "n-b"]
    assert [str(a["root"]) for a in answers] == [str(machines.compute.node_root(KEY, n)) for n in ("node-0", "node-1")]
    assert all(HANDLE_FIELDS <= a.keys() and machines.compute.is_alive(a) for a in answers)
    assert machines.compute.start_nodes(cluster_id=CLUSTER_ID, cluster_key=KEY, nodes=[]) == []
    assert isinstance(machines.compute.remote, bool)


def test_a_stopped_node_is_not_alive_and_the_other_one_is(machines):
    a, b = machines.start("node-0"), machines.start("node-1")
    assert machines.compute.is_alive(a) and machines.compute.is_alive(b)
    machines.compute.stop_node(a, grace=0.5)
    assert not machines.compute.is_alive(a)
    assert machines.compute.is_alive(b)


def test_stopping_a_stopped_or_unknown_node_is_harmless(machines):
    a = machines.start("node-0")
    machines.compute.stop_node(a, grace=0.5)
    machines.compute.stop_node(a, grace=0.5)
    machines.compute.stop_node(UNKNOWN)
    assert not machines.compute.is_alive(a) and not machines.compute.is_alive(UNKNOWN)


def test_an_evicted_node_goes_and_is_reported_until_it_is_stopped(machines):
    a, b = machines.start("node-0"), machines.start("node-1")
    assert machines.compute.evicted([a, b]) == []
    machines.compute.evict(a)
    until(lambda: not machines.compute.is_alive(a), 5, "the node to be gone")
    assert machines.compute.evicted([a, b]) == [a["id"]]
    assert machines.compute.evicted([b, a]) == [a["id"]]  # asked again: still reported
    assert machines.compute.is_alive(b)
    machines.compute.stop_node(a, grace=0.5)  # as the controller does with an evicted node: no error


def test_evicting_an_unknown_node_is_harmless(machines):
    machines.compute.evict(UNKNOWN)
    assert machines.compute.evicted([UNKNOWN]) == []


def test_no_volumes_mount_and_unmount_nothing(machines):
    root = str(machines.compute.node_root(KEY, "node-0"))
    assert machines.compute.mount(root, None, lambda file_server_id: None) == []
    assert machines.compute.unmount(root, None) is None


def test_closing_twice_is_harmless(machines):
    machines.compute.close()
    machines.compute.close()  # and once more at teardown
