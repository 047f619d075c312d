"""Sealed metadata: with client-side encryption the repo's journal files and snapshots are sealed
blobs, so no file or folder name, dead property or size list reaches the dataset repo in clear;
a lost data dir still comes back with the key alone."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from gateway.config import ConfigError
from gateway.crypto_keys import EncryptionSecret, Keyring
from gateway.errors import IntegrityError
from gateway.sync.hubsync import HubSync
from gateway.sync.repofmt import Entry, FormatError, JournalFile, MetadataCodec, PackRecord
from tests.hub_emulator import HubEmulator
from tests.hub_fixtures import REPO, TOKEN, emulator_fixture, hub_env, hub_sync, in_process_gateway  # noqa: F401

KEY = {"HFDAV_ENCRYPTION_KEY": "passphrase:correct horse battery staple"}
MiB = 1 << 20
#: Names and a property that must never appear in the repo in clear.
FOLDER = "/zebra-quartz-folder"
CHINESE_FOLDER = "/机密文件夹"
PROP_NAME = "{urn:x-hfdav-test:}walrus-octagon-tag"
PROP_VALUE = "platypus-marmalade-value"
FILES = {
    f"{FOLDER}/zebra-quartz-report.pdf": 3 * MiB + 17,
    f"{FOLDER}/narwhal-juniper-notes.txt": 4000,
    f"{CHINESE_FOLDER}/季度财务报告.xlsx": 5000,
    f"{CHINESE_FOLDER}/子目录甲/会议纪要.txt": 70_000,
    "/ocelot-tangerine.bin": 0,
}


def _needles() -> list[bytes]:
    words = {PROP_NAME, PROP_VALUE, "walrus-octagon-tag"}
    for path in FILES:
        words.update(part for part in path.split("/") if part)
    out: list[bytes] = []
    for word in words:
        out += [word.encode("utf-8"), json.dumps(word).encode()[1:-1]]  # as is, and JSON-escaped
    return out


def _every_file_in_history(emu: HubEmulator) -> dict[tuple[str, str], bytes]:
    """Every file of every commit of the branch (not only the head), by (commit, path)."""
    repo = emu.store.get("dataset", REPO)
    out = {}
    for commit in repo.history(emu.head(REPO)):
        for path, entry in commit.tree.items():
            out[(commit.id[:8], path)] = repo.path_of(entry).read_bytes()
    return out


def _write_tree(gw, contents: dict[str, bytes]) -> None:
    for folder in (FOLDER, CHINESE_FOLDER, f"{CHINESE_FOLDER}/子目录甲"):
        gw.files.mkdir(folder)
    for path, data in contents.items():
        gw.files.write_bytes(path, data)
    node = gw.repo.get(f"{FOLDER}/zebra-quartz-report.pdf")
    gw.repo.set_property(node.id, PROP_NAME, PROP_VALUE)


def _tree(gw) -> dict[str, tuple[bool, int, float, str | None]]:
    return {n.path: (n.is_dir, n.size, n.modified_at, n.etag) for n in gw.repo.walk("") if n.path}


@pytest.mark.timeout(600)
def test_sealed_repo_shows_no_name_and_rebuilds_with_the_key(emulator: HubEmulator, tmp_path: Path):
    contents = {path: os.urandom(size) for path, size in FILES.items()}
    env = hub_env(emulator, tmp_path / "data", **KEY)
    with in_process_gateway(env) as gw:
        sync = hub_sync(gw)
        sync.committer.snapshot_every = 3
        _write_tree(gw, contents)
        assert sync.flush(120)
        for i in range(6):  # enough batches for a snapshot, and journal files after it
            gw.files.write_bytes(f"{FOLDER}/later-{i}.txt", b"x" * i)
            assert sync.flush(60)
        sync.committer.snapshot_every = 1000  # the next changes stay in journal files
        gw.files.move(f"{FOLDER}/later-0.txt", f"{CHINESE_FOLDER}/后来的文件.txt")
        contents[f"{CHINESE_FOLDER}/后来的文件.txt"] = b""
        assert sync.flush(60)
        before = _tree(gw)
        props_before = gw.repo.get_properties(gw.repo.get(f"{FOLDER}/zebra-quartz-report.pdf").id)
    assert props_before == {PROP_NAME: PROP_VALUE}

    head = emulator.repo_files(REPO)
    assert any(p.startswith("snapshots/") for p in head), "no snapshot was taken"
    assert any(p.startswith("journal/") for p in head), "no journal file after the snapshot"
    manifest = json.loads(emulator.read_file(REPO, "hfdav.json"))
    assert manifest["version"] == 2 and manifest["metadata"] == "sealed" and manifest["sealed_from"] == 1
    assert "journal/** filter=lfs" in emulator.read_file(REPO, ".gitattributes").decode()
    for path in head:
        if path.startswith(("journal/", "snapshots/")):
            assert emulator.read_file(REPO, path)[:4] == b"HFDB", f"{path} is not sealed"
    from huggingface_hub import HfApi

    listing = HfApi(endpoint=emulator.url, token=TOKEN).list_repo_tree(REPO, repo_type="dataset", recursive=True)
    for entry in listing:
        if entry.path.startswith(("journal/", "snapshots/")):
            assert getattr(entry, "lfs", None) is not None, f"{entry.path} (binary) is not an LFS file"

    files = _every_file_in_history(emulator)
    assert any(p.startswith("journal/") for _c, p in files) and any(p.startswith("snapshots/") for _c, p in files)
    leaks = sorted(
        {(p, n.decode("utf-8", "replace")) for (_c, p), blob in files.items() for n in _needles() if n in blob}
    )
    assert leaks == [], f"names in clear in the repo: {leaks}"

    shutil.rmtree(tmp_path / "data")
    with pytest.raises(ConfigError, match="is encrypted"), in_process_gateway(hub_env(emulator, tmp_path / "data")):
        pass
    shutil.rmtree(tmp_path / "data", ignore_errors=True)
    with in_process_gateway(hub_env(emulator, tmp_path / "data", **KEY)) as gw:
        assert _tree(gw) == before
        assert {p: gw.files.read_bytes(p) for p in contents} == contents
        node = gw.repo.get(f"{FOLDER}/zebra-quartz-report.pdf")
        assert gw.repo.get_properties(node.id) == {PROP_NAME: PROP_VALUE}


@pytest.mark.timeout(600)
def test_an_encrypted_repo_with_metadata_in_clear_gets_sealed(
    emulator: HubEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A repo encrypted before sealing existed: from the next batch on its metadata is sealed, and
    a snapshot replaces the files in clear at the head."""
    contents = {path: os.urandom(size) for path, size in FILES.items()}
    original_init = HubSync.__init__

    def without_sealer(self, **kwargs):
        original_init(self, **{**kwargs, "sealer": None})

    with monkeypatch.context() as patch:
        patch.setattr(HubSync, "__init__", without_sealer)
        with in_process_gateway(hub_env(emulator, tmp_path / "data", **KEY)) as gw:
            _write_tree(gw, contents)
            assert hub_sync(gw).flush(120)
    legacy = json.loads(emulator.read_file(REPO, "hfdav.json"))
    assert legacy["version"] == 1 and legacy["encryption"] and "metadata" not in legacy
    clear_journals = [p for p in emulator.repo_files(REPO) if p.startswith("journal/")]
    assert clear_journals and b"zebra-quartz-report.pdf" in emulator.read_file(REPO, clear_journals[-1])

    with in_process_gateway(hub_env(emulator, tmp_path / "data", **KEY)) as gw:
        sync = hub_sync(gw)
        gw.files.write_bytes(f"{FOLDER}/after-sealing.txt", b"new")
        contents[f"{FOLDER}/after-sealing.txt"] = b"new"
        assert sync.flush(120)
        sync.committer.snapshot_now()
        before = _tree(gw)
    manifest = json.loads(emulator.read_file(REPO, "hfdav.json"))
    assert manifest["metadata"] == "sealed" and manifest["sealed_from"] == len(clear_journals) + 1
    head = emulator.repo_files(REPO)
    assert not any(p.startswith("journal/") for p in head), "the snapshot replaces every journal file"
    leaks = [(p, n) for p in head for n in _needles() if n in emulator.read_file(REPO, p)]
    assert leaks == []

    shutil.rmtree(tmp_path / "data")
    with in_process_gateway(hub_env(emulator, tmp_path / "data", **KEY)) as gw:
        assert _tree(gw) == before
        assert {p: gw.files.read_bytes(p) for p in contents} == contents


