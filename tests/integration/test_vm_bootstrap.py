"""A scale set's custom data, RUN as cloud-init runs it (bash, as root), in a throw-away root: the paths it
writes (/etc, /opt, /usr/local/bin, /var/log, /mnt) are overlays in a mount namespace of its own, and the
commands that would reach the network or the machine (apt-get, curl, systemctl, mount, blobfuse, useradd,
...) are stubs on PATH that record their arguments. Hostile account and container names must run nothing
and reach the config files as they were written."""

from __future__ import annotations

import base64
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from batchai.adapters.vmss_compute import VmssCompute
from tests.support.fake_arm import RG, SUB, FakeArm, FakeCredential

KEY = "3f1c2d4e-aaaa-bbbb-cccc-1234567890ab"
CLUSTER_ID = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.BatchAI/workspaces/ws/clusters/c1"
SUBNET = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/virtualNetworks/v/subnets/s"
OVERLAID = ("/etc", "/opt", "/usr/local/bin", "/var/log", "/mnt")
STUBBED = "apt-get add-apt-repository dpkg lsb_release gpg systemctl mount umount blobfuse useradd docker mpirun nvidia-ctk".split()


def _namespaces_work() -> str | None:
    if os.geteuid() != 0:
        return "needs root (mount namespaces and overlays), as CI has"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot make a mount namespace here: {probe.stderr.strip()}"


pytestmark = pytest.mark.skipif(_namespaces_work() is not None, reason=str(_namespaces_work()))


def _stubs(bin_dir: Path, log: Path) -> None:
    bin_dir.mkdir()
    record = f'printf "%s" "$(basename "$0")" >> {shlex.quote(str(log))}; for a in "$@"; do printf " %q" "$a" >> {shlex.quote(str(log))}; done; echo >> {shlex.quote(str(log))}\n'
    for name in STUBBED:
        (bin_dir / name).write_text(f"#!/bin/bash\n{record}exit 0\n")
    # curl: the instance metadata token, then the Key Vault secret (a hostile value too); `-o FILE` downloads
    (bin_dir / "curl").write_text(
        "#!/bin/bash\n" + record + 'for a in "$@"; do case "$a" in\n'
        '  *169.254.169.254*) echo \'{"access_token": "t"}\'; exit 0;;\n'
        '  *vault.azure.net*) echo \'{"value": "kv$(touch \'"$PWNED"\'/kv)"}\'; exit 0;;\n'
        "esac; done\n"
        'while [ $# -gt 0 ]; do if [ "$1" = -o ]; then touch "$2"; fi; shift; done\n'
    )
    # python3: the real one, but `-m venv DIR` makes a venv whose python is a stub (pip install reaches nothing)
    (bin_dir / "venv-python").write_text(f"#!/bin/bash\n{record}exit 0\n")
    (bin_dir / "python3").write_text(
        "#!/bin/bash\n"
        'if [ "$1" = -m ] && [ "$2" = venv ]; then mkdir -p "$3/bin"; cp "$(dirname "$0")/venv-python" "$3/bin/python"; exit 0; fi\n'
        f'exec {shlex.quote(sys.executable)} "$@"\n'
    )
    for path in bin_dir.iterdir():
        path.chmod(0o755)


