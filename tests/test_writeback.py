"""The write-back store and the pipeline behind it (uploader, committer), on the Hub emulator.

Store-level tests use a LocalStore or the emulator as the remote; pipeline tests run a whole
gateway in-process (file service → write-back store → uploader/committer → emulator) and check
the repo through the emulator and by rebuilding a fresh database from it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.store.hub import Add, HubClient, HubStore, object_path
from gateway.store.local import LocalStore
from gateway.store.writeback import WriteBackStore
from gateway.sync.budget import CommitBudget
from gateway.sync.hubsync import wait_until
from tests.hub_emulator import HubEmulator
from tests.hub_fixtures import (  # noqa: F401  (emulator_fixture provides the emulator fixture)
    HUB_TRANSPORTS,
    REPO,
    TOKEN,
    commit_sizes,
    emulator_fixture,
    hub_env,
    hub_sync,
    in_process_gateway,
    journal_documents,
)

pytestmark = pytest.mark.timeout(180)
MiB = 1 << 20


def _src(tmp: Path, data: bytes) -> tuple[str, Path]:
    oid = hashlib.sha256(data).hexdigest()
    p = tmp / f"src-{oid[:12]}"
    p.write_bytes(data)
    return oid, p


def _read(store, oid: str, offset: int, length: int) -> bytes:
    with store.open_range(oid, offset, length) as s:
        out = bytearray()
        while piece := s.read(1 << 16):
            out += piece
        return bytes(out)


# -- the store ------------------------------------------------------------------------------
def test_backpressure_holds_adopt_until_uploads_make_room(tmp_path: Path):
    wb = WriteBackStore(LocalStore(tmp_path / "remote"), tmp_path / "wb", staging_limit=2 * MiB, cache_size=0)
    ids = []
    for _ in range(2):
        oid, src = _src(tmp_path, os.urandom(MiB - 1))
        wb.adopt(oid, src, MiB - 1)
        ids.append(oid)
    third, src = _src(tmp_path, os.urandom(MiB))
    done = threading.Event()
    t = threading.Thread(target=lambda: (wb.adopt(third, src, MiB), done.set()))
    t.start()
    t.join(0.5)
    assert not done.is_set(), "the third chunk must wait while 2 MiB are staged"
    wb.mark_uploaded(ids[0], in_remote=True)
    t.join(10)
    assert done.is_set()
    assert {i.object_id for i in wb.staged()} == {ids[1], third}
    assert wb.staged_bytes == 2 * MiB - 1


def test_an_object_larger_than_the_limit_passes_alone(tmp_path: Path):
    wb = WriteBackStore(LocalStore(tmp_path / "remote"), tmp_path / "wb", staging_limit=2 * MiB, cache_size=0)
    data = os.urandom(3 * MiB)
    oid, src = _src(tmp_path, data)
    wb.adopt(oid, src, len(data))
    assert _read(wb, oid, 0, len(data)) == data


def test_reads_come_from_staging_then_cache_then_remote(tmp_path: Path):
    remote = LocalStore(tmp_path / "remote")
    wb = WriteBackStore(remote, tmp_path / "wb", staging_limit=64 * MiB, cache_size=MiB)
    data = os.urandom(MiB // 2)
    oid, src = _src(tmp_path, data)
    wb.adopt(oid, src, len(data))
    assert wb.local_path(oid) == wb.staging_path(oid)
    # what the uploader does: copy to the remote, then release the staged copy into the cache
    copy = tmp_path / "copy"
    copy.write_bytes(data)
    remote.adopt(oid, copy, len(data))
    wb.mark_uploaded(oid, in_remote=True)
    assert wb.local_path(oid) == wb.cache_path(oid) and wb.staged_bytes == 0
    wb.mark_committed([oid])
    # fill the cache with other objects: the committed one is evicted (LRU), reads go remote
    for i in range(3):
        other, osrc = _src(tmp_path, os.urandom(MiB // 2) + bytes([i]))
        wb.adopt(other, osrc, MiB // 2 + 1)
        wb.mark_uploaded(other, in_remote=True)
        wb.mark_committed([other])
    assert wb.local_path(oid) is None
    assert _read(wb, oid, 100, 1000) == data[100:1100]


def test_a_read_during_the_move_from_staging_to_cache_stays_local(tmp_path: Path, monkeypatch):
    """An uploaded object moves from staging to the cache while a GET reads it (as after a
    restart, when the uploader sends what was staged): the read must not fall through to the
    remote, which does not hold uncommitted objects (a 500 on an acknowledged file)."""
    import gateway.store.writeback as writeback

    wb = WriteBackStore(LocalStore(tmp_path / "remote"), tmp_path / "wb", staging_limit=64 * MiB, cache_size=MiB)
    data = os.urandom(4096)
    oid, src = _src(tmp_path, data)
    wb.adopt(oid, src, len(data))
    real_replace = os.replace
    moving, go_on = threading.Event(), threading.Event()

    def slow_replace(a, b):
        if Path(b) == wb.cache_path(oid):
            moving.set()
            go_on.wait(0.3)
        return real_replace(a, b)

    monkeypatch.setattr(writeback.os, "replace", slow_replace)
    mover = threading.Thread(target=wb.mark_uploaded, args=(oid,), kwargs={"in_remote": False})
    mover.start()
    assert moving.wait(5)
    try:
        assert _read(wb, oid, 0, len(data)) == data  # the remote is empty: only a local read works
    finally:
        go_on.set()
        mover.join(5)


def test_a_read_that_loses_the_staged_file_to_the_move_finds_it_in_the_cache(tmp_path: Path, monkeypatch):
    import gateway.store.writeback as writeback

    wb = WriteBackStore(LocalStore(tmp_path / "remote"), tmp_path / "wb", staging_limit=64 * MiB, cache_size=MiB)
    data = os.urandom(4096)
    oid, src = _src(tmp_path, data)
    wb.adopt(oid, src, len(data))
    moved = []

    def open_after_the_move(path, *args, **kwargs):
        if not moved and Path(path) == wb.staging_path(oid):
            moved.append(True)
            wb.mark_uploaded(oid, in_remote=False)  # the uploader wins the race
        return open(path, *args, **kwargs)

    monkeypatch.setattr(writeback, "open", open_after_the_move, raising=False)
    assert _read(wb, oid, 0, len(data)) == data and moved


def test_uncommitted_objects_stay_cached_unless_the_remote_has_them(tmp_path: Path):
    wb = WriteBackStore(LocalStore(tmp_path / "remote"), tmp_path / "wb", staging_limit=64 * MiB, cache_size=MiB)
    inline, lfs = [], []
    for i in range(2):
        oid, src = _src(tmp_path, os.urandom(MiB) + bytes([i]))
        wb.adopt(oid, src, MiB + 1)
        wb.mark_uploaded(oid, in_remote=False)  # travels inside its commit: must stay local
        inline.append(oid)
    for i in range(2):
        oid, src = _src(tmp_path, os.urandom(MiB) + bytes([10 + i]))
        wb.adopt(oid, src, MiB + 1)
        wb.mark_uploaded(oid, in_remote=True)
        lfs.append(oid)
    assert all(wb.local_path(o) is not None for o in inline)
    assert sum(wb.local_path(o) is not None for o in lfs) < 2  # space ran out: LFS copies go first


def test_restart_finds_staged_and_cached_objects(tmp_path: Path):
    remote = LocalStore(tmp_path / "remote")
    wb = WriteBackStore(remote, tmp_path / "wb", staging_limit=64 * MiB, cache_size=64 * MiB)
    a, asrc = _src(tmp_path, b"a" * 1000)
    b, bsrc = _src(tmp_path, b"b" * 2000)
    wb.adopt(a, asrc, 1000)
    wb.adopt(b, bsrc, 2000)
    wb.mark_uploaded(b, in_remote=True)
    again = WriteBackStore(remote, tmp_path / "wb", staging_limit=64 * MiB, cache_size=64 * MiB)
    assert [i.object_id for i in again.staged()] == [a] and again.staged_bytes == 1000
    assert _read(again, b, 0, 2000) == b"b" * 2000


def test_a_read_during_the_move_from_staging_to_the_cache_stays_local(tmp_path: Path, monkeypatch):
    """An uploaded object is not in the remote's commit yet: a read while the uploader moves it
    from staging to the cache must find it locally (the remote here does not hold it at all)."""
    import gateway.store.writeback as writeback

    wb = WriteBackStore(LocalStore(tmp_path / "remote"), tmp_path / "wb", staging_limit=64 * MiB, cache_size=64 * MiB)
    data = os.urandom(3000)
    oid, src = _src(tmp_path, data)
    wb.adopt(oid, src, len(data))
    results: list[object] = []

    def reader() -> None:
        try:
            results.append(_read(wb, oid, 0, len(data)))
        except Exception as exc:  # the remote has no such object
            results.append(exc)

    real_replace = os.replace

    def replace_while_reading(a, b):
        thread = threading.Thread(target=reader)
        thread.start()
        thread.join(2)  # a reader that could go ahead now would have finished; else it waits for us
        real_replace(a, b)
        replace_while_reading.thread = thread

    monkeypatch.setattr(writeback.os, "replace", replace_while_reading)
    wb.mark_uploaded(oid, in_remote=True)
    monkeypatch.setattr(writeback.os, "replace", real_replace)
    replace_while_reading.thread.join(10)
    assert results == [data]


def test_delete_of_a_staged_object_is_local_only(tmp_path: Path):
    sunk: list[str] = []
    wb = WriteBackStore(
        LocalStore(tmp_path / "remote"), tmp_path / "wb", staging_limit=64 * MiB, cache_size=MiB, on_delete=sunk.extend
    )
    a, asrc = _src(tmp_path, b"a" * 100)
    b, bsrc = _src(tmp_path, b"b" * 100)
    wb.adopt(a, asrc, 100)
    wb.adopt(b, bsrc, 100)
    wb.mark_uploaded(b, in_remote=True)
    wb.delete([a, b])
    assert sunk == [b] and wb.staged_bytes == 0 and wb.local_path(a) is None


def _hub_wb(emu: HubEmulator, tmp: Path, data: bytes) -> tuple[WriteBackStore, str]:
    client = HubClient(REPO, token=TOKEN, endpoint=emu.url)
    client.ensure_repo()
    hub = HubStore(client, ids_are_sha256=True)
    oid, src = _src(tmp, data)
    hub.adopt(oid, src, len(data))
    return WriteBackStore(hub, tmp / "wb", staging_limit=64 * MiB, cache_size=64 * MiB), oid


def test_a_read_from_the_start_fills_the_cache(emulator: HubEmulator, tmp_path: Path):
    data = os.urandom(6 * MiB + 3)
    wb, oid = _hub_wb(emulator, tmp_path, data)
    assert _read(wb, oid, 0, 4096) == data[:4096]
    assert wait_until(lambda: wb.local_path(oid) is not None, 30)
    gets = emulator.stats["storage_gets"]
    assert _read(wb, oid, 0, len(data)) == data
    assert emulator.stats["storage_gets"] == gets  # served from the cache


def test_a_range_deep_inside_an_object_fetches_only_windows(emulator: HubEmulator, tmp_path: Path):
    data = os.urandom(20 * MiB)
    wb, oid = _hub_wb(emulator, tmp_path, data)
    before = emulator.stats["bytes_out"]
    assert _read(wb, oid, 15 * MiB, 1000) == data[15 * MiB : 15 * MiB + 1000]
    assert emulator.stats["bytes_out"] - before < 64 * 1024
    assert wb.local_path(oid) is None  # not cached
    # a long read from there grows its windows and returns the exact bytes
    assert _read(wb, oid, 7 * MiB + 1, 9 * MiB) == data[7 * MiB + 1 : 16 * MiB + 1]


def test_a_failing_fill_raises_instead_of_hanging(emulator: HubEmulator, tmp_path: Path):
    data = os.urandom(2 * MiB)
    wb, oid = _hub_wb(emulator, tmp_path, data)
    emulator.faults.add(method="GET", path=r"/objects/", kind="status", status=404, times=None)
    with pytest.raises(StoreError):
        _read(wb, oid, 0, len(data))


def test_commit_budget_refills_and_pauses():
    now = [0.0]
    budget = CommitBudget(per_hour=3600, burst=2, clock=lambda: now[0])
    assert budget.wait_time() == 0
    budget.take()
    budget.take()
    assert budget.wait_time() == pytest.approx(1.0)
    now[0] += 1.0
    assert budget.wait_time() == 0
    budget.pause(30)
    assert budget.wait_time() == pytest.approx(30.0)


# -- the pipeline ---------------------------------------------------------------------------
def _rebuilt_files(emu: HubEmulator, tmp: Path, name: str) -> dict[str, bytes]:
    """Rebuild a fresh data dir from the repo alone; every file's content."""
    with in_process_gateway(hub_env(emu, tmp / name)) as gw:
        return {n.path: gw.files.read_bytes(n.path) for n in gw.repo.walk("") if not n.is_dir}


