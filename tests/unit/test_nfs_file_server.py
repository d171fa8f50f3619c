"""File servers as NFS server VMs, against the real azure-mgmt-compute client and a fake ARM at the transport
(tests/support/fake_arm.py): the VM's model, its private address in mountSettings, and a cluster whose
nodes mount it."""

from __future__ import annotations

import base64
import subprocess

import pytest

from activities.resources import delete_resource, provision_file_server
from batchai.adapters.nfs_file_server import MOUNT_POINT, NfsFileServers, cloud_init, vm_name
from batchai.adapters.sqlite_store import SqliteStore
from batchai.adapters.vmss_compute import VmssCompute
from batchai.mounting import file_server_address
from batchai.ports import Record
from batchai.services import Services, Settings
from tests.support.fake_arm import RG, SUB, FakeArm, FakeCredential

KEY = "0a1b2c3d4e5f"
WS = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.BatchAI/workspaces/ws"
FS_ID = f"{WS}/fileServers/nfs"
CLUSTER_ID = f"{WS}/clusters/c1"
SUBNET = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/virtualNetworks/v/subnets/s"
VM_PATH = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/{vm_name(KEY)}"
PROPERTIES = {
    "vmSize": "Standard_D4s_v3",
    "sshConfiguration": {"userAccountSettings": {"adminUserName": "admin", "adminUserSshPublicKey": "ssh-rsa AAAA admin@h"}},
    "dataDisks": {"diskSizeInGB": 256, "diskCount": 3, "storageAccountType": "Premium_LRS", "cachingType": "readonly"},
    "subnet": {"id": SUBNET},
}


def servers(arm: FakeArm) -> NfsFileServers:
    return NfsFileServers(FakeCredential(), SUB, resource_group=RG, location="westeurope", transport=arm, polling_interval=0)


def test_the_nfs_vm_has_its_data_disks_a_gen2_image_the_subnet_and_an_nfs_raid_bootstrap():
    arm = FakeArm()
    servers(arm).create(KEY, PROPERTIES)
    put = arm.of("PUT")[0]
    assert put["path"] == VM_PATH
    props = put["body"]["properties"]
    assert props["hardwareProfile"] == {"vmSize": "Standard_D4s_v3"}
    storage = props["storageProfile"]
    assert storage["imageReference"]["sku"] == "22_04-lts-gen2"
    assert [
        (d["lun"], d["diskSizeGB"], d["caching"], d["managedDisk"]["storageAccountType"], d["createOption"]) for d in storage["dataDisks"]
    ] == [(i, 256, "ReadOnly", "Premium_LRS", "Empty") for i in range(3)]
    assert all(d["deleteOption"] == "Delete" for d in storage["dataDisks"])  # the disks go with the VM
    nic = props["networkProfile"]["networkInterfaceConfigurations"][0]
    assert nic["properties"]["ipConfigurations"][0]["properties"]["subnet"] == {"id": SUBNET}
    assert (
        props["osProfile"]["adminUsername"] == "admin" and props["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"] is True
    )
    script = base64.b64decode(props["osProfile"]["customData"]).decode()
    assert "apt-get install -y -q nfs-kernel-server mdadm" in script
    assert "mdadm --create /dev/md0 --run --level=0" in script and "/dev/disk/azure/scsi1/lun2" in script
    assert f"mkdir -p {MOUNT_POINT}" in script and "exportfs -ra" in script and "10.0.0.0/8(rw,sync" in script
    assert "0.0.0.0/0" not in script and "*(" not in script  # exported to private ranges only
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # it parses as bash
    subprocess.run(["bash", "-n"], input=cloud_init(1), text=True, check=True)


def test_creating_answers_the_private_address_in_mount_settings():
    arm = FakeArm(async_operations=True)
    settings = servers(arm).create(KEY, PROPERTIES)
    assert settings == {"mountPoint": MOUNT_POINT, "fileServerInternalIP": "10.40.0.4", "fileServerPublicIP": None}
    nic_reads = [r for r in arm.of("GET") if "/networkInterfaces/" in r["path"]]
    assert len(nic_reads) == 1 and nic_reads[0]["query"]["api-version"] == ["2024-01-01"]


