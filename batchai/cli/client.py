"""A small REST client for the CLI: ARM paths, bearer auth, paging and long-running operations."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from batchai import API_VERSION

NOT_FOUND = 3  # the exit code when the resource does not exist (az's)


class CliError(Exception):
    """An error the CLI prints as one line and exits with `exit_code` for (1; NOT_FOUND for a 404)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Client:
    url: str
    token: str
    subscription: str
    resource_group: str
    timeout: float = 30.0

    def __post_init__(self):
        self.http = httpx.Client(base_url=self.url.rstrip("/"), timeout=self.timeout, headers={"Authorization": f"Bearer {self.token}"})

    # -- paths --------------------------------------------------------------------------
    def workspace(self, ws: str) -> str:
        return f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}/providers/Microsoft.BatchAI/workspaces/{ws}"

    def cluster(self, ws: str, name: str) -> str:
        return f"{self.workspace(ws)}/clusters/{name}"

    def experiment(self, ws: str, name: str) -> str:
        return f"{self.workspace(ws)}/experiments/{name}"

    def job(self, ws: str, exp: str, name: str) -> str:
        return f"{self.experiment(ws, exp)}/jobs/{name}"

    # -- verbs --------------------------------------------------------------------------
    def request(self, method: str, path: str, *, params: dict | None = None, json=None) -> httpx.Response:
        params = {**(params or {}), "api-version": API_VERSION}
        try:
            response = self.http.request(method, path, params=params, json=json)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the control plane at {self.url}: {exc}") from None
        return self._check(response)

    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            code = NOT_FOUND if response.status_code == 404 else 1
            try:
                error = response.json()["error"]
                where = f" ({error['target']})" if error.get("target") else ""
                raise CliError(f"{error['code']}: {error['message']}{where}", code)
            except (ValueError, KeyError, TypeError):
                raise CliError(f"HTTP {response.status_code}: {response.text[:200]}", code) from None
        return response

    def get(self, path: str, **params) -> dict:
        return self.request("GET", path, params=params).json()

    def put(self, path: str, body: dict | None = None) -> dict:
        return self.request("PUT", path, json=body).json()

    def list(self, path: str, method: str = "GET", **params) -> list[dict]:
        page = self.request(method, path, params=params).json()
        items = list(page["value"])
        while page.get("nextLink"):
            page = self._check(self.http.get(page["nextLink"])).json()
            items += page["value"]
        return items

    def wait_operation(self, response: httpx.Response, timeout: float = 600) -> None:
        """Follow a 202's Location until the operation is done."""
        deadline = time.time() + timeout
        while response.status_code == 202 and "location" in response.headers:
            if time.time() > deadline:
                raise CliError("timed out waiting for the operation")
            time.sleep(float(response.headers.get("retry-after", "1")))
            response = self._check(self.http.get(response.headers["location"]))

    def delete(self, path: str, wait: bool = True) -> None:
        response = self.request("DELETE", path)
        if wait:
            self.wait_operation(response)

    def post(self, path: str, wait: bool = True, **params) -> httpx.Response:
        response = self.request("POST", path, params=params)
        if wait:
            self.wait_operation(response)
        return response

    def download_to(self, url: str, target: Path) -> int:
        """Stream a file to `target` (written whole or not at all); its size."""
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part")
        size = 0
        try:
            with httpx.stream("GET", url, timeout=self.timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    self._check(response)
                with open(partial, "wb") as f:
                    for chunk in response.iter_bytes():
                        f.write(chunk)
                        size += len(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise CliError(f"downloading {target.name} failed: {exc}") from None
        partial.replace(target)
        return size

    def download(self, url: str, offset: int = 0) -> bytes:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = httpx.get(url, headers=headers, timeout=self.timeout)
        if response.status_code == 416:
            return b""
        return self._check(response).content
