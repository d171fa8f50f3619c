"""The VM scale set adapter, against the real azure-mgmt-compute client and a fake ARM at the transport
(tests/support/fake_arm.py). Nothing leaves the process."""

from __future__ import annotations

import base64
import json

import pytest

from batchai.adapters.vmss_compute import (
    DEFAULT_IMAGE,
    JOB_USER,
    NODE_ENV,
    VmssCompute,
    custom_data,
    encode_custom_data,
    is_gpu_size,
    is_infiniband_size,
    node_env_script,
    scale_set_name,
)
from tests.support.fake_arm import RG, SUB, FakeArm, FakeCredential

KEY = "3f1c2d4e-aaaa-bbbb-cccc-1234567890ab"
CLUSTER_ID = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.BatchAI/workspaces/ws/clusters/c1"
SUBNET = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/virtualNetworks/v/subnets/s"
URL = "https://batchai.example.net"
VMSS = scale_set_name(KEY)
VMSS_PATH = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/{VMSS}"


CLUSTER = {
    "vmSize": "STANDARD_NC6",
    "vmPriority": "lowpriority",
    "scaleSettings": {"manual": {"targetNodeCount": 1}},
    "userAccountSettings": {"adminUserName": "demo", "adminUserSshPublicKey": "ssh-rsa AAAAB3Nza demo@host"},
    "subnet": {"id": SUBNET},
    "nodeSetup": {
        "mountVolumes": {
            "azureFileShares": [
                {
                    "azureFileUrl": "https://acct.file.core.windows.net/data",
                    "relativeMountPath": "afs",
                    "accountName": "acct",
                    "credentials": {"accountKey": "KEY=="},
                }
            ],
            "unmanagedFileSystems": [{"mountCommand": "mount -t glusterfs 10.0.0.9:/vol", "relativeMountPath": "gfs"}],
        }
    },
}


def make(arm: FakeArm, properties: dict | None = None, **kw) -> tuple[VmssCompute, FakeCredential]:
    cred = FakeCredential()
    props = CLUSTER if properties is None else properties
    compute = VmssCompute(
        cred,
        SUB,
        resource_group=RG,
        location="westeurope",
        control_plane_url=URL,
        node_credential=lambda node_id: f"cred-of-{node_id}",
        agent_package="https://example.net/batchai_serverless-0.1.0-py3-none-any.whl",
        cluster_properties=lambda cluster_id: props if cluster_id == CLUSTER_ID else None,
        transport=arm,
        polling_interval=0,
        **kw,
    )
    return compute, cred


def decoded_custom_data(put_body: dict) -> str:
    return base64.b64decode(put_body["properties"]["virtualMachineProfile"]["osProfile"]["customData"]).decode()


# ----- custom data, pure ----------------------------------------------------------------------------


def test_custom_data_installs_python_and_the_agent_runs_the_mounts_then_starts_the_agent():
    script = custom_data(
        cluster_id=CLUSTER_ID,
        control_plane_url=URL,
        agent_package="batchai-serverless==0.1.0",
        mount_script="set -euo pipefail\nmount -t nfs 10.0.0.4:/mnt/data /m/nfs\n",
    )
    assert script.startswith("#!/bin/bash\n")
    assert "apt-get install -y -q python3 python3-venv" in script and "python3.11" in script
    assert "/opt/batchai/venv/bin/python -m pip install -q batchai-serverless==0.1.0" in script
    assert "mount -t nfs 10.0.0.4:/mnt/data /m/nfs" in script and "bash /opt/batchai/mount.sh" in script
    assert "BATCHAI_NODE_TOKEN" not in script  # each node's credential goes to its instance alone
    assert (
        f'-m batchai.agent --node-id "$BATCHAI_NODE_ID" --cluster-id {CLUSTER_ID} --name "$BATCHAI_NODE_NAME" '
        f'--root "$BATCHAI_NODE_ROOT" --url {URL}'
    ) in script
    assert f"while [ ! -s {NODE_ENV} ]" in script  # waits to be named by start_node
    assert "systemctl enable --now batchai-agent.service" in script
    # the mounts come before the service is enabled, and blobfuse is installed only when a volume needs it
    assert script.index("bash /opt/batchai/mount.sh") < script.index("systemctl enable --now")
    assert "blobfuse" not in script


