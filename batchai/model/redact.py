"""Remove secrets from stored wire dicts before they go out in a response (reference §3.1).

Pure: the input is never mutated; each function returns a copy (deep where redaction changes it,
sharing the rest with the input: render it, do not change it) without
- `secrets[].value` (name and any KeyVault reference are kept),
- storage `credentials.accountKey` (so credentials come back as `{}` or with the reference),
- container registry `credentials.password`,
- `userAccountSettings.adminUserPassword` and `adminUserSshPublicKey`,
- App Insights `instrumentationKey`.
"""

from __future__ import annotations

import copy


def _drop(obj, *keys) -> None:
    if isinstance(obj, dict):
        for key in keys:
            obj.pop(key, None)


def _secrets(items) -> None:
    for item in items if isinstance(items, list) else []:
        _drop(item, "value")


def _mounts(volumes) -> None:
    if not isinstance(volumes, dict):
        return
    for key in ("azureFileShares", "azureBlobFileSystems", "fileServers", "unmanagedFileSystems"):
        for mount in volumes.get(key) or []:
            if isinstance(mount, dict):
                _drop(mount.get("credentials"), "accountKey")


def _user(settings) -> None:
    _drop(settings, "adminUserPassword", "adminUserSshPublicKey")


_JOB_SECRETS = ("secrets", "mountVolumes", "containerSettings")  # the job's parts that may hold secrets


def redact_job(props: dict) -> dict:
    if not isinstance(props, dict):
        return copy.deepcopy(props)
    # listing a thousand jobs deep-copied a tenth of a core away: copy only what may change
    out = {k: copy.deepcopy(v) if k in _JOB_SECRETS else v for k, v in props.items()}
    _secrets(out.get("secrets"))
    _mounts(out.get("mountVolumes"))
    registry = (out.get("containerSettings") or {}).get("imageSourceRegistry") if isinstance(out.get("containerSettings"), dict) else None
    if isinstance(registry, dict):
        _drop(registry.get("credentials"), "password")
    return out


def redact_cluster(props: dict) -> dict:
    out = copy.deepcopy(props)
    if not isinstance(out, dict):
        return out
    _user(out.get("userAccountSettings"))
    setup = out.get("nodeSetup")
    if isinstance(setup, dict):
        task = setup.get("setupTask")
        if isinstance(task, dict):
            _secrets(task.get("secrets"))
        _mounts(setup.get("mountVolumes"))
        counters = setup.get("performanceCountersSettings")
        if isinstance(counters, dict):
            _drop(counters.get("appInsightsReference"), "instrumentationKey")
    return out


def redact_file_server(props: dict) -> dict:
    out = copy.deepcopy(props)
    if not isinstance(out, dict):
        return out
    ssh = out.get("sshConfiguration")
    if isinstance(ssh, dict):
        _user(ssh.get("userAccountSettings"))
    _user(out.get("userAccountSettings"))
    return out