def test_small_files_cost_few_commits(emulator: HubEmulator, tmp_path: Path):
    """Small files are packed and many changes share a commit (the 1,000-file bar is checked
    end to end in test_hub_e2e)."""
    files = {f"/docs/f{i:04d}.txt": f"small file {i}\n".encode() * (1 + i % 7) for i in range(300)}
    with in_process_gateway(hub_env(emulator, tmp_path / "data", HFDAV_COMMIT_INTERVAL="5")) as gw:
        initial = len(commit_sizes(emulator))
        gw.files.mkdir("/docs")
        for path, data in files.items():
            gw.files.write_bytes(path, data)
        assert hub_sync(gw).flush(120)
    sizes = commit_sizes(emulator)[initial:]
    assert 1 <= len(sizes) <= 6, sizes
    assert max(sizes) <= 100
    assert _rebuilt_files(emulator, tmp_path, "rebuilt") == files


def test_a_big_file_streams_through_a_small_staging_area(emulator: HubEmulator, tmp_path: Path):
    env = hub_env(emulator, tmp_path / "data", HFDAV_STAGING_LIMIT="2MiB")
    data = os.urandom(24 * MiB + 17)
    peak = [0]
    with in_process_gateway(env) as gw:
        wb = hub_sync(gw).wb
        session = gw.files.open_write("/big.bin", expected_length=len(data))
        for start in range(0, len(data), 256 * 1024):
            session.write(data[start : start + 256 * 1024])
            peak[0] = max(peak[0], wb.staged_bytes)
        session.commit()
        assert hub_sync(gw).flush(120)
        assert gw.files.read_bytes("/big.bin") == data
    assert peak[0] <= 2 * MiB + MiB
    objects = [p for p in emulator.repo_files(REPO) if p.startswith("objects/")]
    assert len(objects) == 25