def test_custom_data_without_volumes_mounts_nothing_and_with_blob_volumes_installs_blobfuse():
    bare = custom_data(cluster_id=CLUSTER_ID, control_plane_url=URL, agent_package="p")
    assert "/opt/batchai/mount.sh" not in bare
    blob = custom_data(
        cluster_id=CLUSTER_ID,
        control_plane_url=URL,
        agent_package="p",
        mount_script="blobfuse /m/bfs --tmp-path=/x --config-file=/y\n",
    )
    assert "apt-get install -y -q blobfuse fuse" in blob
    assert base64.b64decode(encode_custom_data(bare)).decode() == bare


def test_custom_data_quotes_what_it_embeds():
    script = custom_data(cluster_id=CLUSTER_ID, control_plane_url="https://h/x?a=1&b=2", agent_package="p q")
    assert "--url 'https://h/x?a=1&b=2'" in script and "pip install -q 'p q'" in script


def test_node_env_script_names_the_instance():
    lines = node_env_script(node_id="n-1", name="node-0", root="/mnt/batchai/nodes/k/node-0", credential="c-1")
    assert all("\n" not in line for line in lines)  # a Run Command script is a list of lines
    assert lines[-5:] == [
        f"echo BATCHAI_NODE_ID=n-1 >> {NODE_ENV}.tmp",
        f"echo BATCHAI_NODE_NAME=node-0 >> {NODE_ENV}.tmp",
        f"echo BATCHAI_NODE_ROOT=/mnt/batchai/nodes/k/node-0 >> {NODE_ENV}.tmp",
        f"echo BATCHAI_NODE_TOKEN=c-1 >> {NODE_ENV}.tmp",
        f"mv {NODE_ENV}.tmp {NODE_ENV}",
    ]
    # run for real in a shell, into a temporary file: the values come back exactly, however odd
    import subprocess

    odd = node_env_script(node_id="n 'x\"$y", name="node-0", root="/r", credential="c")
    script = "\n".join(odd[2:-1]).replace(f"{NODE_ENV}.tmp", "$F")
    out = subprocess.run(
        ["bash", "-c", f'F=$(mktemp); {script}; set -a; . $F; printf %s "$BATCHAI_NODE_ID"; rm $F'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == "n 'x\"$y"


# ----- requests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("async_operations", [False, True])
def test_start_node_creates_the_spot_scale_set_grows_it_and_names_the_instance(async_operations):
    arm = FakeArm(async_operations=async_operations)
    compute, cred = make(arm)
    started = compute.start_node(node_id="n-aaa", cluster_id=CLUSTER_ID, cluster_key=KEY, name="node-0")
    assert started == {"id": "n-aaa", "pid": None, "address": None, "root": f"/mnt/batchai/nodes/{KEY}/node-0", "machine": f"{VMSS}/0"}

    # the scale set did not exist (GET 404), so it was created with capacity 0
    puts = arm.of("PUT")
    assert [r["path"] for r in puts] == [VMSS_PATH]
    put = puts[0]
    assert put["query"]["api-version"] == ["2026-04-01"]
    assert put["headers"]["Authorization"] == "Bearer fake-token"
    assert cred.scopes and cred.scopes[0] == ("https://management.azure.com/.default",)
    body = put["body"]
    assert body["location"] == "westeurope" and body["sku"] == {"name": "STANDARD_NC6", "tier": "Standard", "capacity": 0}
    props = body["properties"]
    assert props["overprovision"] is False and props["orchestrationMode"] == "Uniform" and props["upgradePolicy"] == {"mode": "Manual"}
    profile = props["virtualMachineProfile"]
    assert profile["priority"] == "Spot" and profile["evictionPolicy"] == "Delete" and profile["billingProfile"] == {"maxPrice": -1}
    assert profile["storageProfile"]["imageReference"] == DEFAULT_IMAGE
    os_profile = profile["osProfile"]
    assert os_profile["adminUsername"] == "demo" and "adminPassword" not in os_profile
    assert os_profile["linuxConfiguration"]["disablePasswordAuthentication"] is True
    assert os_profile["linuxConfiguration"]["ssh"]["publicKeys"] == [
        {"path": "/home/demo/.ssh/authorized_keys", "keyData": "ssh-rsa AAAAB3Nza demo@host"}
    ]
    nic = profile["networkProfile"]["networkInterfaceConfigurations"][0]
    assert nic["properties"]["ipConfigurations"][0]["properties"]["subnet"] == {"id": SUBNET}
    script = decoded_custom_data(body)
    assert f'-m batchai.agent --node-id "$BATCHAI_NODE_ID" --cluster-id {CLUSTER_ID}' in script and f"--url {URL}" in script
    assert "BATCHAI_NODE_TOKEN" not in script  # in the instance's Run Command, below: the node's own
    mounts = f"/mnt/batchai/clusters/{KEY}/mounts"
    assert (
        f"mount -t cifs //acct.file.core.windows.net/data {mounts}/afs -o "
        f"vers=3.0,credentials={mounts}/.cifs/afs.cred,dir_mode=0777,file_mode=0777,serverino"
    ) in script
    assert "'username=acct\npassword=' KEY== '\n'" in script  # unredacted on the node, in its credentials file
    assert f"mount -t glusterfs 10.0.0.9:/vol {mounts}/gfs" in script

    # then the capacity grew from 0 to 1 (PATCH sku.capacity)
    patches = arm.of("PATCH")
    assert [(r["path"], r["body"]) for r in patches] == [(VMSS_PATH, {"sku": {"capacity": 1}})]
    # and the new instance was named by a Run Command
    runs = arm.of("POST", "/runCommand")
    assert [r["path"] for r in runs] == [f"{VMSS_PATH}/virtualMachines/0/runCommand"]
    assert runs[0]["body"]["commandId"] == "RunShellScript"
    assert "BATCHAI_NODE_ID=n-aaa" in "\n".join(runs[0]["body"]["script"])
    assert "BATCHAI_NODE_TOKEN=cred-of-n-aaa" in "\n".join(runs[0]["body"]["script"])
    if async_operations:  # every LRO was polled through its Azure-AsyncOperation URL
        assert len(arm.of("GET", "/operations/op0")) >= 1
    assert compute.instance_of("n-aaa") == (VMSS, "0")


def test_a_second_node_grows_the_existing_scale_set_without_recreating_it():
    arm = FakeArm()
    compute, _ = make(arm)
    compute.start_node(node_id="n-a", cluster_id=CLUSTER_ID, cluster_key=KEY, name="node-0")
    compute.start_node(node_id="n-b", cluster_id=CLUSTER_ID, cluster_key=KEY, name="node-1")
    assert len(arm.of("PUT")) == 1
    assert [r["body"]["sku"]["capacity"] for r in arm.of("PATCH")] == [1, 2]
    assert compute.instance_of("n-b") == (VMSS, "1")


def test_an_instance_that_cannot_be_named_is_deleted_and_start_node_fails():
    from azure.core.exceptions import HttpResponseError

    arm = FakeArm()
    arm.fail_run_command = True
    compute, _ = make(arm)
    with pytest.raises(HttpResponseError):
        compute.start_node(node_id="n-x", cluster_id=CLUSTER_ID, cluster_key=KEY, name="node-0")
    assert arm.of("POST", "/delete")[-1]["body"] == {"instanceIds": ["0"]}
    assert compute.instance_of("n-x") is None and arm.vms[VMSS] == {}


def test_dedicated_cluster_with_password_custom_image_and_no_volumes():
    arm = FakeArm()
    props = {
        "vmSize": "STANDARD_D2_V2",
        "vmPriority": "dedicated",
        "userAccountSettings": {"adminUserName": "admin", "adminUserPassword": "Pa55word!"},
        "virtualMachineConfiguration": {
            "imageReference": {
                "publisher": "microsoft-dsvm",
                "offer": "linux-data-science-vm-ubuntu",
                "sku": "linuxdsvmubuntu",
                "virtualMachineImageId": "/subscriptions/s/images/custom",
            }
        },
    }
    compute, _ = make(arm, props, default_subnet_id=SUBNET)
    compute.ensure_scale_set(KEY, CLUSTER_ID)
    profile = arm.of("PUT")[0]["body"]["properties"]["virtualMachineProfile"]
    assert profile["priority"] == "Regular" and "evictionPolicy" not in profile and "billingProfile" not in profile
    assert profile["storageProfile"]["imageReference"] == {"id": "/subscriptions/s/images/custom"}
    assert profile["osProfile"]["adminPassword"] == "Pa55word!"
    assert profile["osProfile"]["linuxConfiguration"] == {"disablePasswordAuthentication": False}
    assert profile["networkProfile"]["networkInterfaceConfigurations"][0]["properties"]["ipConfigurations"][0]["properties"]["subnet"] == {
        "id": SUBNET
    }
    assert "mount.sh" not in decoded_custom_data(arm.of("PUT")[0]["body"])


def test_key_vault_keys_give_the_scale_set_an_identity_and_are_fetched_on_the_node():
    arm = FakeArm()
    props = dict(
        CLUSTER,
        nodeSetup={
            "mountVolumes": {
                "azureFileShares": [
                    {
                        "azureFileUrl": "https://acct.file.core.windows.net/data",
                        "relativeMountPath": "afs",
                        "accountName": "acct",
                        "credentials": {
                            "accountKeySecretReference": {
                                "sourceVault": {"id": "/subscriptions/s/resourceGroups/r/providers/Microsoft.KeyVault/vaults/v"},
                                "secretUrl": "https://v.vault.azure.net/secrets/k",
                            }
                        },
                    }
                ]
            }
        },
    )
    compute, _ = make(arm, props)
    compute.ensure_scale_set(KEY, CLUSTER_ID)
    body = arm.of("PUT")[0]["body"]
    assert body["identity"] == {"type": "SystemAssigned"}
    script = decoded_custom_data(body)
    assert "AFS_KEY_0=$(batchai-fetch-secret https://v.vault.azure.net/secrets/k)" in script
    assert "/usr/local/bin/batchai-fetch-secret" in script


def test_a_cluster_without_subnet_or_admin_user_is_refused_before_any_request():
    arm = FakeArm()
    compute, _ = make(arm, {"vmSize": "STANDARD_D1", "userAccountSettings": {"adminUserName": "u", "adminUserPassword": "p"}})
    with pytest.raises(ValueError, match="subnet"):
        compute.ensure_scale_set(KEY, CLUSTER_ID)
    compute, _ = make(arm, {"vmSize": "STANDARD_D1", "subnet": {"id": SUBNET}})
    with pytest.raises(ValueError, match="adminUserName"):
        compute.ensure_scale_set(KEY, CLUSTER_ID)
    assert not arm.of("PUT")


def test_stop_node_deletes_exactly_its_instance():
    arm = FakeArm()
    compute, _ = make(arm)
    for i in range(3):
        compute.start_node(node_id=f"n-{i}", cluster_id=CLUSTER_ID, cluster_key=KEY, name=f"node-{i}")
    compute.stop_node({"id": "n-1", "pid": None}, grace=1.0)
    deletes = arm.of("POST", "/delete")
    assert [(r["path"], r["body"]) for r in deletes] == [(f"{VMSS_PATH}/delete", {"instanceIds": ["1"]})]
    assert sorted(arm.vms[VMSS]) == ["0", "2"] and compute.instance_of("n-1") is None
    compute.stop_node({"id": "n-1", "pid": None})  # again, or an unknown node: nothing is sent
    compute.stop_node({"id": "never-started", "pid": None})
    assert len(arm.of("POST", "/delete")) == 1


@pytest.mark.parametrize("async_operations", [False, True])
def test_scale_sets_the_capacity_and_delete_cluster_deletes_the_scale_set(async_operations):
    arm = FakeArm(async_operations=async_operations)
    compute, _ = make(arm)
    compute.ensure_scale_set(KEY, CLUSTER_ID)
    compute.scale(KEY, 4)
    assert arm.of("PATCH")[-1]["body"] == {"sku": {"capacity": 4}} and arm.of("PATCH")[-1]["path"] == VMSS_PATH
    assert compute.capacity(KEY) == 4 and len(compute.instances(KEY)) == 4
    compute.delete_cluster(KEY)
    assert [r["path"] for r in arm.of("DELETE")] == [VMSS_PATH] and VMSS not in arm.scale_sets
    compute.delete_cluster(KEY)  # already gone: a 404 is fine


def test_is_alive_reads_the_instance_view():
    arm = FakeArm()
    compute, _ = make(arm)
    for i in range(4):
        compute.start_node(node_id=f"n-{i}", cluster_id=CLUSTER_ID, cluster_key=KEY, name=f"node-{i}")
    arm.vms[VMSS]["1"] = arm._vm(VMSS, "1", power="PowerState/deallocated")
    arm.vms[VMSS]["2"] = arm._vm(VMSS, "2", state="Creating", power="PowerState/starting")
    arm.vms[VMSS]["3"] = arm._vm(VMSS, "3", state="Failed", power="PowerState/running")
    alive = {n: compute.is_alive({"id": n, "pid": None}) for n in ("n-0", "n-1", "n-2", "n-3", "unknown")}
    assert alive == {"n-0": True, "n-1": False, "n-2": True, "n-3": False, "unknown": False}
    views = [r["path"] for r in arm.of("GET", "/instanceView")]
    assert views == [f"{VMSS_PATH}/virtualMachines/{i}/instanceView" for i in range(4)]
    del arm.vms[VMSS]["0"]
    assert compute.is_alive({"id": "n-0", "pid": None}) is False  # 404: gone


def test_evictions_are_mapped_from_the_vm_list():
    arm = FakeArm()
    compute, _ = make(arm)
    for i in range(5):
        compute.start_node(node_id=f"n-{i}", cluster_id=CLUSTER_ID, cluster_key=KEY, name=f"node-{i}")
    del arm.vms[VMSS]["1"]  # evicted with policy Delete: gone
    arm.vms[VMSS]["2"] = arm._vm(VMSS, "2", state="Deleting", power="PowerState/stopped")  # being deleted by the platform
    arm.vms[VMSS]["3"] = arm._vm(VMSS, "3", power="PowerState/deallocated")  # policy Deallocate
    nodes = [{"id": f"n-{i}", "pid": None, "root": None} for i in range(5)] + [{"id": "elsewhere", "pid": None}]
    assert sorted(compute.evicted(nodes)) == ["n-1", "n-2", "n-3"]
    assert sorted(compute.evicted_instances(KEY)) == ["2", "3"]
    lists = arm.of("GET", "/virtualMachines")
    assert lists[-1]["query"]["$expand"] == ["instanceView"] and lists[-1]["path"] == f"{VMSS_PATH}/virtualMachines"


def test_evict_simulates_the_eviction_of_the_spot_instance():
    from azure.core.exceptions import HttpResponseError

    arm = FakeArm()
    compute, _ = make(arm)
    handles = [
        {"id": s["id"], "pid": None, "root": s["root"], "machine": s["machine"]}
        for s in (compute.start_node(node_id=f"n-{i}", cluster_id=CLUSTER_ID, cluster_key=KEY, name=f"node-{i}") for i in range(2))
    ]
    compute.evict(handles[0])
    posts = arm.of("POST", "/simulateEviction")
    assert [r["path"] for r in posts] == [f"{VMSS_PATH}/virtualMachines/0/simulateEviction"] and posts[0]["body"] is None
    assert compute.evicted(handles) == ["n-0"] and sorted(arm.vms[VMSS]) == ["1"]
    compute.evict(handles[0])  # gone already (404): nothing to do
    assert len(arm.of("POST", "/simulateEviction")) == 2
    dedicated, _ = make(arm, {**CLUSTER, "vmPriority": "dedicated"})
    regular = dedicated.start_node(node_id="n-r", cluster_id=CLUSTER_ID, cluster_key="another-key", name="node-0")
    with pytest.raises(HttpResponseError):  # ARM refuses a VM that is not Spot
        dedicated.evict(regular)
    compute.close()
    compute.close()


def test_the_node_map_survives_a_restart_through_the_state_file(tmp_path):
    arm = FakeArm()
    state = tmp_path / "vmss-nodes.json"
    compute, _ = make(arm, state_file=state)
    compute.start_node(node_id="n-a", cluster_id=CLUSTER_ID, cluster_key=KEY, name="node-0")
    again, _ = make(arm, state_file=state)
    assert again.instance_of("n-a") == (VMSS, "0")
    again.stop_node({"id": "n-a", "pid": None})
    assert arm.of("POST", "/delete")[-1]["body"] == {"instanceIds": ["0"]}
    assert json.loads(state.read_text()) == {"nodes": {}}


def test_another_process_reaches_a_node_by_the_machine_stored_with_it():
    """A second Functions instance has no map of the first one's nodes: the store's machine is enough."""
    arm = FakeArm()
    first, _ = make(arm)
    started = [first.start_node(node_id=f"n-{i}", cluster_id=CLUSTER_ID, cluster_key=KEY, name=f"node-{i}") for i in range(3)]
    handles = [{"id": s["id"], "pid": None, "root": s["root"], "machine": s["machine"]} for s in started]  # NodeRecord.handle()
    second, _ = make(arm)
    assert second.instance_of("n-1") is None
    assert second.is_alive(handles[1]) is True
    arm.vms[VMSS]["2"] = arm._vm(VMSS, "2", power="PowerState/deallocated")
    assert second.evicted(handles) == ["n-2"]
    second.stop_node(handles[1])
    assert arm.of("POST", "/delete")[-1]["body"] == {"instanceIds": ["1"]} and sorted(arm.vms[VMSS]) == ["0", "2"]


def test_mount_answers_the_planned_paths_and_unmount_does_nothing():
    compute, _ = make(FakeArm())
    volumes = CLUSTER["nodeSetup"]["mountVolumes"]
    assert compute.mount("/m", volumes, None) == ["/m/afs", "/m/gfs"]
    assert compute.mount("/m", None, None) == []
    assert compute.unmount("/m", volumes) is None


# ----- GPU nodes, InfiniBand, scale-out ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "gpu", "infiniband"),
    [
        ("Standard_ND96asr_v4", True, True),
        ("Standard_ND96isr_H100_v5", True, True),
        ("Standard_NC24rs_v3", True, True),
        ("Standard_NC24ads_A100_v4", True, False),
        ("STANDARD_NC6", True, False),
        ("Standard_HB120rs_v3", False, True),
        ("Standard_D2s_v3", False, False),
        ("Standard_DS3_v2", False, False),
    ],
)
def test_gpu_and_infiniband_sizes_are_told_from_the_size_name(size, gpu, infiniband):
    assert (is_gpu_size(size), is_infiniband_size(size)) == (gpu, infiniband)


def test_an_nd_cluster_gets_the_gen2_hpc_image_gpu_bootstrap_one_placement_group_and_spot():
    arm = FakeArm()
    compute, _ = make(arm, {**CLUSTER, "vmSize": "Standard_ND96asr_v4", "nodeSetup": None})
    compute.ensure_scale_set(KEY, CLUSTER_ID)
    body = arm.of("PUT")[0]["body"]
    props = body["properties"]
    profile = props["virtualMachineProfile"]
    # Generation 2 with driver, CUDA, InfiniBand and MPI: the Ubuntu HPC 22.04 image
    assert profile["storageProfile"]["imageReference"] == {
        "publisher": "microsoft-dsvm",
        "offer": "ubuntu-hpc",
        "sku": "2204",
        "version": "latest",
    }
    assert "extensionProfile" not in profile  # the image has the driver
    assert props["singlePlacementGroup"] is True  # InfiniBand reaches only within one placement group
    assert profile["priority"] == "Spot" and profile["evictionPolicy"] == "Delete" and profile["billingProfile"] == {"maxPrice": -1}
    script = decoded_custom_data(body)
    assert "command -v docker >/dev/null || apt-get install -y -q docker.io" in script
    assert "apt-get install -y -q nvidia-container-toolkit" in script and "nvidia-ctk runtime configure --runtime=docker" in script
    assert f"useradd --system --create-home --shell /bin/bash {JOB_USER}" in script and f"--run-as {JOB_USER}" in script
    # the toolkit is in place before the agent's service starts
    assert script.index("nvidia-ctk runtime configure") < script.index("systemctl enable --now batchai-agent.service")


def test_a_gpu_size_on_a_plain_image_gets_the_nvidia_driver_extension_and_a_cpu_size_gets_neither():
    arm = FakeArm()
    ubuntu = {"publisher": "Canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts-gen2", "version": "latest"}
    compute, _ = make(
        arm,
        {
            **CLUSTER,
            "vmSize": "Standard_NC24ads_A100_v4",
            "vmPriority": "dedicated",
            "virtualMachineConfiguration": {"imageReference": ubuntu},
        },
    )
    compute.ensure_scale_set(KEY, CLUSTER_ID)
    profile = arm.of("PUT")[0]["body"]["properties"]["virtualMachineProfile"]
    assert profile["storageProfile"]["imageReference"] == ubuntu
    assert profile["extensionProfile"]["extensions"] == [
        {
            "name": "NvidiaGpuDriverLinux",
            "properties": {
                "publisher": "Microsoft.HpcCompute",
                "type": "NvidiaGpuDriverLinux",
                "typeHandlerVersion": "1.9",
                "autoUpgradeMinorVersion": True,
                "settings": {},
            },
        }
    ]
    assert arm.of("PUT")[0]["body"]["properties"]["singlePlacementGroup"] is False
    cpu_arm = FakeArm()
    cpu, _ = make(cpu_arm, {**CLUSTER, "vmSize": "Standard_D2s_v3"})
    cpu.ensure_scale_set(KEY, CLUSTER_ID)
    body = cpu_arm.of("PUT")[0]["body"]
    assert "extensionProfile" not in body["properties"]["virtualMachineProfile"]
    assert "nvidia-container-toolkit" not in decoded_custom_data(body) and "docker.io" in decoded_custom_data(body)


def test_start_nodes_grows_the_scale_set_once_by_n_and_names_every_new_instance():
    arm = FakeArm(async_operations=True)
    compute, _ = make(arm)
    nodes = [(f"n-{i}", f"node-{i}") for i in range(5)]
    answers = compute.start_nodes(cluster_id=CLUSTER_ID, cluster_key=KEY, nodes=nodes)
    assert [a["machine"] for a in answers] == [f"{VMSS}/{i}" for i in range(5)]
    assert [(r["path"], r["body"]) for r in arm.of("PATCH")] == [(VMSS_PATH, {"sku": {"capacity": 5}})]  # ONE update of +5
    runs = sorted(r["path"] for r in arm.of("POST", "/runCommand"))
    assert runs == sorted(f"{VMSS_PATH}/virtualMachines/{i}/runCommand" for i in range(5))
    named = {r["path"].split("/")[-2]: "\n".join(r["body"]["script"]) for r in arm.of("POST", "/runCommand")}
    assert all(f"BATCHAI_NODE_ID=n-{i}" in named[str(i)] for i in range(5))
    more = compute.start_nodes(cluster_id=CLUSTER_ID, cluster_key=KEY, nodes=[("n-5", "node-5"), ("n-6", "node-6")])
    assert [a["machine"] for a in more] == [f"{VMSS}/5", f"{VMSS}/6"]
    assert [r["body"]["sku"]["capacity"] for r in arm.of("PATCH")] == [5, 7]


def test_a_node_whose_instance_cannot_be_named_answers_its_error_and_the_others_start():
    from azure.core.exceptions import HttpResponseError

    arm = FakeArm()
    arm.fail_run_command_for = {"1"}
    compute, _ = make(arm)
    answers = compute.start_nodes(cluster_id=CLUSTER_ID, cluster_key=KEY, nodes=[("n-0", "node-0"), ("n-1", "node-1"), ("n-2", "node-2")])
    assert isinstance(answers[1], HttpResponseError) and [answers[0]["id"], answers[2]["id"]] == ["n-0", "n-2"]
    assert sorted(arm.vms[VMSS]) == ["0", "2"] and compute.instance_of("n-1") is None


def test_the_controller_stores_every_new_node_before_the_scale_set_grows(tmp_path):
    """One pass growing a cluster to 4: the four nodes are in the store when the capacity update (+4, the only
    one) reaches ARM, so a control plane stopped during the long VM calls knows them."""
    from activities.clusters import resize
    from batchai.adapters.sqlite_store import SqliteStore
    from batchai.ports import Record
    from batchai.services import Services, Settings

    store = SqliteStore(tmp_path / "store.db")
    cluster = Record(
        id=CLUSTER_ID,
        type="clusters",
        name="c1",
        parent=CLUSTER_ID.rsplit("/clusters/", 1)[0],
        body={"properties": {**CLUSTER, "scaleSettings": {"manual": {"targetNodeCount": 4}}}},
        internal={"uuid": KEY},
    )
    store.create(cluster)
    arm = FakeArm()
    seen: list[list[str]] = []
    arm.on_capacity = lambda capacity: seen.append(sorted(n.state for n in store.nodes(CLUSTER_ID)))
    compute, _ = make(arm)
    svc = Services(store=store, compute=compute, engine=None, settings=Settings(data_dir=tmp_path))  # type: ignore[arg-type]
    target, _ = resize(svc, store.get(CLUSTER_ID), 0.0)
    assert target == 4 and seen == [["starting"] * 4]
    assert [r["body"]["sku"]["capacity"] for r in arm.of("PATCH")] == [4]
    nodes = store.nodes(CLUSTER_ID)
    assert sorted(n.machine for n in nodes) == [f"{VMSS}/{i}" for i in range(4)] and {n.state for n in nodes} == {"starting"}