def test_a_file_server_without_what_a_vm_needs_is_refused_before_any_request():
    arm = FakeArm()
    with pytest.raises(ValueError, match="subnet"):
        servers(arm).create(KEY, {**PROPERTIES, "subnet": None})
    with pytest.raises(ValueError, match="adminUserName"):
        servers(arm).create(KEY, {**PROPERTIES, "sshConfiguration": {"userAccountSettings": {"adminUserName": "a"}}})
    assert not arm.requests


def test_the_activity_records_mount_settings_and_a_cluster_mount_plan_uses_the_address(tmp_path):
    arm = FakeArm()
    store = SqliteStore(tmp_path / "store.db")
    store.create(Record(id=WS, type="workspaces", name="ws", parent=None, body={"location": "westeurope", "properties": {}}))
    store.create(
        Record(
            id=FS_ID,
            type="fileServers",
            name="nfs",
            parent=WS,
            body={"properties": {**PROPERTIES, "provisioningState": "creating"}},
            internal={"uuid": KEY},
        )
    )
    svc = Services(store=store, compute=None, engine=None, settings=Settings(data_dir=tmp_path), file_servers=servers(arm))  # type: ignore[arg-type]
    assert provision_file_server(svc, {"fileServerId": FS_ID}) == {"state": "succeeded"}
    record = store.get(FS_ID)
    assert record.properties["provisioningState"] == "succeeded"
    assert record.properties["mountSettings"]["fileServerInternalIP"] == "10.40.0.4"
    assert provision_file_server(svc, {"fileServerId": FS_ID}) == {"state": "succeeded"}  # again: nothing more made
    assert len(arm.of("PUT")) == 1

    # a cluster mounting it: its nodes' custom data mounts the server's private address
    compute = VmssCompute(
        FakeCredential(),
        SUB,
        resource_group=RG,
        location="westeurope",
        control_plane_url="https://cp.example.net",
        node_credential=lambda node_id: "c",
        agent_package="p",
        file_server_address=file_server_address(store),
        transport=arm,
    )
    cluster = {
        "vmSize": "Standard_D2s_v3",
        "userAccountSettings": {"adminUserName": "u", "adminUserSshPublicKey": "ssh-rsa AAAA u@h"},
        "subnet": {"id": SUBNET},
        "nodeSetup": {
            "mountVolumes": {"fileServers": [{"fileServer": {"id": FS_ID}, "sourceDirectory": "data", "relativeMountPath": "nfs"}]}
        },
    }
    model = compute.scale_set_model("cluster-key", CLUSTER_ID, cluster).as_dict()
    script = base64.b64decode(model["properties"]["virtualMachineProfile"]["osProfile"]["customData"]).decode()
    assert f"mount -t nfs 10.40.0.4:{MOUNT_POINT}/data /mnt/batchai/clusters/cluster-key/mounts/nfs" in script

    # deleting the workspace deletes the VM (its disks and NIC go with it)
    store.create_operation("op-1", "delete", WS)
    delete_resource(svc, {"resourceId": WS, "operationId": "op-1"})
    assert [r["path"] for r in arm.of("DELETE")] == [VM_PATH] and arm.machines == {} and arm.nics == {}


def test_a_file_server_whose_properties_cannot_make_a_vm_is_failed_with_the_reason(tmp_path):
    store = SqliteStore(tmp_path / "store.db")
    store.create(Record(id=WS, type="workspaces", name="ws", parent=None, body={"location": "westeurope", "properties": {}}))
    body = {"properties": {**PROPERTIES, "subnet": None, "provisioningState": "creating"}}
    store.create(Record(id=FS_ID, type="fileServers", name="nfs", parent=WS, body=body, internal={"uuid": KEY}))
    svc = Services(store=store, compute=None, engine=None, settings=Settings(data_dir=tmp_path), file_servers=servers(FakeArm()))  # type: ignore[arg-type]
    assert provision_file_server(svc, {"fileServerId": FS_ID}) == {"state": "failed"}
    props = store.get(FS_ID).properties
    assert props["provisioningState"] == "failed" and "subnet" in props["errors"][0]["message"]
