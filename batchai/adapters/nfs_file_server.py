"""File servers on Azure: one NFS server VM per file server, as the service made them.

Real code against the real SDK (`azure-mgmt-compute`), with the caller's `TokenCredential`; any
azure-core keyword (a `transport`, `polling_interval`) goes to the client.

A file server `batchai-fs-<key>` is a Generation 2 Ubuntu 22.04 VM of the file server's `vmSize` in
its `subnet`, with `dataDisks.diskCount` empty managed disks (size, caching, storage account type as
given) and the `sshConfiguration`'s admin user. Its cloud-init (custom data) installs
`nfs-kernel-server` and `mdadm`, stripes the data disks into one RAID 0 array (a single disk is used
as it is), makes an ext4 file system on it, mounts it at /mnt/data (kept in fstab) and exports it to
the VNet's private ranges. The VM's network interface is made with it (and deleted with it); its
private address is what the nodes mount, reported in `mountSettings.fileServerInternalIP`, with
`mountPoint` /mnt/data (batchai.mounting mounts `<address>:/mnt/data[/sourceDirectory]`).
"""

from __future__ import annotations

import base64
import shlex

from azure.core.exceptions import ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute import models as m

MOUNT_POINT = "/mnt/data"
IMAGE = {"publisher": "Canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts-gen2", "version": "latest"}
NETWORK_API_VERSION = "2024-01-01"  # the VM makes its own network interface with this API
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")  # who may mount: the VNet, never the Internet
_CACHING = {"none": "None", "readonly": "ReadOnly", "readwrite": "ReadWrite"}


def vm_name(file_server_key: str) -> str:
    return f"batchai-fs-{file_server_key}"[:64]


def cloud_init(disk_count: int) -> str:
    """The NFS server's first boot: RAID 0 over the data disks (by their LUNs), ext4, /mnt/data, exported."""
    luns = " ".join(f"/dev/disk/azure/scsi1/lun{i}" for i in range(disk_count))
    exports = " ".join(f"{r}(rw,sync,no_root_squash,no_subtree_check)" for r in PRIVATE_RANGES)
    return f"""#!/bin/bash
# Batch AI file server: NFS over the data disks, striped (RAID 0) when there are several.
set -euo pipefail
exec >>/var/log/batchai-nfs.log 2>&1
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q nfs-kernel-server mdadm
disks=({luns})
for d in "${{disks[@]}}"; do while [ ! -e "$d" ]; do sleep 2; done; done
if [ "${{#disks[@]}}" -gt 1 ]; then
  mdadm --create /dev/md0 --run --level=0 --raid-devices=${{#disks[@]}} "${{disks[@]}}"
  mdadm --detail --scan >> /etc/mdadm/mdadm.conf
  update-initramfs -u
  device=/dev/md0
else
  device=$(readlink -f "${{disks[0]}}")
fi
mkfs.ext4 -F "$device"
mkdir -p {MOUNT_POINT}
echo "UUID=$(blkid -s UUID -o value "$device") {MOUNT_POINT} ext4 defaults,nofail 0 2" >> /etc/fstab
mount {MOUNT_POINT}
chmod 777 {MOUNT_POINT}
echo {shlex.quote(f"{MOUNT_POINT} {exports}")} > /etc/exports
systemctl enable --now nfs-kernel-server
exportfs -ra
"""


