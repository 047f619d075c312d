"""The small-object database of the local store (gateway.store.inline): the group commit of
concurrent writers, and failures reaching every writer of a transaction. (The store contract is
checked in tests/test_store_contract.py, crashes in tests/e2e/test_durable_small_puts.py.)"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.store.inline import InlineStore
from gateway.store.local import LocalStore


@pytest.fixture
def store(tmp_path: Path):
    s = InlineStore(LocalStore(tmp_path / "objects", fsync=False), tmp_path / "small.sqlite", fsync=False)
    yield s
    s.close()


def _source(tmp_path: Path, data: bytes) -> tuple[str, Path]:
    oid = hashlib.sha256(data).hexdigest()
    path = tmp_path / f"src-{oid[:12]}"
    path.write_bytes(data)
    return oid, path


def _wait_until(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def test_writers_queued_behind_a_commit_share_the_next_one(store, tmp_path, monkeypatch):
    """While one transaction commits, five more writers queue: they are stored in one further
    transaction (two in all, not six), and every object reads back."""
    release = threading.Event()
    original = store._commit
    first = []

    def slow_commit(batch):
        if not first:
            first.append(batch)
            release.wait(30)
        original(batch)

    monkeypatch.setattr(store, "_commit", slow_commit)
    blobs = [os.urandom(4096) for _ in range(6)]
    sources = [_source(tmp_path, b) for b in blobs]
    errors: list[BaseException] = []

    def adopt(i: int) -> None:
        try:
            store.adopt(sources[i][0], sources[i][1], len(blobs[i]))
        except BaseException as exc:  # reported below
            errors.append(exc)

    leader = threading.Thread(target=adopt, args=(0,))
    leader.start()
    _wait_until(lambda: bool(first))
    followers = [threading.Thread(target=adopt, args=(i,)) for i in range(1, 6)]
    for t in followers:
        t.start()
    _wait_until(lambda: len(store._queued) == 5)
    release.set()
    for t in [leader, *followers]:
        t.join(30)
    assert not errors, errors
    assert store.commits == 2
    for (oid, src), data in zip(sources, blobs, strict=True):
        assert not src.exists()
        with store.open_range(oid, 0, len(data)) as r:
            assert r.read() == data


def test_a_failed_transaction_fails_every_writer_in_it(store, tmp_path, monkeypatch):
    def broken(batch):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "_commit", broken)
    data = os.urandom(1000)
    oid, src = _source(tmp_path, data)
    with pytest.raises(StoreError, match="disk I/O error"):
        store.adopt(oid, src, len(data))
    assert src.exists()  # still the caller's to clean up
    assert store.size_of(oid) is None
    monkeypatch.undo()
    store.adopt(oid, src, len(data))  # the next transaction works again
    assert store.size_of(oid) == len(data)


def test_large_objects_go_to_the_files(store, tmp_path):
    data = os.urandom(store.small_max + 1)
    oid, src = _source(tmp_path, data)
    store.adopt(oid, src, len(data))
    assert store.commits == 0
    assert (tmp_path / "objects" / oid[:2] / oid[2:4] / oid).read_bytes() == data
