"""The BlobStore port on Azure Blob Storage: one container of an account, reached by a connection string
with its `AccountKey` or by a token credential (a managed identity, no key anywhere).

Logs are append blobs, so a reader following a log sees each new block as soon as it is
appended; other blobs are block blobs replaced whole. Download URLs carry a read-only SAS for
one blob, signed with the account key, or, with a token credential, with a user delegation key
(the identity needs `generateUserDelegationKey` on the account: Storage Blob Delegator).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobSasPermissions, BlobServiceClient, UserDelegationKey, generate_blob_sas

from batchai.ports import BlobInfo

APPEND_BLOCK_BYTES = 4 * 1024 * 1024  # the largest append block every service version accepts
# the SDK traces every request at INFO; a job's uploads would bury the host's log (warnings stay)
REQUEST_LOG = logging.getLogger("batchai.blobs.requests")
REQUEST_LOG.setLevel(logging.WARNING)


DELEGATION_KEY_LIFETIME = timedelta(days=1)  # a user delegation key is fetched again when a SAS outlives it (7 days at most)


class AzureBlobStore:
    def __init__(self, connection_string: str, container: str):
        service = BlobServiceClient.from_connection_string(connection_string, logger=REQUEST_LOG)
        key = getattr(service.credential, "account_key", None)
        if not key:
            raise ValueError("the blob connection string needs an AccountKey (or use the account URL and a managed identity)")
        self._open(service, container, key)
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass

    @classmethod
    def with_credential(cls, account_url: str, container: str, credential, **client_options) -> AzureBlobStore:
        """The container (which must exist: a data-plane role cannot create it) with a token credential."""
        store = cls.__new__(cls)
        store._open(BlobServiceClient(account_url, credential=credential, logger=REQUEST_LOG, **client_options), container, None)
        return store

    def _open(self, service: BlobServiceClient, container: str, key: str | None) -> None:
        if not service.account_name:
            raise ValueError("the blob account has no name: SAS download URLs name it")
        self.account: str = service.account_name
        self._service = service
        self._key = key
        self._delegation: UserDelegationKey | None = None  # the user delegation key SAS URLs are signed with, without an account key
        self._delegation_lock = threading.Lock()
        self.container = service.get_container_client(container)

    def put(self, name: str, data: bytes | BinaryIO) -> None:
        self.container.upload_blob(name, data, overwrite=True)  # a stream goes up in blocks

    def append(self, name: str, data: bytes) -> None:
        blob = self.container.get_blob_client(name)
        try:
            _append_blocks(blob, data)
        except ResourceNotFoundError:
            _create_append_blob(blob)
            _append_blocks(blob, data)
        if not data:
            _create_append_blob(blob)  # an empty log still shows, as its empty file did

    def get(self, name: str) -> bytes | None:
        try:
            return self.container.download_blob(name).readall()
        except ResourceNotFoundError:
            return None

    def list(self, prefix: str) -> list[BlobInfo]:
        return [BlobInfo(b.name, b.size, b.last_modified) for b in self.container.list_blobs(name_starts_with=prefix)]

    def delete(self, name: str) -> None:
        try:
            self.container.delete_blob(name)
        except ResourceNotFoundError:
            pass

    def download_url(self, name: str, expires_in: timedelta) -> str:
        expiry = datetime.now(UTC) + expires_in
        signing = {"account_key": self._key} if self._key else {"user_delegation_key": self._delegation_key(expiry)}
        sas = generate_blob_sas(
            self.account, self.container.container_name, name, permission=BlobSasPermissions(read=True), expiry=expiry, **signing
        )
        return f"{self.container.get_blob_client(name).url}?{sas}"

    def _delegation_key(self, expiry: datetime) -> UserDelegationKey:
        """A user delegation key valid until `expiry` at least (one per day, not one per URL)."""
        with self._delegation_lock:
            key = self._delegation
            if key is None or datetime.fromisoformat(str(key.signed_expiry).replace("Z", "+00:00")) < expiry:
                now = datetime.now(UTC)
                key = self._service.get_user_delegation_key(now - timedelta(minutes=5), max(expiry, now + DELEGATION_KEY_LIFETIME))
                self._delegation = key
            return key


def _append_blocks(blob: BlobClient, data: bytes) -> None:
    for start in range(0, len(data), APPEND_BLOCK_BYTES):
        blob.append_block(data[start : start + APPEND_BLOCK_BYTES])


def _create_append_blob(blob: BlobClient) -> None:
    """Create it only if missing: two writers racing to create must not truncate each other's appends."""
    try:
        blob.create_append_blob(match_condition=MatchConditions.IfMissing)
    except (ResourceExistsError, ResourceModifiedError):
        pass
