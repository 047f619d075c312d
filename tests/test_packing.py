"""Small-file packs over a real local store and database (SQLite and PostgreSQL)."""

import os

import pytest

from gateway.files import FileService, VersionReader
from gateway.packing import Packer
from gateway.store.base import ReadStream


@pytest.fixture
def packer(files, store, tmp_path):
    return Packer(files.repo, store, tmp_dir=files.tmp_dir, object_hasher=files.object_hasher, target=64 * 1024)


def stored_files(store):
    return sorted(store.list_ids())


def test_pack_then_read_dedup_and_repack(files, store, packer):
    blobs = {f"/f{i}": os.urandom(4096) for i in range(40)}
    for path, blob in blobs.items():
        files.write_bytes(path, blob)
    assert len(stored_files(store)) == 40
    report = packer.pack_small_objects(force=True)
    assert report.objects == 40 and report.packs == 3  # 64 KiB target → 16 + 16 + 8
    assert len(stored_files(store)) == 3
    for path, blob in blobs.items():
        assert files.read_bytes(path) == blob
        node = files.stat(path)
        with files.open_read(node) as r:
            r.seek(1000)
            assert r.read(10) == blob[1000:1010]
    # an identical small file dedups against the packed object: no new store entry
    files.write_bytes("/dup", blobs["/f3"])
    assert len(stored_files(store)) == 3 and files.read_bytes("/dup") == blobs["/f3"]
    # delete most files of the first pack, repack, collect: dead bytes go away
    for i in range(14):
        files.delete(f"/f{i}")
    files.collect_garbage(grace_s=-1)
    rep = packer.repack()
    assert rep.packs == 1 and rep.objects == 3  # f14, f15 and f3 (kept alive by /dup)
    files.collect_garbage(grace_s=-1)
    remaining = {p: b for p, b in blobs.items() if int(p[2:]) >= 14}
    for path, blob in remaining.items():
        assert files.read_bytes(path) == blob
    assert files.read_bytes("/dup") == blobs["/f3"]
    sizes = dict(stored_files(store))
    assert sum(sizes.values()) == 4096 * (len(remaining) + 1)  # f3 lives on as /dup
    assert len(sizes) == 3


def test_big_objects_are_not_packed(files, store, packer):
    files.write_bytes("/big", os.urandom(2 << 20))  # two 1 MiB chunks, at the threshold
    files.write_bytes("/small", b"tiny")
    files.write_bytes("/small2", b"tiny too")
    report = packer.pack_small_objects(force=True)
    assert report.objects == 2
    assert files.read_bytes("/small") == b"tiny" and len(files.read_bytes("/big")) == 2 << 20


def test_reader_follows_object_into_pack(files, store, packer):
    blob = os.urandom(3000)
    node = files.write_bytes("/r", blob)
    reader = files.open_read(node)  # resolved before packing
    files.write_bytes("/other", os.urandom(3000))
    packer.pack_small_objects(force=True)
    assert reader.read() == blob


def test_service_without_packs_unaffected(repo, store, tmp_path):
    svc = FileService(repo, store, tmp_dir=tmp_path / "t", chunk_size=1 << 20)
    svc.write_bytes("/x", b"abc")
    assert svc.read_bytes("/x") == b"abc"


class _OpensOnRead:
    """The local store, opening an object only at its first read, as the Hub and write-back
    stores do: a missing object shows when the reader reads, not when it opens."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def open_range(self, object_id, offset, length):
        inner = self._inner

        class Lazy(ReadStream):
            stream = None

            def read(self, n=-1):
                if self.stream is None:
                    self.stream = inner.open_range(object_id, offset, length)
                return self.stream.read(n)

            def close(self):
                if self.stream is not None:
                    self.stream.close()
                super().close()

        return Lazy()


def test_reader_follows_object_into_pack_when_the_store_opens_on_read(files, store, packer):
    blob = os.urandom(3000)
    node = files.write_bytes("/r", blob)
    vid = node.version_id
    reader = VersionReader(_OpensOnRead(store), files.repo.extents(vid), node.size,
                           resolve=lambda: files.repo.extents(vid))  # fmt: skip
    files.write_bytes("/other", os.urandom(3000))
    packer.pack_small_objects(force=True)
    assert reader.read() == blob
