"""HubClient and HubStore against the Hub emulator, through the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from huggingface_hub import HfApi, constants

from gateway.errors import ObjectMissing
from gateway.store.hub import Add, HubClient, HubError, HubStore, Upload, object_id_of, object_path
from tests.hub_emulator import HubEmulator
from tests.hub_fixtures import REPO, TOKEN, emulator_fixture  # noqa: F401  (the emulator fixture)

pytestmark = pytest.mark.timeout(120)
MiB = 1 << 20


@pytest.fixture
def client(emulator: HubEmulator) -> HubClient:
    c = HubClient(REPO, token=TOKEN, endpoint=emulator.url)
    c.ensure_repo()
    return c


def _blob(tmp_path: Path, data: bytes) -> tuple[str, Path]:
    p = tmp_path / hashlib.sha256(data).hexdigest()[:12]
    p.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), p


def test_object_paths_are_sharded():
    oid = "0123456789abcdef" * 4
    assert object_path(oid) == f"objects/01/23/{oid}"
    assert object_id_of(object_path(oid)) == oid
    assert object_id_of("objects/ff/23/" + oid) is None
    assert object_id_of("journal/0000000001.jsonl") is None


def test_ensure_repo_creates_a_private_dataset_repo_once(emulator: HubEmulator):
    c = HubClient(REPO, token=TOKEN, endpoint=emulator.url)
    head = c.ensure_repo()
    assert c.ensure_repo() == head
    info = HfApi(endpoint=emulator.url, token=TOKEN).repo_info(REPO, repo_type="dataset")
    assert info.private is True and info.sha == head


def test_hf_endpoint_is_honoured(emulator: HubEmulator, monkeypatch: pytest.MonkeyPatch):
    """Without an explicit endpoint the client uses HF_ENDPOINT (as huggingface_hub read it)."""
    monkeypatch.setattr(constants, "ENDPOINT", emulator.url)
    c = HubClient(REPO, token=TOKEN, endpoint=None)
    assert c.endpoint == emulator.url
    assert len(c.ensure_repo()) == 40
    assert emulator.repo_exists(REPO)


def test_a_range_read_fetches_only_what_it_needs(client: HubClient, emulator: HubEmulator, tmp_path: Path):
    data = os.urandom(8 * MiB)
    oid, src = _blob(tmp_path, data)
    store = HubStore(client, ids_are_sha256=True)
    store.adopt(oid, src, len(data))
    before = emulator.stats["bytes_out"]
    with store.open_range(oid, 6 * MiB + 5, 1000) as s:
        assert s.read() == data[6 * MiB + 5 : 6 * MiB + 1005]
    assert emulator.stats["bytes_out"] - before < 20_000


def test_open_range_is_lazy(client: HubClient, emulator: HubEmulator, tmp_path: Path):
    data = os.urandom(1000)
    oid, src = _blob(tmp_path, data)
    store = HubStore(client, ids_are_sha256=True)
    store.adopt(oid, src, len(data))
    before = emulator.stats["requests"]
    s = store.open_range(oid, 0, 1000)
    assert emulator.stats["requests"] == before
    s.close()


def test_commit_references_an_uploaded_object_without_its_local_copy(
    client: HubClient,
    emulator: HubEmulator,
    tmp_path: Path,
):
    data = os.urandom(3 * MiB)
    oid, src = _blob(tmp_path, data)
    [done] = client.upload([Upload(object_path(oid), src, oid)])
    assert done.lfs and done.sha256 == oid and done.size == len(data)
    src.unlink()
    puts = emulator.stats["lfs_puts"]
    head = client.commit([Add(object_path(oid), sha256=done.sha256, size=done.size)], [], message="t", parent=None)
    assert emulator.stats["lfs_puts"] == puts  # nothing sent again
    assert emulator.head(REPO) == head
    assert emulator.read_file(REPO, object_path(oid)) == data


def test_a_file_the_hub_wants_regular_travels_inside_the_commit(
    client: HubClient,
    emulator: HubEmulator,
    tmp_path: Path,
):
    data = b"plain text, small\n" * 10
    oid, src = _blob(tmp_path, data)
    [done] = client.upload([Upload(object_path(oid), src)])
    assert not done.lfs
    client.commit([Add(object_path(oid), source=src)], [], message="t", parent=None)
    assert emulator.read_file(REPO, object_path(oid)) == data


def test_parent_commit_mismatch_is_a_412(client: HubClient, tmp_path: Path):
    head = client.head()
    client.commit([Add("a.txt", data=b"a")], [], message="one", parent=head)
    with pytest.raises(HubError) as err:
        client.commit([Add("b.txt", data=b"b")], [], message="two", parent=head)
    assert err.value.status == 412


def test_errors_are_translated(client: HubClient, emulator: HubEmulator):
    emulator.faults.add(method="GET", path=r"/api/datasets/", kind="status", status=503)
    with pytest.raises(HubError) as err:
        client.head()
    assert err.value.status == 503 and err.value.transient
    emulator.faults.add(method="POST", path=r"/commit/", kind="drop_before")
    with pytest.raises(HubError) as err:
        client.commit([Add("x.txt", data=b"x")], [], message="m", parent=None)
    assert err.value.status is None and err.value.transient
    missing = HubClient("testuser/nope", token=TOKEN, endpoint=emulator.url)
    with pytest.raises(HubError) as err:
        missing.head()
    assert err.value.status == 404 and not err.value.transient


def test_paths_info_and_listings(client: HubClient, tmp_path: Path):
    client.commit(
        [Add("journal/0000000001.jsonl", data=b"{}\n"), Add("x/y.txt", data=b"y")], [], message="m", parent=None
    )
    info = client.paths_info(["journal/0000000001.jsonl", "x", "nope"], revision=client.head())
    assert set(info) == {"journal/0000000001.jsonl"}
    assert [f.path for f in client.list_files("journal", revision=client.head())] == ["journal/0000000001.jsonl"]
    assert list(client.list_files("snapshots", revision=client.head())) == []


def test_reads_are_pinned_and_survive_a_squash(client: HubClient, emulator: HubEmulator, tmp_path: Path):
    data = os.urandom(100_000)
    oid, src = _blob(tmp_path, data)
    store = HubStore(client, ids_are_sha256=True)
    store.adopt(oid, src, len(data))
    old_head = store.head
    client.commit([], [object_path(oid)], message="delete", parent=old_head)
    # the object is gone at the branch head but still readable at the commit reads are pinned to
    with client.open_range(object_path(oid), 10, 100, revision=old_head) as s:
        assert s.read() == data[10:110]
    with pytest.raises(ObjectMissing), client.open_range(object_path(oid), 0, 10, revision=client.head()) as s:
        s.read()
    oid2, src2 = _blob(tmp_path, os.urandom(5000))
    store.set_head(client.head())
    store.adopt(oid2, src2, 5000)
    stale = store.head
    client.squash("squash")
    assert emulator.commit_count(REPO) == 1
    store.set_head(stale)  # a head the squash made unresolvable
    with store.open_range(oid2, 0, 5000) as s:
        assert len(s.read()) == 5000
    assert store.head != stale