def test_no_commit_exceeds_the_operation_limit(emulator: HubEmulator, tmp_path: Path):
    data = os.urandom(35 * MiB)
    with in_process_gateway(hub_env(emulator, tmp_path / "data")) as gw:
        initial = len(commit_sizes(emulator))
        hub_sync(gw).committer.max_operations = 10
        gw.files.write_bytes("/many-chunks.bin", data)
        assert hub_sync(gw).flush(120)
    sizes = commit_sizes(emulator)[initial:]
    assert len(sizes) >= 4 and max(sizes) <= 10, sizes
    assert _rebuilt_files(emulator, tmp_path, "rebuilt") == {"/many-chunks.bin": data}


def test_sync_durability_returns_once_committed(emulator: HubEmulator, tmp_path: Path):
    env = hub_env(emulator, tmp_path / "data", HFDAV_DURABILITY="sync", HFDAV_COMMIT_INTERVAL="3600")
    with in_process_gateway(env) as gw:
        gw.files.write_bytes("/now.txt", b"durable before the answer\n")
        puts = [d["e"] for d in journal_documents(emulator) if "e" in d and d["e"]["op"] == "put"]
        assert [p["path"] for p in puts] == ["/now.txt"]
        row = hub_sync(gw).repo.get_object(puts[0]["extents"][0][0])
        assert object_path(row.pack_id or row.id) in emulator.repo_files(REPO)


