"""The BlobStore port: the same cases on the directory adapter and on Azure Blob Storage (Azurite)."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from datetime import timedelta

import pytest

from batchai.adapters.azure_blob_store import AzureBlobStore
from batchai.adapters.fs_blob_store import FsBlobStore

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["fs", "azure"])
def blobs(request, tmp_path):
    if request.param == "fs":
        return FsBlobStore(tmp_path / "blobs")
    return AzureBlobStore(request.getfixturevalue("azurite_connection"), f"c{uuid.uuid4().hex}")


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_put_replaces_and_get_reads_back(blobs):
    blobs.put("a/b/model.bin", b"one")
    blobs.put("a/b/model.bin", b"two!")
    assert blobs.get("a/b/model.bin") == b"two!"
    assert blobs.get("a/b/missing") is None


def test_put_streams_a_file(blobs, tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(b"x" * (3 << 20) + b"end")
    with source.open("rb") as f:
        blobs.put("out/big.bin", f)
    assert blobs.get("out/big.bin") == source.read_bytes()


def test_append_creates_then_grows(blobs):
    blobs.append("job/stdouterr/stdout.txt", b"")
    assert blobs.get("job/stdouterr/stdout.txt") == b""
    blobs.append("job/stdouterr/stdout.txt", b"line 1\n")
    blobs.append("job/stdouterr/stdout.txt", b"line 2\n")
    assert blobs.get("job/stdouterr/stdout.txt") == b"line 1\nline 2\n"


def test_list_by_prefix_with_sizes_and_times(blobs):
    blobs.put("j1/out/x.txt", b"xx")
    blobs.put("j1/out/sub/y.txt", b"yyy")
    blobs.append("j1/stdouterr/stdout.txt", b"s")
    blobs.put("j10/out/z.txt", b"z")
    listed = blobs.list("j1/out/")
    assert [(b.name, b.size) for b in listed] == [("j1/out/sub/y.txt", 3), ("j1/out/x.txt", 2)]
    assert all(b.last_modified.tzinfo is not None for b in listed)
    assert [b.name for b in blobs.list("j1")] == ["j1/out/sub/y.txt", "j1/out/x.txt", "j1/stdouterr/stdout.txt", "j10/out/z.txt"]
    assert blobs.list("nothing/") == []


def test_delete_is_idempotent(blobs):
    blobs.put("d/f", b"1")
    blobs.delete("d/f")
    blobs.delete("d/f")
    assert blobs.get("d/f") is None and blobs.list("d/") == []


def test_download_url_reads_the_blob_without_other_credentials(blobs):
    blobs.put("dir/name with space.txt", b"contents")
    blobs.append("dir/log.txt", b"a\n")
    blobs.append("dir/log.txt", b"b\n")
    assert fetch(blobs.download_url("dir/name with space.txt", timedelta(minutes=5))) == b"contents"
    assert fetch(blobs.download_url("dir/log.txt", timedelta(minutes=5))) == b"a\nb\n"


def test_large_appends_are_split_into_blocks(blobs):
    data = bytes(range(256)) * (5 * 1024 * 1024 // 256 + 7)
    blobs.append("big/log", data)
    assert blobs.get("big/log") == data


def test_azure_urls_without_the_sas_are_refused(azurite_connection):
    store = AzureBlobStore(azurite_connection, "private")
    store.put("secret.txt", b"x")
    url = store.download_url("secret.txt", timedelta(minutes=5))
    assert "sp=r" in url  # read only
    with pytest.raises(urllib.error.HTTPError) as refused:
        fetch(url.split("?")[0])
    assert refused.value.code in (403, 404)


def test_azure_needs_an_account_key():
    with pytest.raises(ValueError, match="AccountKey"):
        AzureBlobStore("BlobEndpoint=http://127.0.0.1:1/acct;SharedAccessSignature=sv=2020&sig=x", "c")


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/abs", "a//b", "a/./b", ""])
def test_fs_refuses_names_that_leave_the_root(tmp_path, name):
    store = FsBlobStore(tmp_path)
    with pytest.raises(ValueError):
        store.put(name, b"x")
    assert not (tmp_path / "x").exists()
