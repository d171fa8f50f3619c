"""A fake ARM at the azure-core transport boundary, for the real azure-mgmt-compute client.

The fake transport (an azure-core `HttpTransport`) records every request the SDK sends and answers
like ARM would for one resource group: scale sets, their VMs, long-running operations (done at once,
or through an Azure-AsyncOperation status URL), and Spot evictions (Simulate Eviction evicts at once,
with the scale set's eviction policy). Nothing leaves the process.
"""

from __future__ import annotations

import json
import re
import threading
from urllib.parse import parse_qs, urlsplit

from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import case_insensitive_dict

SUB = "00000000-0000-0000-0000-000000000001"
RG = "rg-batchai"


class _Internal:
    def close(self):
        pass


class CannedResponse(HttpResponseImpl):
    def __init__(self, request, status: int, body, headers: dict | None = None):
        content = b"" if body is None else json.dumps(body).encode()
        headers = case_insensitive_dict({"Content-Type": "application/json", **(headers or {})})
        super().__init__(
            request=request,
            internal_response=_Internal(),
            status_code=status,
            reason="OK" if status < 400 else "Error",
            content_type="application/json",
            headers=headers,
            stream_download_generator=None,
        )
        self._content = content


class FakeCredential:
    def __init__(self):
        self.scopes = []

    def get_token(self, *scopes, **kwargs):
        self.scopes.append(scopes)
        return AccessToken("fake-token", 4102444800)