def test_deleted_files_chunks_leave_the_repo_in_batches(emulator: HubEmulator, tmp_path: Path):
    with in_process_gateway(hub_env(emulator, tmp_path / "data")) as gw:
        for i in range(30):
            gw.files.write_bytes(f"/f{i}.bin", os.urandom(2 * MiB))  # two whole chunks, nothing to pack
        keep = os.urandom(2 * MiB)
        gw.files.write_bytes("/keep.bin", keep)
        sync = hub_sync(gw)
        assert sync.flush(120)
        assert len([p for p in emulator.repo_files(REPO) if p.startswith("objects/")]) == 62
        initial = len(commit_sizes(emulator))
        for i in range(30):
            gw.files.delete(f"/f{i}.bin")
        gw.files.collect_garbage(grace_s=0)
        assert sync.flush(120)
        objects = [p for p in emulator.repo_files(REPO) if p.startswith("objects/")]
        assert len(objects) == 2
        assert len(commit_sizes(emulator)) - initial <= 3
    assert _rebuilt_files(emulator, tmp_path, "rebuilt") == {"/keep.bin": keep}


FAULTS = {
    "commit 503": [dict(method="POST", path=r"/commit/", kind="status", status=503, times=2)],
    "commit answer lost": [dict(method="POST", path=r"/commit/", kind="drop_after", times=2)],
    "commit dropped before": [dict(method="POST", path=r"/commit/", kind="drop_before", times=1)],
    "commit 409": [dict(method="POST", path=r"/commit/", kind="status", status=409, times=1)],
    "rate limited": [dict(method="POST", path=r"/commit/", kind="status", status=429, reset=1, times=1)],
    "preupload dropped": [dict(method="POST", path=r"/preupload/", kind="drop_before", times=1)],
}
TRANSPORT_FAULTS = {
    "lfs": {
        "LFS PUT 500": [dict(method="PUT", path=r"/upload/", kind="status", status=500, times=2)],
        "LFS PUT answer lost": [dict(method="PUT", path=r"/upload/", kind="drop_after", times=1)],
        "batch 502 and verify 500": [
            dict(method="POST", path=r"/objects/batch", kind="status", status=502, times=1),
            dict(method="POST", path=r"/verify", kind="status", status=500, times=1),
        ],
    },
    "xet": {
        "xorb PUT 500": [dict(method="PUT", path=r"^/xorb-uploads/", kind="status", status=500, times=2)],
        "xorb PUT answer lost": [dict(method="PUT", path=r"^/xorb-uploads/", kind="drop_after", times=1)],
        "xorb grant 503 and commit 500": [
            dict(method="POST", path=r"^/v1/xorb-grants/", kind="status", status=503, times=1),
            dict(method="POST", path=r"^/v1/xorb-commits/", kind="status", status=500, times=1),
        ],
        "write token 502 and shard 503": [
            dict(method="GET", path=r"/xet-write-token/", kind="status", status=502, times=1),
            dict(method="POST", path=r"^/v2/shards", kind="status", status=503, times=1),
        ],
    },
}
FAULT_CASES = [(t, name) for t in HUB_TRANSPORTS for name in [*sorted(FAULTS), *sorted(TRANSPORT_FAULTS[t])]]


