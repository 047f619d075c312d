"""Issue bars checked on the Hub backend end to end (gateway in-process, real huggingface_hub
client, Hub emulator): small-file packing economy, and that an encrypted repo holds no
plaintext byte and no plaintext hash of any file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.hub_emulator import HubEmulator
from tests.hub_fixtures import REPO, commit_sizes, emulator_fixture, hub_env, hub_sync, in_process_gateway  # noqa: F401

KiB = 1024


def _repo_blobs(emu: HubEmulator) -> dict[str, bytes]:
    return {path: emu.read_file(REPO, path) for path in emu.repo_files(REPO)}


@pytest.mark.timeout(900)
def test_ten_thousand_small_files_cost_few_repo_files_and_commits(emulator: HubEmulator, tmp_path: Path):
    files = {f"/many/d{i % 20:02d}/f{i:05d}.bin": os.urandom(4 * KiB) for i in range(10_000)}
    env = hub_env(emulator, tmp_path / "data", HFDAV_CHUNK_SIZE="8MiB", HFDAV_COMMIT_INTERVAL="30")
    with in_process_gateway(env) as gw:
        before_files = len(emulator.repo_files(REPO))
        before_commits = len(commit_sizes(emulator))
        gw.files.mkdir("/many")
        for d in range(20):
            gw.files.mkdir(f"/many/d{d:02d}")
        for path, data in files.items():
            gw.files.write_bytes(path, data)
        assert hub_sync(gw).flush(600)
        repo_files = len(emulator.repo_files(REPO)) - before_files
        sizes = commit_sizes(emulator)[before_commits:]
        print(f"10,000 x 4 KiB: {repo_files} new repo files, {len(sizes)} commits, largest {max(sizes)} operations")
        assert repo_files <= 50
        assert len(sizes) <= 20 and max(sizes) <= 100
        # delete most files, then gc repacks what is left and the dead packs leave the repo
        doomed = [p for i, p in enumerate(files) if i % 10 != 0]
        for path in doomed:
            gw.files.delete(path)
        gw.packer.repack()
        gw.files.collect_garbage(grace_s=-1)
        assert hub_sync(gw).flush(600)
        survivors = {p: d for p, d in files.items() if p not in set(doomed)}
        assert {p: gw.files.read_bytes(p) for p in list(survivors)[:200]} == dict(list(survivors.items())[:200])
    objects = [p for p in emulator.repo_files(REPO) if p.startswith("objects/")]
    stored = sum(len(emulator.read_file(REPO, p)) for p in objects)
    assert stored < 2 * len(survivors) * 4 * KiB, "dead pack bytes were not reclaimed"


@pytest.mark.timeout(600)
def test_encrypted_repo_holds_no_plaintext_and_no_plaintext_hash(emulator: HubEmulator, tmp_path: Path):
    # contents: big (several chunks), small (packed), and two identical files (dedup)
    big = os.urandom(3 << 20)
    contents = {"/secret/big.bin": big, "/secret/copy-of-big.bin": big}
    contents |= {f"/secret/small{i}.txt": os.urandom(3000 + i) for i in range(20)}
    env = hub_env(emulator, tmp_path / "data", HFDAV_ENCRYPTION_KEY="passphrase:correct horse battery staple")
    with in_process_gateway(env) as gw:
        gw.files.mkdir("/secret")
        for path, data in contents.items():
            gw.files.write_bytes(path, data)
        assert hub_sync(gw).flush(300)
        gw.packer.pack_small_objects(force=True)
        assert hub_sync(gw).flush(300)
    blobs = _repo_blobs(emulator)
    needles: list[bytes] = []
    for data in contents.values():
        needles += [data[i : i + 32] for i in range(0, len(data) - 32, 4096)]
        digest = hashlib.sha256(data).digest()
        needles += [digest, digest.hex().encode()]
        for start in range(0, len(data), 1 << 20):  # every 1 MiB chunk's plain hash
            chunk_digest = hashlib.sha256(data[start : start + (1 << 20)]).digest()
            needles += [chunk_digest, chunk_digest.hex().encode()]
    leaks = [(path, n[:8].hex()) for path, blob in blobs.items() for n in needles if n in blob]
    assert leaks == [], f"{len(leaks)} plaintext pieces or plaintext hashes found in the repo"
    assert any(p.startswith("objects/") for p in blobs)