class FakeArm(HttpTransport):
    """Records requests; keeps one resource group's scale sets and VMs; answers LROs at once or via polling."""

    def __init__(self, *, async_operations: bool = False):
        self.requests: list[dict] = []
        self.scale_sets: dict[str, dict] = {}
        self.vms: dict[str, dict[str, dict]] = {}  # scale set -> instance id -> VM JSON
        self.next_instance: dict[str, int] = {}
        self.async_operations = async_operations
        self.operations: dict[str, dict] = {}
        self.fail_run_command = False
        self.fail_run_command_for: set[str] = set()
        self.machines: dict[str, dict] = {}  # standalone VMs (file servers) by name
        self.nics: dict[
            str, dict
        ] = {}  # network interfaces by id (made with a VM, as ARM makes them)  # instance ids whose Run Command fails
        self.on_capacity = lambda capacity: None  # called as a capacity update arrives, before it is applied
        self._lock = threading.Lock()  # requests may come from several threads (start_nodes names instances at once)

    # HttpTransport
    def open(self):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *args):
        pass

    def send(self, request, **kwargs):
        url = urlsplit(request.url)
        body = request.content
        if isinstance(body, bytes):
            body = body.decode()
        parsed = json.loads(body) if body else None
        self.requests.append(
            {"method": request.method, "path": url.path, "query": parse_qs(url.query), "body": parsed, "headers": dict(request.headers)}
        )
        with self._lock:
            status, payload, headers = self.handle(request.method, url.path, parse_qs(url.query), parsed, request.url)
        return CannedResponse(request, status, payload, headers)

    # ARM
    def _lro(self, method: str, status: int, payload, url: str):
        """Done at once (provisioningState in the body), or 201/202 + Azure-AsyncOperation polled to Succeeded."""
        if not self.async_operations:
            return status, payload, {}
        op = f"op{len(self.operations)}"
        self.operations[op] = {"status": "Succeeded"}
        base = url.split("/subscriptions/")[0]
        status = {"PUT": 201, "PATCH": 200}.get(method, 202)  # what the SDK accepts for each, as ARM answers
        return (
            status,
            payload if status != 202 else None,
            {
                "Azure-AsyncOperation": f"{base}/subscriptions/{SUB}/providers/Microsoft.Compute/locations/westeurope/operations/{op}?api-version=2026-04-01",
                "Retry-After": "0",
            },
        )

    def _vm(self, name: str, instance: str, *, state="Succeeded", power="PowerState/running") -> dict:
        return {
            "name": f"{name}_{instance}",
            "instanceId": instance,
            "id": f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}/virtualMachines/{instance}",
            "location": "westeurope",
            "properties": {
                "provisioningState": state,
                "instanceView": {"statuses": [{"code": f"ProvisioningState/{state.lower()}"}, {"code": power}]},
            },
        }

    def set_capacity(self, name: str, capacity: int):
        vms = self.vms.setdefault(name, {})
        while len(vms) < capacity:
            i = self.next_instance.get(name, 0)
            self.next_instance[name] = i + 1
            vms[str(i)] = self._vm(name, str(i))
        self.scale_sets[name]["sku"]["capacity"] = capacity

    def handle(self, method, path, query, body, url):
        m = re.match(r".*/operations/(op\d+)$", path)
        if m:
            return 200, {"status": self.operations[m.group(1)]["status"], "name": m.group(1)}, {}
        m = re.match(r".*/providers/Microsoft\.Network/networkInterfaces/[^/]+$", path)
        if m:
            return (200, self.nics[path], {}) if path in self.nics and method == "GET" else (404, {"error": {"code": "NotFound"}}, {})
        m = re.match(r".*/providers/Microsoft\.Compute/virtualMachines/([^/]+)$", path)
        if m:
            return self._machine(method, m.group(1), path, body, url)
        m = re.match(r".*/virtualMachineScaleSets/([^/]+)(/.*)?$", path)
        if not m:
            return 404, {"error": {"code": "NotFound", "message": path}}, {}
        name, rest = m.group(1), m.group(2) or ""
        not_found = (404, {"error": {"code": "ResourceNotFound", "message": f"{name} not found"}}, {})
        if rest == "":
            if method == "GET":
                return (200, self.scale_sets[name], {}) if name in self.scale_sets else not_found
            if method == "PUT":
                stored = json.loads(json.dumps(body))
                stored.update(name=name, id=path)
                stored.setdefault("properties", {})["provisioningState"] = "Succeeded"
                self.scale_sets[name] = stored
                self.set_capacity(name, stored["sku"]["capacity"])
                return self._lro(method, 200, stored, url)
            if method == "PATCH":
                if name not in self.scale_sets:
                    return not_found
                self.on_capacity(body["sku"]["capacity"])
                self.set_capacity(name, body["sku"]["capacity"])
                return self._lro(method, 200, self.scale_sets[name], url)
            if method == "DELETE":
                if name not in self.scale_sets:
                    return not_found
                del self.scale_sets[name]
                self.vms.pop(name, None)
                return self._lro(method, 200, None, url) if self.async_operations else (200, None, {})
        if name not in self.scale_sets:
            return not_found
        vms = self.vms.setdefault(name, {})
        if rest == "/delete" and method == "POST":
            for i in body["instanceIds"]:
                vms.pop(i, None)
            self.scale_sets[name]["sku"]["capacity"] = len(vms)
            return self._lro(method, 200, None, url) if self.async_operations else (200, None, {})
        if rest == "/virtualMachines" and method == "GET":
            expand = query.get("$expand") == ["instanceView"]
            values = []
            for vm in vms.values():
                vm = json.loads(json.dumps(vm))
                if not expand:
                    vm["properties"].pop("instanceView", None)
                values.append(vm)
            return 200, {"value": values}, {}
        m = re.match(r"/virtualMachines/([^/]+)(/.*)$", rest)
        if m:
            instance, action = m.group(1), m.group(2)
            if instance not in vms:
                return not_found
            if action == "/instanceView" and method == "GET":
                return 200, vms[instance]["properties"]["instanceView"], {}
            if action == "/runCommand" and method == "POST":
                if self.fail_run_command or instance in self.fail_run_command_for:
                    return 409, {"error": {"code": "Conflict", "message": "Run command extension execution is in progress."}}, {}
                return self._lro(method, 200, {"value": [{"code": "ProvisioningState/succeeded", "message": "Enable succeeded"}]}, url)
            if action == "/simulateEviction" and method == "POST":  # the platform evicts at once here
                profile = self.scale_sets[name]["properties"]["virtualMachineProfile"]
                if profile.get("priority") != "Spot":  # the code is ours: ARM's own is not documented
                    return 409, {"error": {"code": "OperationNotAllowed", "message": "Only Spot VMs can be evicted."}}, {}
                if profile.get("evictionPolicy") == "Deallocate":
                    vms[instance] = self._vm(name, instance, power="PowerState/deallocated")
                else:
                    del vms[instance]
                    self.scale_sets[name]["sku"]["capacity"] = len(vms)
                return 204, None, {}
        return 400, {"error": {"code": "Unexpected", "message": f"{method} {path}"}}, {}

    def _machine(self, method, name, path, body, url):
        """A standalone VM: PUT makes it (and its network interface, with the next private address), GET, DELETE."""
        if method == "PUT":
            stored = json.loads(json.dumps(body))
            nic = path.split("/providers/")[0] + f"/providers/Microsoft.Network/networkInterfaces/{name}-nic"
            address = f"10.40.0.{4 + len(self.machines)}"
            self.nics[nic] = {
                "id": nic,
                "properties": {"ipConfigurations": [{"name": "ipconfig", "properties": {"privateIPAddress": address}}]},
            }
            stored.update(name=name, id=path)
            stored["properties"]["provisioningState"] = "Succeeded"
            stored["properties"]["networkProfile"]["networkInterfaces"] = [{"id": nic}]
            self.machines[name] = stored
            return self._lro(method, 200, stored, url)
        if name not in self.machines:
            return 404, {"error": {"code": "ResourceNotFound", "message": f"{name} not found"}}, {}
        if method == "GET":
            return 200, self.machines[name], {}
        if method == "DELETE":
            vm = self.machines.pop(name)
            for nic in vm["properties"]["networkProfile"]["networkInterfaces"]:
                self.nics.pop(nic["id"], None)
            return self._lro(method, 200, None, url) if self.async_operations else (200, None, {})
        return 400, {"error": {"code": "Unexpected", "message": f"{method} {path}"}}, {}

    def of(self, method: str, suffix: str = "") -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"].endswith(suffix)]