@pytest.mark.parametrize(("hub_transport", "fault"), FAULT_CASES, indirect=["hub_transport"])
def test_injected_faults_lose_no_acknowledged_data(
    emulator: HubEmulator, tmp_path: Path, hub_transport: str, fault: str
):
    written = {f"/d/f{i}.bin": os.urandom(MiB * (i % 3) + 1000 + i) for i in range(12)}
    with in_process_gateway(hub_env(emulator, tmp_path / "data")) as gw:
        for spec in FAULTS.get(fault) or TRANSPORT_FAULTS[hub_transport][fault]:
            emulator.faults.add(**spec)
        gw.files.mkdir("/d")
        for path, data in written.items():
            gw.files.write_bytes(path, data)
        assert hub_sync(gw).flush(120)
        assert not emulator.faults.rules  # every fault fired
    assert _rebuilt_files(emulator, tmp_path, "rebuilt") == written


def test_a_concurrent_writer_moves_the_branch(emulator: HubEmulator, tmp_path: Path):
    """A commit on the branch by someone else (412 for our parent): ours goes on top of it."""
    with in_process_gateway(hub_env(emulator, tmp_path / "data")) as gw:
        sync = hub_sync(gw)
        gw.files.write_bytes("/a.txt", b"a" * 100)
        assert sync.flush(60)
        sync.client.commit([Add("notes.txt", data=b"hello\n")], [], message="someone else", parent=None)
        gw.files.write_bytes("/b.txt", b"b" * 100)
        assert sync.flush(60)
    assert _rebuilt_files(emulator, tmp_path, "rebuilt") == {"/a.txt": b"a" * 100, "/b.txt": b"b" * 100}
