"""File service over a real local store and a temp database."""

import os
import threading

import pytest

from gateway.errors import IncompleteUpload, IntegrityError, QuotaExceeded
from gateway.files import FileService

MiB = 1 << 20


def data(n, seed=0):
    return (bytes(range(256)) * (n // 256 + 1))[:n] if seed == 0 else os.urandom(n)


def test_round_trip_multi_chunk(files):
    blob = os.urandom(3 * MiB + 123)
    node = files.write_bytes("/f.bin", blob)
    assert node.size == len(blob)
    assert len(files.repo.extents(node.version_id)) == 4
    assert files.read_bytes("/f.bin") == blob


@pytest.mark.parametrize("size", [0, 1, MiB - 1, MiB, MiB + 1])
def test_sizes(files, size):
    blob = os.urandom(size)
    files.write_bytes("/s", blob)
    assert files.read_bytes("/s") == blob


def test_seek_and_ranges(files):
    blob = os.urandom(3 * MiB)
    node = files.write_bytes("/r", blob)
    with files.open_read(node) as r:
        for start, n in [(0, 10), (MiB - 5, 10), (2 * MiB + 7, MiB), (3 * MiB - 1, 5), (5, 0)]:
            r.seek(start)
            assert r.read(n) == blob[start : start + n]


def test_truncated_upload_keeps_previous_version(files):
    files.write_bytes("/t", b"old content")
    session = files.open_write("/t", expected_length=2 * MiB)
    session.write(os.urandom(MiB + 5))
    with pytest.raises(IncompleteUpload):
        session.commit()
    assert files.read_bytes("/t") == b"old content"
    assert files.tmp_files() == []  # staged pieces removed


def test_overlong_upload_rejected(files):
    session = files.open_write("/o", expected_length=4)
    with pytest.raises(IncompleteUpload):
        session.write(b"12345")
    session.abort()
    assert files.stat("/o") is None


def test_aborted_new_file_is_invisible(files):
    session = files.open_write("/new", expected_length=None)
    session.write(b"partial")
    assert files.stat("/new") is None
    session.abort()
    assert files.stat("/new") is None and files.tmp_files() == []


def test_identical_chunks_stored_once(files, store):
    blob = os.urandom(MiB)
    files.write_bytes("/a", blob + blob)
    files.write_bytes("/b", blob)
    assert len(list(store.list_ids())) == 1


def test_memory_is_per_block_not_per_file(files):
    import tracemalloc

    block = os.urandom(MiB)
    tracemalloc.start()
    session = files.open_write("/big", expected_length=40 * MiB)
    for _ in range(40):
        session.write(block)
    session.commit()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 * MiB


def test_move_copy_are_metadata_only(files, store):
    files.write_bytes("/m", os.urandom(2 * MiB))
    before = sorted(store.list_ids())
    files.copy("/m", "/c")
    files.move("/m", "/moved")
    assert sorted(store.list_ids()) == before
    assert files.read_bytes("/c") == files.read_bytes("/moved")


def test_garbage_collection_respects_grace(files, store):
    files.write_bytes("/g", os.urandom(MiB))
    files.delete("/g")
    assert files.collect_garbage(grace_s=3600) == 0
    assert len(list(store.list_ids())) == 1
    assert files.collect_garbage(grace_s=-1) == 1
    assert list(store.list_ids()) == []


def test_reader_of_old_version_survives_overwrite(files):
    old = os.urandom(2 * MiB)
    node = files.write_bytes("/v", old)
    reader = files.open_read(node)
    files.write_bytes("/v", os.urandom(2 * MiB))
    files.collect_garbage()  # default grace keeps the old chunks
    assert reader.read() == old


def test_missing_object_raises_not_short_read(files, store):
    node = files.write_bytes("/x", os.urandom(2 * MiB))
    first = files.repo.extents(node.version_id)[1].object_id
    store.path_of(first).unlink()
    with files.open_read(node) as r, pytest.raises(Exception) as info:
        r.read()
    assert "missing" in str(info.value)


def test_corrupt_short_object_raises(files, store):
    node = files.write_bytes("/y", os.urandom(MiB + 10))
    oid = files.repo.extents(node.version_id)[0].object_id
    with open(store.path_of(oid), "r+b") as f:
        f.truncate(100)
    with files.open_read(node) as r, pytest.raises(IntegrityError):
        r.read()


def test_quota(repo, store, tmp_path):
    svc = FileService(repo, store, tmp_dir=tmp_path / "q", chunk_size=MiB, quota=MiB)
    svc.write_bytes("/a", b"x" * 1000)
    with pytest.raises(QuotaExceeded):
        svc.open_write("/b", expected_length=MiB)
    assert svc.available_bytes() == MiB - 1000


def test_concurrent_writers_same_path(files):
    blobs = [os.urandom(MiB + 1 + i) for i in range(6)]
    errors = []

    def w(b):
        try:
            files.write_bytes("/race", b)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=w, args=(b,)) for b in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert files.read_bytes("/race") in blobs
    live = [o for o in files.repo.all_object_ids() if files.repo.get_object(o).refcount > 0]
    assert len(live) == 2  # exactly one version's two chunks are referenced


def test_clean_tmp_spares_live_processes(repo, store, tmp_path):
    root = tmp_path / "shared-tmp"
    live = FileService(repo, store, tmp_dir=root, chunk_size=MiB)
    session = live.open_write("/inflight", expected_length=2 * MiB)
    session.write(os.urandom(MiB + 1))  # one chunk file and one partial file on disk
    dead = root / "p-dead"
    dead.mkdir()
    (dead / "put-leftover").write_bytes(b"x")
    (root / "put-legacy").write_bytes(b"y")
    starting = FileService(repo, store, tmp_dir=root, chunk_size=MiB)
    assert starting.clean_tmp() == 2
    assert not dead.exists()
    session.write(os.urandom(MiB - 1))
    assert session.commit().size == 2 * MiB  # the live upload's pieces survived
    starting.close()
    live.close()
