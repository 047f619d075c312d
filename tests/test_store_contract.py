"""The object store contract (gateway/store/base.py), run against every store.

Stores: ``local`` (LocalStore), ``inline`` (InlineStore: small objects in SQLite, the rest in a
LocalStore), ``hub`` (HubStore on the Hub emulator, one commit per call),
``writeback`` (WriteBackStore staging in front of HubStore; its deletions are handed to a sink,
here the Hub store itself, as the sync package does in batches). To add a store, add a builder
to :data:`BUILDERS`.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.errors import ObjectMissing, StoreError
from gateway.store.base import ObjectStore
from gateway.store.hub import HubClient, HubStore
from gateway.store.inline import InlineStore
from gateway.store.local import LocalStore
from gateway.store.writeback import WriteBackStore
from tests.hub_emulator import HubEmulator
from tests.hub_fixtures import REPO, TOKEN, emulator_fixture  # noqa: F401  (the emulator fixture)

pytestmark = pytest.mark.timeout(120)

MiB = 1 << 20


def _hub(emu: HubEmulator) -> HubStore:
    client = HubClient(REPO, token=TOKEN, endpoint=emu.url)
    client.ensure_repo()
    return HubStore(client, ids_are_sha256=True)


def _local(tmp: Path, request) -> ObjectStore:
    return LocalStore(tmp / "objects")


def _inline(tmp: Path, request) -> ObjectStore:
    # objects of up to 60,000 bytes in the database, larger ones in the files behind it
    return InlineStore(LocalStore(tmp / "objects"), tmp / "small.sqlite", small_max=60_000)


def _hubstore(tmp: Path, request) -> ObjectStore:
    return _hub(request.getfixturevalue("emulator"))


def _writeback(tmp: Path, request) -> ObjectStore:
    hub = _hub(request.getfixturevalue("emulator"))
    return WriteBackStore(hub, tmp / "wb", staging_limit=64 * MiB, cache_size=64 * MiB, on_delete=hub.delete)


BUILDERS: dict[str, Callable[[Path, pytest.FixtureRequest], ObjectStore]] = {
    "local": _local,
    "inline": _inline,
    "hub": _hubstore,
    "writeback": _writeback,
}


@pytest.fixture(params=sorted(BUILDERS))
def store(request, tmp_path: Path) -> Iterator[ObjectStore]:
    s = BUILDERS[request.param](tmp_path, request)
    yield s
    s.close()


@pytest.fixture
def make(tmp_path: Path) -> Callable[[bytes], tuple[str, Path]]:
    """Write ``data`` to a fresh source file; returns (object id, path)."""
    counter = iter(range(1_000_000))

    def _make(data: bytes) -> tuple[str, Path]:
        p = tmp_path / f"src-{next(counter)}"
        p.write_bytes(data)
        return hashlib.sha256(data).hexdigest(), p

    return _make


def _read_all(stream, block: int = 65536) -> bytes:
    out = bytearray()
    with stream:
        while piece := stream.read(block):
            out += piece
    return bytes(out)


def test_adopt_then_read_whole_and_ranges(store, make):
    data = os.urandom(3 * MiB + 123)
    oid, src = make(data)
    store.adopt(oid, src, len(data))
    assert _read_all(store.open_range(oid, 0, len(data))) == data
    for offset, length in [(0, 1), (1, 1000), (MiB - 7, 14), (2 * MiB, MiB + 123), (len(data) - 1, 1)]:
        assert _read_all(store.open_range(oid, offset, length)) == data[offset : offset + length]


def test_adopt_takes_ownership_of_the_source(store, make):
    data = os.urandom(5000)
    oid, src = make(data)
    store.adopt(oid, src, len(data))
    src.unlink(missing_ok=True)  # the caller may not use it any more; the store must not need it
    assert _read_all(store.open_range(oid, 0, len(data))) == data


def test_adopt_is_idempotent(store, make):
    data = os.urandom(10_000)
    oid, src = make(data)
    store.adopt(oid, src, len(data))
    oid2, src2 = make(data)
    store.adopt(oid2, src2, len(data))
    assert not src2.exists() or src2.stat().st_size == len(data)
    assert _read_all(store.open_range(oid, 0, len(data))) == data
    assert sorted(i for i, _ in store.list_ids()).count(oid) == 1


def test_streams_never_return_short(store, make):
    data = os.urandom(2 * MiB + 5)
    oid, src = make(data)
    store.adopt(oid, src, len(data))
    with store.open_range(oid, 100, len(data) - 100) as s:
        first = s.read(len(data))  # asking for more than the range: at most the range
        rest = _read_all(s)
    assert first + rest == data[100:]
    with store.open_range(oid, 0, 10) as s:
        assert s.read(10) == data[:10]
        assert s.read(10) == b""


def test_missing_object_is_object_missing(store):
    oid = "ab" * 32
    with pytest.raises(ObjectMissing):
        _read_all(store.open_range(oid, 0, 10))
    assert store.size_of(oid) is None


def test_delete_removes_and_is_idempotent(store, make):
    kept, gone = os.urandom(4000), os.urandom(4001)
    kid, ksrc = make(kept)
    gid, gsrc = make(gone)
    store.adopt(kid, ksrc, len(kept))
    store.adopt(gid, gsrc, len(gone))
    store.delete([gid, "cd" * 32])
    store.delete([gid])
    ids = dict(store.list_ids())
    assert gid not in ids and ids[kid] == len(kept)
    assert store.size_of(gid) is None
    with pytest.raises(ObjectMissing):
        _read_all(store.open_range(gid, 0, 1))
    assert _read_all(store.open_range(kid, 0, len(kept))) == kept


def test_list_ids_and_size_of(store, make):
    blobs = [os.urandom(n) for n in (1, 1000, MiB + 1)]
    ids = []
    for b in blobs:
        oid, src = make(b)
        store.adopt(oid, src, len(b))
        ids.append(oid)
    listed = dict(store.list_ids())
    for oid, b in zip(ids, blobs, strict=True):
        assert listed[oid] == len(b)
        assert store.size_of(oid) == len(b)


def test_concurrent_adopts_and_reads(store, make):
    blobs = [os.urandom(50_000 + i) for i in range(8)]
    made = [make(b) for b in blobs]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            oid, src = made[i]
            store.adopt(oid, src, len(blobs[i]))
            assert _read_all(store.open_range(oid, 0, len(blobs[i]))) == blobs[i]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(blobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert {oid for oid, _ in made} <= {oid for oid, _ in store.list_ids()}


def test_failures_are_store_errors(store, make, tmp_path):
    """A source that does not exist fails with the store's error class, not a foreign one."""
    with pytest.raises(StoreError):
        store.adopt("ef" * 32, tmp_path / "no-such-file", 10)
