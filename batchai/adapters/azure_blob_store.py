"""The BlobStore port on Azure Blob Storage: one container of an account reached by connection string.

Logs are append blobs, so a reader following a log sees each new block as soon as it is
appended; other blobs are block blobs replaced whole. Download URLs carry a read-only SAS for
one blob, signed with the account key: that is why this adapter takes a connection string
with `AccountKey` rather than a token credential.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobSasPermissions, BlobServiceClient, generate_blob_sas

from batchai.ports import BlobInfo

APPEND_BLOCK_BYTES = 4 * 1024 * 1024  # the largest append block every service version accepts
# the SDK traces every request at INFO; a job's uploads would bury the host's log (warnings stay)
REQUEST_LOG = logging.getLogger("batchai.blobs.requests")
REQUEST_LOG.setLevel(logging.WARNING)


class AzureBlobStore:
    def __init__(self, connection_string: str, container: str):
        service = BlobServiceClient.from_connection_string(connection_string, logger=REQUEST_LOG)
        key = getattr(service.credential, "account_key", None)
        if not key:
            raise ValueError("the blob connection string needs an AccountKey: SAS download URLs are signed with it")
        if not service.account_name:
            raise ValueError("the blob connection string needs an AccountName: SAS download URLs name it")
        self.account: str = service.account_name
        self._key = key
        self.container = service.get_container_client(container)
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass

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
        sas = generate_blob_sas(
            self.account,
            self.container.container_name,
            name,
            account_key=self._key,
            permission=BlobSasPermissions(read=True),
            expiry=datetime.now(UTC) + expires_in,
        )
        return f"{self.container.get_blob_client(name).url}?{sas}"


def _append_blocks(blob: BlobClient, data: bytes) -> None:
    for start in range(0, len(data), APPEND_BLOCK_BYTES):
        blob.append_block(data[start : start + APPEND_BLOCK_BYTES])


def _create_append_blob(blob: BlobClient) -> None:
    """Create it only if missing: two writers racing to create must not truncate each other's appends."""
    try:
        blob.create_append_blob(match_condition=MatchConditions.IfMissing)
    except (ResourceExistsError, ResourceModifiedError):
        pass