def _keyring() -> Keyring:
    return Keyring.create(EncryptionSecret("key", b"k" * 32))


def _journal(batch: int) -> JournalFile:
    entries = [Entry(batch * 10, 1.5, {"op": "mkdir", "path": "/zebra-quartz-folder", "mtime": 1.5})]
    return JournalFile(batch, batch * 10, [PackRecord("ab" * 32, 10, (("cd" * 32, 0, 10),))], entries, at=2.0)


def test_codec_seals_journal_files_and_refuses_clear_ones_once_sealed(tmp_path: Path):
    ring = _keyring()
    codec = MetadataCodec(ring, sealed_from=3)
    blob = codec.journal_bytes(_journal(4))
    assert b"zebra" not in blob and blob[:4] == b"HFDB"
    assert codec.read_journal(4, blob) == _journal(4)
    # files in clear: accepted below sealed_from (written before sealing), refused from it on
    assert codec.read_journal(2, _journal(2).encode()) == _journal(2)
    with pytest.raises(IntegrityError):
        codec.read_journal(3, _journal(3).encode())
    with pytest.raises(IntegrityError):  # a journal blob cannot pass for a snapshot
        snap = tmp_path / "snap"
        snap.write_bytes(blob)
        codec.open_snapshot(4, snap)
    with pytest.raises(IntegrityError):  # another key
        MetadataCodec(_keyring()).read_journal(4, blob)
    with pytest.raises(FormatError, match="sealed"):  # a reader of a repo in clear
        MetadataCodec().read_journal(4, blob)
    assert MetadataCodec().journal_bytes(_journal(4)) == _journal(4).encode(), "repos in clear are unchanged"
