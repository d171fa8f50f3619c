"""Azure compute: every cluster is one VM scale set, every node one of its instances (the `Compute` port).

Real code against the real SDK (`azure-mgmt-compute`): `ComputeManagementClient` with the caller's
`TokenCredential`; any azure-core keyword (a `transport`, `polling_interval`) goes to the client.

How a cluster maps onto Azure
- One Uniform scale set per cluster, named `batchai-<cluster key>`, created on the first node with
  capacity 0 (`ensure_scale_set`): the cluster's `vmSize`, its image
  (`virtualMachineConfiguration.imageReference`, default Canonical UbuntuServer 18.04-LTS), the admin
  user of `userAccountSettings`, the cluster's `subnet` (or the adapter's default subnet), and
  `vmPriority: lowpriority` as Spot (`evictionPolicy: Delete`, `billingProfile.maxPrice: -1`: evicted
  for capacity only, never for price). Overprovisioning is off, so the instances are exactly the
  nodes asked for.
- Custom data (`custom_data`, a bash script cloud-init runs once, at the first boot, as root) installs
  Python 3.11+, installs the node agent from `agent_package` into a venv, runs the cluster's mount
  plan (`batchai.mounting`, for `nodeSetup.mountVolumes`) and installs a systemd service that starts
  `python -m batchai.agent ... --url <control plane>` with BATCHAI_NODE_TOKEN from a root-only file.
- All instances share the scale set's custom data, so a node learns who it is afterwards: `start_node`
  grows the capacity by one, finds the new instance, and names it with a Run Command that writes
  /etc/batchai/node.env (node id, name, root). The service waits for that file, then starts the agent.
  `start_node` answers the node's machine, `<scale set>/<instance id>`; the control plane keeps it
  with the node in the store and hands it back (`NodeRecord.handle()`), so any of its processes
  (Functions instances) reaches a VM another one started. The adapter's own node id -> instance
  map (in memory and, given `state_file`, on disk) only serves nodes stored before machines were.
- `stop_node` deletes that instance (`deleteInstances`, which also lowers the capacity);
  `is_alive` reads its instance view; `evicted` maps Spot evictions: an instance the platform deleted
  (gone from the scale set, or being deleted without us asking) or deallocated (a `Deallocate`
  eviction policy) was evicted. `evict` asks Azure to evict a Spot instance (Simulate Eviction); the
  platform then takes it back on its own time, as it would for capacity.
- Mounting happens on the VMs: the cluster's volumes at the first boot (custom data; each node's root
  links them as `mounts`), a job's own by the node's agent around its task (`NodeTask.mounts`), so
  `mount` only answers the planned mount paths and `unmount` does nothing. The VMs are `remote`: a
  job's paths are under the node's root, and its agent sends its logs and outputs to the control
  plane as it writes them (batchai/agent/uploads.py), which keeps them in the job's blob container.

Not handled here: creating a virtual network (give a subnet), granting the scale set's managed
identity access to Key Vault (it is created, SystemAssigned, when a volume's key is a Key Vault
reference), and reporting a failed bootstrap (a node whose mounts fail never registers).
Custom data carries the volumes' account keys: anyone who can read the scale set model can read
them. Each node's own credential goes only to its instance, with its name (start_node's Run Command).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute import models as m

from batchai.mounting import SecretFetch, mount_plan, render

TOKEN_ENV = "BATCHAI_NODE_TOKEN"
# Generation 2, with the NVIDIA driver, CUDA, InfiniBand (MOFED) and MPI (HPC-X, OpenMPI) installed: what ND/NC sizes need
DEFAULT_IMAGE = {"publisher": "microsoft-dsvm", "offer": "ubuntu-hpc", "sku": "2204", "version": "latest"}
HPC_IMAGE_PUBLISHER = "microsoft-dsvm"
# on any other image a GPU size gets its driver (and CUDA) from this extension
GPU_DRIVER_EXTENSION = {"publisher": "Microsoft.HpcCompute", "type": "NvidiaGpuDriverLinux", "typeHandlerVersion": "1.9"}
JOB_USER = "batchai-job"  # jobs run as this user: it cannot read /etc/batchai (the node's credential)
RUN_COMMAND_WORKERS = 16  # instances named at once by start_nodes
DEFAULT_DATA_DIR = "/mnt/batchai"  # on the VMs: the resource (temporary) disk, as Batch used /mnt/batch
NODE_ENV = "/etc/batchai/node.env"  # written per instance by start_node's Run Command
AGENT_VENV = "/opt/batchai/venv"
SCALE_SET_PREFIX = "batchai-"
_GONE_POWER = ("PowerState/deallocated", "PowerState/deallocating", "PowerState/stopped", "PowerState/stopping")
_EVICTED_POWER = ("PowerState/deallocated", "PowerState/deallocating")


def scale_set_name(cluster_key: str) -> str:
    """The scale set of a cluster (names are at most 64 characters; the key is a uuid)."""
    return f"{SCALE_SET_PREFIX}{cluster_key}"[:64]


_SIZE = re.compile(r"^standard_([a-z]+)(\d+)([a-z]*)(?:_|$)", re.IGNORECASE)


def _size_parts(vm_size: str) -> tuple[str, str]:
    """(family, features) of an Azure size name: Standard_ND96isr_H100_v5 -> ("nd", "isr")."""
    m = _SIZE.match(vm_size or "")
    return (m.group(1).lower(), m.group(3).lower()) if m else ("", "")


def is_gpu_size(vm_size: str) -> bool:
    """The N series (NC, ND, NV, NG) carry NVIDIA or AMD GPUs."""
    return _size_parts(vm_size)[0].startswith("n")


def is_infiniband_size(vm_size: str) -> bool:
    """RDMA-capable sizes (InfiniBand): an `r` among the features of the H and N families (ND96asr_v4,
    ND96isr_H100_v5, NC24rs_v3, HB120rs_v3). Their VMs reach each other over InfiniBand only inside one
    placement group."""
    family, features = _size_parts(vm_size)
    return family[:1] in ("h", "n") and "r" in features


# ----- custom data (pure) -------------------------------------------------------------------------

_FETCH_SECRET = r"""#!/bin/bash
# batchai-fetch-secret SECRET_URL: a Key Vault secret's value, with the scale set's managed identity.
set -euo pipefail
token=$(curl -sf -H Metadata:true \
  'http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
curl -sf -H "Authorization: Bearer ${token}" "${1%/}?api-version=7.4" \
  | python3 -c 'import json,sys; sys.stdout.write(json.load(sys.stdin)["value"])'
"""


def _heredoc(path: str, content: str, delimiter: str, mode: str = "644") -> str:
    """A file written by a quoted heredoc (nothing in it is expanded), ended by a delimiter no line of it is."""
    if not content.endswith("\n"):
        content += "\n"
    lines = set(content.split("\n"))
    delimiter = f"{delimiter}_{hashlib.sha256(content.encode()).hexdigest()[:12]}"
    while delimiter in lines:
        delimiter += "_"
    return f"install -m {mode} /dev/null {shlex.quote(path)}\ncat > {shlex.quote(path)} <<'{delimiter}'\n{content}{delimiter}\n"


def agent_command(*, cluster_id: str, control_plane_url: str, python: str = f"{AGENT_VENV}/bin/python", heartbeat: float = 1.0) -> str:
    """The agent's command line on a VM; node id, name, root and address come from the environment."""
    return (
        f'{python} -m batchai.agent --node-id "$BATCHAI_NODE_ID" --cluster-id {shlex.quote(cluster_id)} '
        f'--name "$BATCHAI_NODE_NAME" --root "$BATCHAI_NODE_ROOT" --url {shlex.quote(control_plane_url)} '
        f'--address "$ADDRESS" --heartbeat {float(heartbeat)!r} --run-as {JOB_USER}'
    )


_NVIDIA_TOOLKIT = [
    "if ! command -v nvidia-ctk >/dev/null; then",
    "  curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey"
    " | gpg --batch --yes --dearmor -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg",
    "  curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list"
    " | sed 's#deb https://#deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://#g'"
    " > /etc/apt/sources.list.d/nvidia-container-toolkit.list",
    "  apt-get update -q",
    "  apt-get install -y -q nvidia-container-toolkit",
    "fi",
    "nvidia-ctk runtime configure --runtime=docker",
    "systemctl restart docker",
]


def custom_data(
    *,
    cluster_id: str,
    control_plane_url: str,
    agent_package: str,
    mount_script: str = "",
    heartbeat: float = 1.0,
    gpu: bool = False,
    mount_root: str = f"{DEFAULT_DATA_DIR}/mounts",
) -> str:
    """The bootstrap script every instance of a cluster's scale set runs at its first boot (as root).

    `mount_script` is a rendered mount plan (`batchai.mounting.render(..., redact=False)`), run before
    the agent starts so that jobs find their volumes; `agent_package` is what pip installs the agent
    from (a wheel or sdist URL, `git+https://...`, or a name on the VMs' package index). Every node gets
    a container runtime (docker) and OpenMPI unless its image has them; `gpu` nodes get the NVIDIA
    container toolkit too (the driver and CUDA come with the image or the driver extension). Jobs run
    as the unprivileged JOB_USER, which cannot read /etc/batchai. `mount_root` is where the mount
    script mounts the cluster's volumes: each node's root links it as `mounts` (AZ_BATCHAI_MOUNT_ROOT).
    """
    start = agent_command(cluster_id=cluster_id, control_plane_url=control_plane_url, heartbeat=heartbeat)
    launcher = f"""#!/bin/bash
# Waits until the control plane has named this instance (start_node's Run Command), then runs the agent.
set -euo pipefail
while [ ! -s {NODE_ENV} ]; do sleep 2; done
set -a; . {NODE_ENV}; set +a
ADDRESS=$(hostname -I | awk '{{print $1}}')
mkdir -p "$BATCHAI_NODE_ROOT" {shlex.quote(mount_root)}
ln -sfn {shlex.quote(mount_root)} "$BATCHAI_NODE_ROOT/mounts"
cd "$BATCHAI_NODE_ROOT"
exec {start}
"""
    unit = """[Unit]
Description=Batch AI node agent
After=network-online.target
Wants=network-online.target

[Service]
Environment=PYTHONUNBUFFERED=1
ExecStart=/opt/batchai/start-agent.sh
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
"""
    needs_blobfuse = "blobfuse " in mount_script
    parts = [
        "#!/bin/bash",
        "# Batch AI node bootstrap (scale set custom data): runs once, at the first boot, as root.",
        "set -euo pipefail",
        "exec >>/var/log/batchai-bootstrap.log 2>&1",
        "export DEBIAN_FRONTEND=noninteractive",
        "install -d -m 755 /opt/batchai",
        "install -d -m 700 /etc/batchai",
        "",
        "# 1. Python 3.11+ for the node agent, and the tools the mount plan uses",
        "apt-get update -q",
        "apt-get install -y -q python3 python3-venv python3-pip curl cifs-utils nfs-common",
        "PY=python3",
        "if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then",
        "  apt-get install -y -q software-properties-common",
        "  add-apt-repository -y ppa:deadsnakes/ppa",
        "  apt-get update -q",
        "  apt-get install -y -q python3.11 python3.11-venv",
        "  PY=python3.11",
        "fi",
        "",
        "# 2. a container runtime, MPI, and the user jobs run as",
        "command -v docker >/dev/null || apt-get install -y -q docker.io",
        "command -v mpirun >/dev/null || apt-get install -y -q openmpi-bin",
        f"id -u {JOB_USER} >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash {JOB_USER}",
    ]
    if gpu:
        parts += ["# GPUs in containers: the NVIDIA container toolkit, wired into docker", *_NVIDIA_TOOLKIT]
    if needs_blobfuse:
        parts += [
            'curl -sSfL "https://packages.microsoft.com/config/ubuntu/$(lsb_release -rs)/packages-microsoft-prod.deb"'
            " -o /tmp/packages-microsoft-prod.deb",
            "dpkg -i /tmp/packages-microsoft-prod.deb",
            "apt-get update -q",
            "apt-get install -y -q blobfuse fuse",
        ]
    parts += [
        "",
        "# 3. the node agent",
        f'"$PY" -m venv {AGENT_VENV}',
        f"{AGENT_VENV}/bin/python -m pip install -q --upgrade pip",
        f"{AGENT_VENV}/bin/python -m pip install -q {shlex.quote(agent_package)}",
        "",
        "# 4. the cluster's volumes (nodeSetup.mountVolumes)",
        _heredoc("/usr/local/bin/batchai-fetch-secret", _FETCH_SECRET, "BATCHAI_FETCH_SECRET", mode="755").rstrip("\n"),
    ]
    if mount_script.strip():
        parts += [
            _heredoc("/opt/batchai/mount.sh", mount_script, "BATCHAI_MOUNTS", mode="700").rstrip("\n"),
            "bash /opt/batchai/mount.sh",
        ]
    parts += [
        "",
        "# 5. the agent's service: it starts the agent once this instance is named",
        _heredoc("/opt/batchai/start-agent.sh", launcher, "BATCHAI_LAUNCHER", mode="755").rstrip("\n"),
        _heredoc("/etc/systemd/system/batchai-agent.service", unit, "BATCHAI_UNIT").rstrip("\n"),
        "systemctl daemon-reload",
        "systemctl enable --now batchai-agent.service",
    ]
    return "\n".join(parts) + "\n"


def encode_custom_data(script: str) -> str:
    """Custom data goes to ARM base64-encoded."""
    return base64.b64encode(script.encode()).decode()


def node_env_script(*, node_id: str, name: str, root: str, credential: str) -> list[str]:
    """The Run Command that names an instance: its node id, name, root and credential (read by the launcher, root only)."""
    values = (("BATCHAI_NODE_ID", node_id), ("BATCHAI_NODE_NAME", name), ("BATCHAI_NODE_ROOT", root), (TOKEN_ENV, credential))
    return [
        "set -e",
        "install -d -m 700 /etc/batchai",
        f"install -m 600 /dev/null {NODE_ENV}.tmp",
        *(f"echo {shlex.quote(f'{k}={shlex.quote(v)}')} >> {NODE_ENV}.tmp" for k, v in values),
        f"mv {NODE_ENV}.tmp {NODE_ENV}",
    ]


def _mount_paths(root: str, mount_volumes: dict | None) -> list[str]:
    paths = []
    for kind in ("azureFileShares", "azureBlobFileSystems", "fileServers", "unmanagedFileSystems"):
        for volume in (mount_volumes or {}).get(kind) or []:
            paths.append(f"{root}/{str(volume.get('relativeMountPath', '')).strip('/')}")
    return paths


def _codes(instance_view) -> list[str]:
    return [s.get("code", "") for s in ((instance_view or {}).get("statuses") or [])]


# ----- the adapter ----------------------------------------------------------------------------------


class VmssCompute:
    """Nodes as VM scale set instances (the `Compute` port)."""

    remote = True  # the VMs see nothing of the control plane's disk

    def __init__(
        self,
        credential,
        subscription_id: str,
        *,
        resource_group: str,
        location: str,
        control_plane_url: str,
        node_credential: Callable[[str], str],
        agent_package: str,
        cluster_properties: Callable[[str], dict | None] = lambda cluster_id: None,
        default_subnet_id: str | None = None,
        data_dir: str = DEFAULT_DATA_DIR,
        mount_root: Callable[[str], str] | None = None,
        file_server_address: Callable[[str], str | None] = lambda file_server_id: None,
        state_file: str | os.PathLike | None = None,
        heartbeat: float = 1.0,
        client: ComputeManagementClient | None = None,
        **client_kwargs,
    ):
        """`cluster_properties(cluster_id)` answers a cluster's wire properties (vmSize, vmPriority, ...);
        `mount_root(cluster_key)` where the cluster's volumes go on the VMs (AZ_BATCHAI_MOUNT_ROOT; by
        default `{data_dir}/clusters/{key}/mounts`, the layout of Settings.cluster_mount_root)."""
        self.client = client or ComputeManagementClient(credential, subscription_id, **client_kwargs)
        self.resource_group = resource_group
        self.location = location
        self.control_plane_url = control_plane_url
        self.node_credential = node_credential  # node id -> that node's credential
        self.agent_package = agent_package
        self.cluster_properties = cluster_properties
        self.default_subnet_id = default_subnet_id
        self.data_dir = data_dir.rstrip("/")
        self.mount_root = mount_root or (lambda key: f"{self.data_dir}/clusters/{key}/mounts")
        self.file_server_address = file_server_address
        self.heartbeat = heartbeat
        self.state_file = Path(state_file) if state_file else None
        self._lock = threading.RLock()
        self._scale_set_locks: dict[str, threading.Lock] = {}
        self._ensured: set[str] = set()
        self._deleting: set[tuple[str, str]] = set()  # (scale set, instance) we are deleting ourselves
        self._nodes: dict[str, dict] = self._load()  # node id -> {"scaleSet", "instanceId", "clusterKey"}

    # ----- scale sets ---------------------------------------------------------------------------

    def scale_set_model(self, cluster_key: str, cluster_id: str, properties: dict) -> m.VirtualMachineScaleSet:
        """The scale set a cluster's properties ask for, with capacity 0 (pure but for the adapter's settings)."""
        image = ((properties.get("virtualMachineConfiguration") or {}).get("imageReference")) or DEFAULT_IMAGE
        if image.get("virtualMachineImageId"):
            image_ref = m.ImageReference(id=image["virtualMachineImageId"])
        else:
            image_ref = m.ImageReference(
                publisher=image["publisher"], offer=image["offer"], sku=image["sku"], version=image.get("version") or "latest"
            )
        account = properties.get("userAccountSettings") or {}
        user = account.get("adminUserName")
        if not user:
            raise ValueError("the cluster has no userAccountSettings.adminUserName")
        key, password = account.get("adminUserSshPublicKey"), account.get("adminUserPassword")
        if not key and not password:
            raise ValueError("userAccountSettings needs an adminUserSshPublicKey or an adminUserPassword")
        linux = m.LinuxConfiguration(
            disable_password_authentication=not password,
            ssh=m.SshConfiguration(public_keys=[m.SshPublicKey(path=f"/home/{user}/.ssh/authorized_keys", key_data=key)]) if key else None,
        )
        subnet = (properties.get("subnet") or {}).get("id") or self.default_subnet_id
        if not subnet:
            raise ValueError("a scale set needs a subnet: give the cluster a subnet or the adapter a default_subnet_id")
        steps = mount_plan((properties.get("nodeSetup") or {}).get("mountVolumes"), self.mount_root(cluster_key), self.file_server_address)
        size = properties["vmSize"]
        gpu = is_gpu_size(size)
        script = custom_data(
            cluster_id=cluster_id,
            control_plane_url=self.control_plane_url,
            agent_package=self.agent_package,
            mount_script=render(steps, redact=False) if steps else "",
            heartbeat=self.heartbeat,
            gpu=gpu,
            mount_root=self.mount_root(cluster_key),
        )
        # the HPC image carries the driver; any other image on a GPU size gets it from the extension
        driver_in_image = not image.get("virtualMachineImageId") and str(image.get("publisher", "")).lower() == HPC_IMAGE_PUBLISHER
        extensions = None
        if gpu and not driver_in_image:
            extensions = m.VirtualMachineScaleSetExtensionProfile(
                extensions=[
                    m.VirtualMachineScaleSetExtension(
                        name="NvidiaGpuDriverLinux",
                        properties=m.VirtualMachineScaleSetExtensionProperties(
                            publisher=GPU_DRIVER_EXTENSION["publisher"],
                            type=GPU_DRIVER_EXTENSION["type"],
                            type_handler_version=GPU_DRIVER_EXTENSION["typeHandlerVersion"],
                            auto_upgrade_minor_version=True,
                            settings={},
                        ),
                    )
                ]
            )
        profile = m.VirtualMachineScaleSetVMProfile(
            os_profile=m.VirtualMachineScaleSetOSProfile(
                computer_name_prefix=f"bai{cluster_key.replace('-', '')[:8]}",
                admin_username=user,
                admin_password=password or None,
                custom_data=encode_custom_data(script),
                linux_configuration=linux,
            ),
            storage_profile=m.VirtualMachineScaleSetStorageProfile(
                image_reference=image_ref,
                os_disk=m.VirtualMachineScaleSetOSDisk(create_option="FromImage", caching="ReadWrite"),
            ),
            extension_profile=extensions,
            network_profile=m.VirtualMachineScaleSetNetworkProfile(
                network_interface_configurations=[
                    m.VirtualMachineScaleSetNetworkConfiguration(
                        name="nic",
                        properties=m.VirtualMachineScaleSetNetworkConfigurationProperties(
                            primary=True,
                            ip_configurations=[
                                m.VirtualMachineScaleSetIPConfiguration(
                                    name="ipconfig",
                                    properties=m.VirtualMachineScaleSetIPConfigurationProperties(
                                        subnet=m.ApiEntityReference(id=subnet), primary=True
                                    ),
                                )
                            ],
                        ),
                    )
                ]
            ),
        )
        if properties.get("vmPriority") == "lowpriority":
            profile.priority = "Spot"
            profile.eviction_policy = "Delete"
            profile.billing_profile = m.BillingProfile(max_price=-1)
        else:
            profile.priority = "Regular"
        return m.VirtualMachineScaleSet(
            location=self.location,
            tags={"batchai-cluster-key": cluster_key, "batchai-cluster": cluster_id[:256]},
            sku=m.Sku(name=size, tier="Standard", capacity=0),
            identity=m.VirtualMachineScaleSetIdentity(type="SystemAssigned") if any(isinstance(s, SecretFetch) for s in steps) else None,
            properties=m.VirtualMachineScaleSetProperties(
                orchestration_mode="Uniform",
                upgrade_policy=m.UpgradePolicy(mode="Manual"),
                overprovision=False,
                # InfiniBand links only the VMs of one placement group (at most 100 of them)
                single_placement_group=is_infiniband_size(size),
                virtual_machine_profile=profile,
            ),
        )

    def create_scale_set(self, cluster_key: str, cluster_id: str, properties: dict) -> str:
        """Creates (or updates) the cluster's scale set; returns its name once ARM reports it provisioned."""
        name = scale_set_name(cluster_key)
        model = self.scale_set_model(cluster_key, cluster_id, properties)
        self.client.virtual_machine_scale_sets.begin_create_or_update(self.resource_group, name, model).result()
        with self._lock:
            self._ensured.add(name)
        return name

    def ensure_scale_set(self, cluster_key: str, cluster_id: str, properties: dict | None = None) -> str:
        """The cluster's scale set, created if it does not exist yet."""
        name = scale_set_name(cluster_key)
        if name in self._ensured:
            return name
        try:
            self.client.virtual_machine_scale_sets.get(self.resource_group, name)
        except ResourceNotFoundError:
            properties = properties if properties is not None else self.cluster_properties(cluster_id)
            if not properties:
                raise LookupError(f"no properties for the cluster {cluster_id}: cannot create its scale set") from None
            return self.create_scale_set(cluster_key, cluster_id, properties)
        with self._lock:
            self._ensured.add(name)
        return name

    def capacity(self, cluster_key: str) -> int:
        vmss = self.client.virtual_machine_scale_sets.get(self.resource_group, scale_set_name(cluster_key))
        return int(((vmss.get("sku") or {}).get("capacity")) or 0)

    def scale(self, cluster_key: str, capacity: int) -> None:
        """Sets the capacity (a scale-in removes instances the platform picks: prefer stop_node for nodes)."""
        self._set_capacity(scale_set_name(cluster_key), capacity)

    def _set_capacity(self, name: str, capacity: int) -> None:
        update = m.VirtualMachineScaleSetUpdate(sku=m.Sku(capacity=int(capacity)))
        self.client.virtual_machine_scale_sets.begin_update(self.resource_group, name, update).result()

    def delete_cluster(self, cluster_key: str) -> None:
        """Deletes the cluster's scale set and every instance in it."""
        name = scale_set_name(cluster_key)
        try:
            self.client.virtual_machine_scale_sets.begin_delete(self.resource_group, name).result()
        except ResourceNotFoundError:
            pass
        with self._lock:
            self._ensured.discard(name)
            for node_id in [k for k, v in self._nodes.items() if v["scaleSet"] == name]:
                del self._nodes[node_id]
            self._save()

    def instances(self, cluster_key: str, *, instance_view: bool = True) -> list[dict]:
        """The scale set's VMs: {"instanceId", "provisioningState", "statuses" (instance view codes)}."""
        return self._instances(scale_set_name(cluster_key), instance_view=instance_view)

    def _instances(self, name: str, *, instance_view: bool = True) -> list[dict]:
        try:
            vms = list(
                self.client.virtual_machine_scale_set_vms.list(self.resource_group, name, expand="instanceView" if instance_view else None)
            )
        except ResourceNotFoundError:
            return []
        out = []
        for vm in vms:
            props = vm.get("properties") or {}
            out.append(
                {
                    "instanceId": str(vm.get("instanceId")),
                    "provisioningState": props.get("provisioningState"),
                    "statuses": _codes(props.get("instanceView")),
                }
            )
        return out

    def evicted_instances(self, cluster_key: str) -> list[str]:
        """Instances a Spot eviction took: deallocated (policy Deallocate), or being deleted without us asking (Delete)."""
        return self._evicted_of(scale_set_name(cluster_key), self._instances(scale_set_name(cluster_key)))

    def _evicted_of(self, name: str, instances: list[dict]) -> list[str]:
        out = []
        for vm in instances:
            deleting = (vm["provisioningState"] or "").lower() == "deleting" and (name, vm["instanceId"]) not in self._deleting
            if deleting or any(code in _EVICTED_POWER for code in vm["statuses"]):
                out.append(vm["instanceId"])
        return out

    # ----- the Compute port -------------------------------------------------------------------

    def node_root(self, cluster_key: str, node_name: str) -> str:
        """A node's root directory on its VM (nothing is created here)."""
        return f"{self.data_dir}/nodes/{cluster_key}/{node_name}"

    def start_node(self, *, node_id: str, cluster_id: str, cluster_key: str, name: str) -> dict:
        """Grows the scale set by one instance and names it; the agent reports its address when it registers."""
        (answer,) = self.start_nodes(cluster_id=cluster_id, cluster_key=cluster_key, nodes=[(node_id, name)])
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def start_nodes(self, *, cluster_id: str, cluster_key: str, nodes: list[tuple[str, str]]) -> list[dict | Exception]:
        """Grows the scale set by len(nodes) in ONE capacity update, then names the new instances with Run
        Commands, at most RUN_COMMAND_WORKERS at once. One answer per (node id, name), in order: its handle,
        or the error that stopped it (an instance that could not be named is deleted: unnamed, it would idle).
        Raises (nothing started) when the capacity update fails."""
        if not nodes:
            return []
        scale_set = self.ensure_scale_set(cluster_key, cluster_id)
        with self._scale_set_lock(scale_set):
            before = {vm["instanceId"] for vm in self._instances(scale_set, instance_view=False)}
            self._set_capacity(scale_set, self.capacity(cluster_key) + len(nodes))
            with self._lock:
                taken = {v["instanceId"] for v in self._nodes.values() if v["scaleSet"] == scale_set}
            new = sorted(
                (
                    vm["instanceId"]
                    for vm in self._instances(scale_set, instance_view=False)
                    if vm["instanceId"] not in before and vm["instanceId"] not in taken
                ),
                key=lambda i: (len(i), i),
            )
            with self._lock:
                for (node_id, _), instance in zip(nodes, new, strict=False):
                    self._nodes[node_id] = {"scaleSet": scale_set, "instanceId": instance, "clusterKey": cluster_key}
                self._save()

        def name_instance(node_id: str, name: str, instance: str | None) -> dict | Exception:
            if instance is None:
                return RuntimeError(f"the scale set {scale_set} grew but no new instance appeared for {name}")
            root = self.node_root(cluster_key, name)
            command = m.RunCommandInput(
                command_id="RunShellScript",
                script=node_env_script(node_id=node_id, name=name, root=root, credential=self.node_credential(node_id)),
            )
            try:
                self.client.virtual_machine_scale_set_vms.begin_run_command(self.resource_group, scale_set, instance, command).result()
            except Exception as exc:  # noqa: BLE001 - this node's answer; the others go on
                self.stop_node({"id": node_id})
                return exc
            return {"id": node_id, "pid": None, "address": None, "root": root, "machine": f"{scale_set}/{instance}"}

        instances: list[str | None] = [*new[: len(nodes)], *([None] * (len(nodes) - len(new)))]
        with ThreadPoolExecutor(max_workers=min(RUN_COMMAND_WORKERS, len(nodes)), thread_name_prefix="vmss-name") as pool:
            return list(pool.map(lambda args: name_instance(*args), [(n, name, i) for (n, name), i in zip(nodes, instances, strict=True)]))

    def instance_of(self, node_id: str) -> tuple[str, str] | None:
        """(scale set, instance id) of a node this adapter started."""
        entry = self._nodes.get(node_id)
        return (entry["scaleSet"], entry["instanceId"]) if entry else None

    def _where(self, node: dict) -> tuple[str, str] | None:
        """(scale set, instance id) of a node: its stored machine, else this adapter's own map."""
        machine = node.get("machine")
        if machine and "/" in machine:
            scale_set, instance = machine.split("/", 1)
            return scale_set, instance
        return self.instance_of(str(node.get("id") or ""))

    def is_alive(self, node: dict) -> bool:
        """The instance exists, has not failed, and is not stopped or deallocated (a booting one is alive)."""
        where = self._where(node)
        if where is None:
            return False
        try:
            view = self.client.virtual_machine_scale_set_vms.get_instance_view(self.resource_group, *where)
        except ResourceNotFoundError:
            return False
        codes = _codes(view)
        if any(
            code.lower() in ("provisioningstate/failed", "provisioningstate/deleting")
            or code.lower().startswith("provisioningstate/failed/")
            for code in codes
        ):
            return False
        return not any(code in _GONE_POWER for code in codes)

    def stop_node(self, node: dict, *, grace: float = 5.0) -> None:
        """Deletes the node's instance (no grace on a VM: its tasks die with it; the capacity drops by one)."""
        node_id = str(node.get("id") or "")
        where = self._where(node)
        if where is None:
            return
        scale_set, instance = where
        with self._lock:
            self._deleting.add(where)
        try:
            self.client.virtual_machine_scale_sets.begin_delete_instances(
                self.resource_group,
                scale_set,
                m.VirtualMachineScaleSetVMInstanceRequiredIDs(instance_ids=[instance]),
            ).result()
        except ResourceNotFoundError:
            pass
        with self._lock:
            self._deleting.discard(where)
            self._nodes.pop(node_id, None)
            self._save()

    def kill_node(self, node: dict) -> None:
        self.stop_node(node, grace=0.0)

    def evict(self, node: dict) -> None:
        """Simulate Eviction of the node's Spot instance: ARM accepts at once (204) and the platform evicts
        it soon after, which `evicted` then reports. ARM refuses an instance that is not Spot (an error
        raised as is: a cluster's priority is checked before this is called). A gone instance is no error."""
        where = self._where(node)
        if where is None:
            return
        try:
            self.client.virtual_machine_scale_set_vms.simulate_eviction(self.resource_group, *where)
        except ResourceNotFoundError:
            pass

    def evicted(self, nodes: list[dict]) -> list[str]:
        """Ids of the given nodes whose Spot instances were evicted (deleted or deallocated by the platform)."""
        by_scale_set: dict[str, list[tuple[str, str]]] = {}
        for node in nodes:
            where = self._where(node)
            if where is not None and where not in self._deleting:
                by_scale_set.setdefault(where[0], []).append((node["id"], where[1]))
        out = []
        for scale_set, members in by_scale_set.items():
            instances = self._instances(scale_set)
            present = {vm["instanceId"] for vm in instances}
            evicted = set(self._evicted_of(scale_set, instances))
            out += [node_id for node_id, instance in members if instance not in present or instance in evicted]
        return out

    def mount(self, root: str, mount_volumes: dict | None, file_server_export) -> list[str]:
        """Mounts happen on the VMs (custom data runs the mount plan): the planned mount paths under `root`."""
        return _mount_paths(root, mount_volumes)

    def unmount(self, root: str, mount_volumes: dict | None) -> None:
        """Nothing to do here: a cluster's volumes go away with its VMs."""

    def close(self) -> None:
        """Closes the ARM client's connections (the VMs keep running)."""
        self.client.close()

    # ----- internals --------------------------------------------------------------------------

    def _scale_set_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._scale_set_locks.setdefault(name, threading.Lock())

    def _load(self) -> dict[str, dict]:
        if self.state_file is None:
            return {}
        try:
            return dict(json.loads(self.state_file.read_text()).get("nodes") or {})
        except (OSError, ValueError):
            return {}

    def _save(self) -> None:
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps({"nodes": self._nodes}, indent=1, sort_keys=True))
        os.replace(tmp, self.state_file)