class NfsFileServers:
    """Creates and deletes file servers' NFS VMs."""

    def __init__(
        self,
        credential,
        subscription_id: str,
        *,
        resource_group: str,
        location: str,
        default_subnet_id: str | None = None,
        client: ComputeManagementClient | None = None,
        **client_kwargs,
    ):
        self.client = client or ComputeManagementClient(credential, subscription_id, **client_kwargs)
        self.resource_group, self.location, self.default_subnet_id = resource_group, location, default_subnet_id

    def vm_model(self, file_server_key: str, properties: dict) -> m.VirtualMachine:
        """The VM a file server's wire properties ask for (raises ValueError naming what is missing)."""
        ssh = properties.get("sshConfiguration") or {}
        account = ssh.get("userAccountSettings") or {}
        user, key, password = account.get("adminUserName"), account.get("adminUserSshPublicKey"), account.get("adminUserPassword")
        if not user or not (key or password):
            raise ValueError("sshConfiguration.userAccountSettings needs an adminUserName and an SSH key or a password")
        subnet = (properties.get("subnet") or {}).get("id") or self.default_subnet_id
        if not subnet:
            raise ValueError("a file server needs a subnet: give it one or the adapter a default_subnet_id")
        disks = properties["dataDisks"]
        count = int(disks["diskCount"])
        data_disks = [
            m.DataDisk(
                lun=i,
                name=f"{vm_name(file_server_key)}-data-{i}",
                create_option="Empty",
                disk_size_gb=int(disks["diskSizeInGB"]),
                caching=_CACHING[str(disks.get("cachingType") or "none").lower()],
                managed_disk=m.ManagedDiskParameters(storage_account_type=disks["storageAccountType"]),
                delete_option="Delete",
            )
            for i in range(count)
        ]
        nic = m.VirtualMachineNetworkInterfaceConfiguration(
            name="nic",
            properties=m.VirtualMachineNetworkInterfaceConfigurationProperties(
                primary=True,
                delete_option="Delete",
                ip_configurations=[
                    m.VirtualMachineNetworkInterfaceIPConfiguration(
                        name="ipconfig",
                        properties=m.VirtualMachineNetworkInterfaceIPConfigurationProperties(subnet=m.SubResource(id=subnet), primary=True),
                    )
                ],
            ),
        )
        linux = m.LinuxConfiguration(
            disable_password_authentication=not password,
            ssh=m.SshConfiguration(public_keys=[m.SshPublicKey(path=f"/home/{user}/.ssh/authorized_keys", key_data=key)]) if key else None,
        )
        return m.VirtualMachine(
            location=self.location,
            tags={"batchai-file-server": file_server_key},
            properties=m.VirtualMachineProperties(
                hardware_profile=m.HardwareProfile(vm_size=properties["vmSize"]),
                storage_profile=m.StorageProfile(
                    image_reference=m.ImageReference(**IMAGE),
                    os_disk=m.OSDisk(create_option="FromImage", caching="ReadWrite", delete_option="Delete"),
                    data_disks=data_disks,
                ),
                os_profile=m.OSProfile(
                    computer_name=f"fs{file_server_key.replace('-', '')[:13]}",
                    admin_username=user,
                    admin_password=password or None,
                    custom_data=base64.b64encode(cloud_init(count).encode()).decode(),
                    linux_configuration=linux,
                ),
                network_profile=m.NetworkProfile(network_api_version=NETWORK_API_VERSION, network_interface_configurations=[nic]),
            ),
        )

    def create(self, file_server_key: str, properties: dict) -> dict:
        """Creates the VM (returns once ARM reports it provisioned) and answers the file server's `mountSettings`."""
        name = vm_name(file_server_key)
        model = self.vm_model(file_server_key, properties)
        vm = self.client.virtual_machines.begin_create_or_update(self.resource_group, name, model).result()
        interfaces = ((vm.get("properties") or {}).get("networkProfile") or {}).get("networkInterfaces") or []
        if not interfaces:
            raise RuntimeError(f"the file server VM {name} has no network interface")
        return {"mountPoint": MOUNT_POINT, "fileServerInternalIP": self._private_address(interfaces[0]["id"]), "fileServerPublicIP": None}

    def _private_address(self, nic_id: str) -> str:
        response = self.client.send_request(HttpRequest("GET", f"{nic_id}?api-version={NETWORK_API_VERSION}"))
        response.raise_for_status()
        for config in response.json()["properties"]["ipConfigurations"]:
            address = (config.get("properties") or {}).get("privateIPAddress")
            if address:
                return address
        raise RuntimeError(f"the network interface {nic_id} has no private address yet")

    def delete(self, file_server_key: str) -> None:
        """Deletes the VM; its disks and network interface go with it (deleteOption). Gone already: no error."""
        try:
            self.client.virtual_machines.begin_delete(self.resource_group, vm_name(file_server_key)).result()
        except ResourceNotFoundError:
            pass

    def close(self) -> None:
        self.client.close()
