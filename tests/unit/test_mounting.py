"""The VM mount plan: commands per volume kind, defaults, Key Vault keys, redaction."""

from __future__ import annotations

from batchai.model import MountVolumes
from batchai.mounting import MakeDir, Run, SecretFetch, Var, WriteFile, plan_mounts, plan_unmounts, render

ROOT = "/mnt/batch/tasks/shared/LS_root/mounts"
FS_ID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.BatchAI/workspaces/w/fileServers/nfs"


def volumes(**wire) -> MountVolumes:
    return MountVolumes.model_validate(wire)


def test_azure_files_mounts_with_cifs_and_the_default_modes():
    steps = plan_mounts(
        volumes(
            azureFileShares=[
                {
                    "azureFileUrl": "https://acct.file.core.windows.net/data",
                    "credentials": {"accountKey": "KEY=="},
                    "relativeMountPath": "afs",
                }
            ]
        ),
        ROOT,
    )
    credentials = f"{ROOT}/.cifs/afs.cred"
    assert steps[:3] == [
        MakeDir(f"{ROOT}/afs"),
        MakeDir(f"{ROOT}/.cifs", 0o700),
        WriteFile(credentials, ("username=acct\npassword=", "KEY==", "\n"), secret="KEY=="),
    ]
    assert steps[3] == Run(
        [
            "mount",
            "-t",
            "cifs",
            "//acct.file.core.windows.net/data",
            f"{ROOT}/afs",
            "-o",
            f"vers=3.0,credentials={credentials},dir_mode=0777,file_mode=0777,serverino",
        ],
        mounts=f"{ROOT}/afs",
    )


def test_blob_containers_mount_with_blobfuse_and_a_private_config_file():
    steps = plan_mounts(
        volumes(
            azureBlobFileSystems=[
                {
                    "accountName": "acct",
                    "containerName": "c",
                    "relativeMountPath": "bfs",
                    "credentials": {"accountKey": "KEY"},
                    "mountOptions": "-o allow_other",
                }
            ]
        ),
        ROOT,
    )
    config = next(s for s in steps if isinstance(s, WriteFile))
    assert config.mode == 0o600 and "".join(config.content) == "accountName acct\naccountKey KEY\ncontainerName c\n"
    assert MakeDir(f"{ROOT}/.blobfuse", 0o700) in steps  # the config file's directory, private
    run = steps[-1]
    assert (
        run.argv[:2] == ["blobfuse", f"{ROOT}/bfs"]
        and f"--config-file={config.path}" in run.argv
        and run.argv[-2:] == ["-o", "allow_other"]
    )


def test_file_servers_mount_their_export_over_nfs():
    steps = plan_mounts(
        volumes(fileServers=[{"fileServer": {"id": FS_ID}, "sourceDirectory": "data", "relativeMountPath": "nfs", "mountOptions": "rw"}]),
        ROOT,
        file_server_address=lambda i: "10.0.0.4" if i == FS_ID else None,
    )
    assert steps == [
        MakeDir(f"{ROOT}/nfs"),
        Run(["mount", "-t", "nfs", "10.0.0.4:/mnt/data/data", f"{ROOT}/nfs", "-o", "rw"], mounts=f"{ROOT}/nfs"),
    ]


def test_unmanaged_file_systems_get_the_mount_path_appended():
    steps = plan_mounts(
        volumes(unmanagedFileSystems=[{"mountCommand": "mount -t glusterfs 10.0.0.9:/vol", "relativeMountPath": "gfs"}]), ROOT
    )
    assert steps[-1].argv == ["/bin/bash", "-c", f"mount -t glusterfs 10.0.0.9:/vol {ROOT}/gfs"]
    assert plan_unmounts(steps) == [Run(["umount", "-l", f"{ROOT}/gfs"])]


def test_key_vault_keys_are_fetched_on_the_node_not_invented():
    ref = {
        "sourceVault": {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v"},
        "secretUrl": "https://v.vault.azure.net/secrets/key",
    }
    steps = plan_mounts(
        volumes(
            azureFileShares=[
                {
                    "azureFileUrl": "https://acct.file.core.windows.net/data",
                    "credentials": {"accountKeySecretReference": ref},
                    "relativeMountPath": "afs",
                }
            ]
        ),
        ROOT,
    )
    assert steps[0] == SecretFetch("AFS_KEY_0", "https://v.vault.azure.net/secrets/key")
    credentials = next(s for s in steps if isinstance(s, WriteFile))
    assert credentials.content == ("username=acct\npassword=", Var("AFS_KEY_0"), "\n")
    assert "'username=acct\npassword=' \"${AFS_KEY_0}\" '\n'" in render(steps)  # expanded by the shell, and only it


def test_rendering_masks_credentials():
    steps = plan_mounts(
        volumes(
            azureFileShares=[
                {
                    "azureFileUrl": "https://acct.file.core.windows.net/data",
                    "credentials": {"accountKey": "hush1"},
                    "relativeMountPath": "afs",
                }
            ],
            azureBlobFileSystems=[
                {"accountName": "acct", "containerName": "c", "relativeMountPath": "bfs", "credentials": {"accountKey": "hush2"}}
            ],
        ),
        ROOT,
    )
    script = render(steps)
    assert "hush" not in script and "password=' '***'" in script and "accountKey ' '***'" in script
    assert "hush1" in render(steps, redact=False)
