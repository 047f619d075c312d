"""Maintenance of a live drive in Hub mode: ``hfdav`` commands next to a running ``hfdav serve``
(subprocess, on the Hub emulator) go through the server's admin API and change the live drive;
the CLI never opens the repo as a second writer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub_fixtures import PASSWORD, REPO, ROOT, MiB, emulator_fixture, hub_env, served  # noqa: F401


def hfdav(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT), "HFDAV_LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], env=full, cwd=cwd,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)  # fmt: skip


@pytest.mark.slow
def test_cli_maintains_the_running_hub_drive_through_the_admin_api(emulator, tmp_path: Path):
    data_dir = tmp_path / "data"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = hub_env(emulator, data_dir, HFDAV_TRASH_DAYS="7")
    with served(env, tmp_path / "server.log") as srv:
        s = srv.session()
        big = os.urandom(3 * MiB + 5)
        assert s.put(srv.url + "/big.bin", data=big, timeout=60).status_code == 201
        assert s.put(srv.url + "/note.txt", data=b"keep me", timeout=60).status_code == 201
        assert s.delete(srv.url + "/note.txt", timeout=60).status_code == 204
        assert (data_dir / "server.json").exists()

        out = hfdav(env, "stats", "--json", cwd=cwd)
        assert out.returncode == 0, out.stderr
        stats = json.loads(out.stdout)
        assert stats["backend"] == "hub" and stats["bytes_in_files"] == len(big) + 7 and stats["trash_entries"] == 1
        human = hfdav(env, "stats", cwd=cwd)
        assert "in files: 3.0 MiB" in human.stdout, human

        listing = hfdav(env, "trash", "list", cwd=cwd)
        assert listing.returncode == 0 and "/note.txt" in listing.stdout, listing
        trash_path = listing.stdout.split("->")[1].strip()
        restored = hfdav(env, "trash", "restore", trash_path, cwd=cwd)
        assert restored.returncode == 0 and "restored to /note.txt" in restored.stdout, restored
        assert s.get(srv.url + "/note.txt", timeout=60).content == b"keep me"  # the live drive changed

        fsck = hfdav(env, "fsck", "--json", cwd=cwd)
        assert fsck.returncode == 0, fsck.stderr
        assert json.loads(fsck.stdout)["findings"] == []

        refused = hfdav(env, "gc", "--squash", cwd=cwd)  # no terminal, no --yes
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "--yes" in refused.stderr
        squashes = emulator.stats["super_squashes"]
        gc = hfdav(env, "gc", "--squash", "--yes", cwd=cwd)
        assert gc.returncode == 0, gc.stderr
        assert "history squashed: yes" in gc.stdout
        assert emulator.stats["super_squashes"] == squashes + 1 and emulator.commit_count(REPO) == 1

        before = emulator.stats["bytes_out"]
        verify = hfdav(env, "verify", "--json", cwd=cwd)
        assert verify.returncode == 0, verify.stderr
        report = json.loads(verify.stdout)
        assert report["copy"].startswith(f"hub:{REPO}@") and report["findings"] == []
        assert report["objects_hashed"] >= 4 and report["bytes_hashed"] >= len(big)
        assert emulator.stats["bytes_out"] - before >= len(big)  # read back from the Hub, not the cache

        sync = hfdav(env, "sync", "status", "--json", cwd=cwd)
        assert sync.returncode == 0 and json.loads(sync.stdout)["repo"] == REPO, sync

        into = tmp_path / "rebuilt"
        rebuilt = hfdav(env, "rebuild", "--into", str(into), cwd=cwd)
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert "2 files" in rebuilt.stdout and (into / "meta.sqlite3").exists()

        # after the squash the drive still serves and stores
        assert s.get(srv.url + "/big.bin", timeout=60).content == big
        assert s.put(srv.url + "/after.txt", data=b"new", timeout=60).status_code == 201
        log = srv.log_text()
    for endpoint in ("stats", "trash/restore", "fsck", "gc", "verify", "rebuild"):
        assert f"/.hfdav-admin/{endpoint}" in log, endpoint  # every command went through the server
    assert not (cwd / "data").exists()  # no second drive (and writer) next to the live one
    assert not (data_dir / "server.json").exists()  # the server removed its record when it stopped

    # with no server, the same commands open the data dir themselves
    direct = hfdav(env, "verify", "--json", cwd=cwd)
    assert direct.returncode == 0, direct.stderr
    assert json.loads(direct.stdout)["copy"].startswith(f"hub:{REPO}@")
    assert json.loads(hfdav(env, "stats", "--json", cwd=cwd).stdout)["bytes_in_files"] == len(big) + 7 + 3


def test_upload_to_the_hub_logs_at_every_tenth():
    from gateway.sync.hubsync import _reported_chunk

    assert [i for i in range(1, 401) if _reported_chunk(i, 400)] == [*range(40, 400, 40), 400]
    assert [i for i in range(1, 5) if _reported_chunk(i, 4)] == [1, 2, 3, 4]
    assert [i for i in range(1, 60) if _reported_chunk(i, None)] == [1, 26, 51]
