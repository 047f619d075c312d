"""The repo is self-describing: a metadata database rebuilt from the repo alone serves the same
tree, byte for byte (start-up on an empty data dir, and ``hfdav rebuild``)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.store.hub import Add, HubClient
from gateway.sync.repofmt import FormatError, make_manifest
from tests.hub_emulator import HubEmulator
from tests.hub_fixtures import (  # noqa: F401  (emulator_fixture provides the emulator fixture)
    REPO,
    ROOT,
    TOKEN,
    check_repo_format,
    emulator_fixture,
    hub_env,
    hub_sync,
    in_process_gateway,
)

pytestmark = pytest.mark.timeout(180)
MiB = 1 << 20
PROP = "{urn:test}color"


def _tree(gw) -> dict[str, tuple]:
    """Everything a client can see of each node."""
    out = {}
    for n in gw.repo.walk(""):
        if n.path == "":
            continue
        content = None if n.is_dir else gw.files.read_bytes(n.path)
        props = gw.repo.get_properties(n.id)
        out[n.path] = (n.is_dir, content, n.size, n.etag, n.content_type, round(n.modified_at, 3), props)
    return out


def _populate(gw) -> None:
    f = gw.files
    f.mkdir("/photos")
    f.mkdir("/photos/2024")
    f.write_bytes("/photos/2024/big.raw", os.urandom(3 * MiB + 11), content_type="image/x-raw")
    for i in range(12):
        f.write_bytes(f"/photos/2024/thumb{i}.jpg", os.urandom(2000 + i))
    f.write_bytes("/notes.txt", b"first version\n")
    f.write_bytes("/notes.txt", b"second version\n")
    f.copy("/photos/2024/thumb0.jpg", "/thumb-copy.jpg")
    f.move("/photos/2024/thumb1.jpg", "/photos/moved.jpg")
    f.delete("/photos/2024/thumb2.jpg")
    f.set_mtime("/notes.txt", 1_600_000_000.5)
    f.create_empty("/empty.bin")
    node = gw.repo.get("/notes.txt")
    gw.repo.set_property(node.id, PROP, '<color xmlns="urn:test">blue</color>')


def test_an_empty_data_dir_is_restored_from_the_repo(emulator: HubEmulator, tmp_path: Path):
    with in_process_gateway(hub_env(emulator, tmp_path / "data")) as gw:
        _populate(gw)
        assert hub_sync(gw).flush(120)
        hub_sync(gw).committer.snapshot_now()
        gw.files.write_bytes("/after-snapshot.txt", b"journal only\n")
        assert hub_sync(gw).flush(120)
        before = _tree(gw)
    counts = check_repo_format(emulator, tmp_path / "hf-check")
    assert counts["snapshots"] == 1 and counts["journals"] >= 1
    shutil.rmtree(tmp_path / "data")
    with in_process_gateway(hub_env(emulator, tmp_path / "data")) as gw:
        assert _tree(gw) == before


def test_hfdav_rebuild_replaces_the_database_only_when_forced(emulator: HubEmulator, tmp_path: Path):
    env = hub_env(emulator, tmp_path / "data")
    with in_process_gateway(env) as gw:
        _populate(gw)
        assert hub_sync(gw).flush(120)
        before = _tree(gw)
    run_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    refused = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "rebuild"], env=run_env, capture_output=True, text=True
    )
    assert refused.returncode == 1 and "--force" in refused.stderr
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "rebuild", "--force"], env=run_env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rebuilt from the dataset repo" in done.stdout
    with in_process_gateway(env) as gw:
        after = _tree(gw)
    # dead properties are kept by snapshots only; this repo has none yet
    strip = {p: v[:-1] for p, v in before.items()}
    assert {p: v[:-1] for p, v in after.items()} == strip


def test_snapshots_replace_the_journal_files_they_cover(emulator: HubEmulator, tmp_path: Path):
    with in_process_gateway(hub_env(emulator, tmp_path / "data")) as gw:
        sync = hub_sync(gw)
        sync.committer.snapshot_every = 3
        for i in range(8):
            gw.files.write_bytes(f"/f{i}.txt", f"file {i}\n".encode())
            assert sync.flush(60)
        assert sync.flush(60)
        before = _tree(gw)
    names = sorted(emulator.repo_files(REPO))
    snapshots = [n for n in names if n.startswith("snapshots/")]
    journals = [n for n in names if n.startswith("journal/")]
    assert len(snapshots) == 1
    snap_batch = int(snapshots[0].split("/")[1].split(".")[0])
    assert all(int(j.split("/")[1].split(".")[0]) > snap_batch for j in journals)
    check_repo_format(emulator, tmp_path / "hf-check")
    with in_process_gateway(hub_env(emulator, tmp_path / "fresh")) as gw:
        assert _tree(gw) == before


def test_a_repo_of_a_newer_format_is_refused(emulator: HubEmulator, tmp_path: Path):
    client = HubClient(REPO, token=TOKEN, endpoint=emulator.url)
    client.ensure_repo()
    manifest = make_manifest(chunk_size=MiB, object_ids="sha256").replace(b'"version": 1', b'"version": 99')
    client.commit([Add("hfdav.json", data=manifest)], [], message="from the future", parent=None)
    with pytest.raises(FormatError, match="newer"), in_process_gateway(hub_env(emulator, tmp_path / "data")):
        pass


def test_a_foreign_repo_is_refused(emulator: HubEmulator, tmp_path: Path):
    client = HubClient(REPO, token=TOKEN, endpoint=emulator.url)
    client.ensure_repo()
    client.commit([Add("train.csv", data=b"a,b\n1,2\n")], [], message="a dataset", parent=None)
    with (
        pytest.raises(FormatError, match="not an hfdav repo"),
        in_process_gateway(hub_env(emulator, tmp_path / "data")),
    ):
        pass
    assert "hfdav.json" not in emulator.repo_files(REPO)


@pytest.mark.allow_error_log
def test_a_database_older_than_the_repo_is_refused(emulator: HubEmulator, tmp_path: Path):
    env = hub_env(emulator, tmp_path / "data")
    with in_process_gateway(env) as gw:
        gw.files.write_bytes("/a.txt", b"a")
        assert hub_sync(gw).flush(60)
    old_db = tmp_path / "old.sqlite3"
    shutil.copy(tmp_path / "data" / "meta.sqlite3", old_db)
    with in_process_gateway(env) as gw:
        gw.files.write_bytes("/b.txt", b"b")
        assert hub_sync(gw).flush(60)
    for suffix in ("-wal", "-shm"):
        (tmp_path / "data" / f"meta.sqlite3{suffix}").unlink(missing_ok=True)
    shutil.copy(old_db, tmp_path / "data" / "meta.sqlite3")
    with pytest.raises(FormatError, match="older than the dataset repo"), in_process_gateway(env):
        pass


def test_repacked_small_files_are_found_after_a_rebuild(emulator: HubEmulator, tmp_path: Path):
    """Pack records in later journal files move objects to their new pack."""
    with in_process_gateway(hub_env(emulator, tmp_path / "data")) as gw:
        sync = hub_sync(gw)
        by_id = {}
        for i in range(20):
            data = os.urandom(3000)
            gw.files.write_bytes(f"/s{i}.txt", data)
            by_id[hashlib.sha256(data).hexdigest()] = f"/s{i}.txt"
        assert sync.flush(60)
        # how the uploader grouped the files into packs depends on timing: empty the fullest
        # pack but for one member, so that it is mostly dead whatever the grouping was
        members = max((gw.repo.pack_members(pid) for pid, _, _ in gw.repo.pack_usage()), key=len)
        assert len(members) >= 3, "the small files were packed"
        for row in members[1:]:
            gw.files.delete(by_id[row.id])
        assert gw.packer is not None
        assert gw.packer.repack().packs >= 1
        gw.files.collect_garbage(grace_s=0)
        assert sync.flush(60)
        before = _tree(gw)
    check_repo_format(emulator, tmp_path / "hf-check")
    with in_process_gateway(hub_env(emulator, tmp_path / "fresh")) as gw:
        assert _tree(gw) == before


def test_one_process_per_data_dir(emulator: HubEmulator, tmp_path: Path):
    """A second process on the same data dir (hfdav gc while the server runs) is refused."""
    env = hub_env(emulator, tmp_path / "data")
    with in_process_gateway(env):
        run_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "gateway.cli", "gc"]
        second = subprocess.run(command, env=run_env, capture_output=True, text=True)
        assert second.returncode != 0
        assert "another hfdav process" in second.stderr


def test_an_encrypted_repo_is_rebuilt_with_its_key_record(emulator: HubEmulator, tmp_path: Path):
    """The key record travels in hfdav.json: a lost data dir comes back with the key alone."""
    from gateway.config import ConfigError

    key = {"HFDAV_ENCRYPTION_KEY": "ab" * 32}
    data = {f"/e{i}.bin": os.urandom(MiB * (i % 2) + 500 + i) for i in range(6)}
    with in_process_gateway(hub_env(emulator, tmp_path / "data", **key)) as gw:
        for path, content in data.items():
            gw.files.write_bytes(path, content)
        assert hub_sync(gw).flush(120)
    manifest = emulator.read_file(REPO, "hfdav.json")
    assert b'"object_ids": "keyed"' in manifest and b'"scheme"' in manifest
    for path in emulator.repo_files(REPO):
        if path.startswith("objects/"):
            blob = emulator.read_file(REPO, path)
            assert not any(content in blob for content in data.values() if len(content) < 2000)
    shutil.rmtree(tmp_path / "data")
    with pytest.raises(ConfigError, match="is encrypted"), in_process_gateway(hub_env(emulator, tmp_path / "data")):
        pass
    shutil.rmtree(tmp_path / "data")
    with in_process_gateway(hub_env(emulator, tmp_path / "data", **key)) as gw:
        assert {p: gw.files.read_bytes(p) for p in data} == data