def test_hostile_volume_names_run_nothing_and_reach_the_config_files_literally(tmp_path):
    pwned = tmp_path / "pwned"
    pwned.mkdir()
    # names may hold no '/' or '.' (the API refuses them): these reach $PWNED (the test's environment) by cd
    hostile_account = "$(cd $PWNED; touch account)"
    hostile_container = "c\nEOF\n$(cd $PWNED; touch container)\nBATCHAI_MOUNTS\n`cd $PWNED; touch backtick`"
    hostile_key = f"k'ey\"$(touch {pwned}/key)"
    share_user = "`cd $PWNED; touch share`"
    volumes = {
        "azureBlobFileSystems": [
            {
                "accountName": hostile_account,
                "containerName": hostile_container,
                "relativeMountPath": "bfs",
                "credentials": {"accountKey": hostile_key},
            },
            {
                "accountName": "kvacct",
                "containerName": "kv",
                "relativeMountPath": "kvfs",
                "credentials": {
                    "accountKeySecretReference": {
                        "sourceVault": {"id": "/subscriptions/s/resourceGroups/r/providers/Microsoft.KeyVault/vaults/v"},
                        "secretUrl": "https://v.vault.azure.net/secrets/k",
                    }
                },
            },
        ],
        "azureFileShares": [
            {
                "azureFileUrl": "https://acct.file.core.windows.net/data",
                "accountName": share_user,
                "relativeMountPath": "afs",
                "credentials": {"accountKey": hostile_key},
            }
        ],
    }
    vm = tmp_path / "vm"  # the VMs' data dir: the mount root and its config files land here, on the real disk
    compute = VmssCompute(
        FakeCredential(),
        SUB,
        resource_group=RG,
        location="westeurope",
        control_plane_url=f"https://cp.example.net/$(touch {pwned}/url)",
        node_credential=lambda node_id: "unused",
        agent_package=f"pkg$(touch {pwned}/package)",
        data_dir=str(vm),
        transport=FakeArm(),
    )
    model = compute.scale_set_model(
        KEY,
        CLUSTER_ID,
        {
            "vmSize": "Standard_ND96asr_v4",
            "userAccountSettings": {"adminUserName": "u", "adminUserSshPublicKey": "ssh-rsa AAAA u@h"},
            "subnet": {"id": SUBNET},
            "nodeSetup": {"mountVolumes": volumes},
        },
    )
    script = base64.b64decode(model.as_dict()["properties"]["virtualMachineProfile"]["osProfile"]["customData"]).decode()
    (tmp_path / "custom-data.sh").write_text(script)

    log = tmp_path / "calls.log"
    _stubs(tmp_path / "bin", log)
    out = tmp_path / "out"
    out.mkdir()
    layers = tmp_path / "layers"
    setup = ["set -e"]
    for i, path in enumerate(OVERLAID):
        upper, work = layers / f"{i}-upper", layers / f"{i}-work"
        # /bin/mount: `mount` on PATH is a stub; mountpoint proves the overlay is there before anything runs
        setup.append(f"mkdir -p {upper} {work}; /bin/mount -t overlay overlay -o lowerdir={path},upperdir={upper},workdir={work} {path}")
        setup.append(f"/bin/mountpoint -q {path}")
    copy_out = "; ".join(
        f"cp {p} {out}/"
        for p in (
            "/opt/batchai/mount.sh",
            "/opt/batchai/start-agent.sh",
            "/var/log/batchai-bootstrap.log",
            "/usr/local/bin/batchai-fetch-secret",
        )
    )
    inner = "; ".join(setup) + f"; set +e; bash {tmp_path}/custom-data.sh; echo $? > {out}/rc; {copy_out}"
    env = {
        "PATH": f"{tmp_path / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PWNED": str(pwned),
        "HOME": str(tmp_path),
    }
    run = subprocess.run(
        ["/usr/bin/unshare", "--mount", "--propagation", "private", "bash", "-c", inner],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    bootstrap_log = (out / "batchai-bootstrap.log").read_text() if (out / "batchai-bootstrap.log").exists() else run.stderr
    assert run.returncode == 0 and (out / "rc").read_text().strip() == "0", bootstrap_log

    # nothing ran: not at boot, not in the mount script, not from the Key Vault value
    assert sorted(p.name for p in pwned.iterdir()) == []
    mounts = vm / "clusters" / KEY / "mounts"
    blob_config = mounts / ".blobfuse" / "bfs.cfg"
    assert blob_config.read_text() == f"accountName {hostile_account}\naccountKey {hostile_key}\ncontainerName {hostile_container}\n"
    assert oct(blob_config.stat().st_mode & 0o777) == "0o600" and oct((mounts / ".blobfuse").stat().st_mode & 0o777) == "0o700"
    assert (mounts / ".cifs" / "afs.cred").read_text() == f"username={share_user}\npassword={hostile_key}\n"
    # the Key Vault key is fetched on the node and expanded into the file, as it is, once
    assert (mounts / ".blobfuse" / "kvfs.cfg").read_text() == f"accountName kvacct\naccountKey kv$(touch {pwned}/kv)\ncontainerName kv\n"

    calls = log.read_text().splitlines()
    # the mounts ran with their literal paths and options
    assert (
        f"blobfuse {shlex.quote(str(mounts / 'bfs'))} --tmp-path=/mnt/resource/blobfusetmp/bfs --config-file={mounts}/.blobfuse/bfs.cfg"
        in "\n".join(c.replace("\\", "") for c in calls)
    )
    assert any(c.startswith("mount -t cifs //acct.file.core.windows.net/data") for c in calls)
    assert any(c.startswith("python -m pip install -q") and "pkg" in c for c in calls)  # the agent package, quoted
    assert "nvidia-ctk runtime configure --runtime=docker" in calls and "systemctl enable --now batchai-agent.service" in calls
    assert any(c.startswith("useradd --system") and c.endswith("batchai-job") for c in calls)
    launcher = (out / "start-agent.sh").read_text()
    assert f"--url 'https://cp.example.net/$(touch {pwned}/url)'" in launcher and "--run-as batchai-job" in launcher
    # the overlays kept the machine as it was
    assert not Path("/opt/batchai").exists() and not Path("/etc/systemd/system/batchai-agent.service").exists()
