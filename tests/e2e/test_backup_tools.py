"""Backup tools that keep their repositories on a WebDAV drive: restic (through rclone's WebDAV
backend, the usual way to point restic at WebDAV) and duplicity (its own WebDAV backend).
Each backs a tree up, checks the repository by reading every byte back, adds a second snapshot,
prunes, and restores byte-identical."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.e2e.support import BOTH_KINDS, BOTH_SERVERS, MiB, Rclone, require_tool
from tests.hub_emulator import HubEmulator
from tests.hub_fixtures import PASSWORD as HUB_PASSWORD
from tests.hub_fixtures import emulator_fixture, hub_env, served  # noqa: F401  (the emulator fixture)

pytestmark = [pytest.mark.e2e]

PASSWORD = "correct horse battery staple"


def _restic(rclone: Rclone, tmp_path: Path):
    """``restic ARGS`` on the repository ``restic-repo`` of the drive, through ``rclone serve
    restic --stdio`` on the drive's WebDAV; fails the test on a non-zero exit."""
    env = {**rclone.env, "RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": str(tmp_path / "restic-cache"),
           "RESTIC_REPOSITORY": "rclone:hfdav:restic-repo"}  # fmt: skip
    exe = require_tool("restic")
    rclone_args = f"--config {rclone.config} serve restic --stdio --retries 1 --low-level-retries 1"

    def restic(*args: str) -> subprocess.CompletedProcess:
        argv = [exe, "-o", f"rclone.program={rclone.exe}", "-o", f"rclone.args={rclone_args}", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, f"restic {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
        return proc

    return restic


def _tree(root: Path) -> dict[str, bytes]:
    files = {
        "photos/big.raw": os.urandom(9 * MiB + 17),
        "docs/note.txt": b"restic me\n" * 100,
        "docs/empty": b"",
        "src/" + "x" * 40 + ".py": os.urandom(50_000),
        "unicod\u00e9 & co/f #1.bin": os.urandom(3000),
    }
    for i in range(40):
        files[f"many/small-{i:03}.txt"] = os.urandom(100 + i)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def _same_tree(restored: Path, files: dict[str, bytes]) -> None:
    found = {str(p.relative_to(restored)) for p in restored.rglob("*") if p.is_file()}
    assert found == set(files)
    for rel, data in files.items():
        assert (restored / rel).read_bytes() == data, rel


@pytest.mark.slow
@pytest.mark.requires_tool("restic")
@pytest.mark.requires_tool("rclone")
@BOTH_SERVERS
def test_restic_backup_check_prune_restore(server, tmp_path: Path):
    rclone = Rclone(server, tmp_path / "rclone")
    source = tmp_path / "source"
    files = _tree(source)
    restic = _restic(rclone, tmp_path)

    restic("init")
    restic("backup", "--host", "h", str(source))
    (source / "docs/note.txt").write_bytes(b"changed\n")
    files["docs/note.txt"] = b"changed\n"
    (source / "photos/big.raw").unlink()
    del files["photos/big.raw"]
    restic("backup", "--host", "h", str(source))
    restic("forget", "--keep-last", "1", "--prune")
    restic("check", "--read-data")
    restic("restore", "latest", "--target", str(tmp_path / "restored"))
    _same_tree(tmp_path / "restored" / source.relative_to("/"), files)


@pytest.mark.slow
@pytest.mark.requires_tool("duplicity")
@BOTH_KINDS
def test_duplicity_full_incremental_verify_restore(kind, server_factory, tmp_path: Path):
    # Basic only: duplicity's Digest keys the password on the host without the port, so on any
    # port but the scheme's default it answers a Digest challenge with "Digest None".
    server = server_factory.start(kind, env={"HFDAV_DIGEST": "off"})
    source = tmp_path / "source"
    files = _tree(source)
    exe = require_tool("duplicity")
    scheme = "webdav"
    host = server.url.split("://", 1)[1].rstrip("/")
    target = f"{scheme}://{server.user}@{host}/duplicity-repo"
    env = {**os.environ, "PASSPHRASE": PASSWORD, "FTP_PASSWORD": server.password, "HOME": str(tmp_path)}
    common = ["--archive-dir", str(tmp_path / "dup-cache"), "--num-retries", "1"]

    def duplicity(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([exe, *args, *common], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, f"duplicity {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
        return proc

    duplicity("full", str(source), target)
    (source / "docs/note.txt").write_bytes(b"changed again\n")
    files["docs/note.txt"] = b"changed again\n"
    duplicity("incremental", str(source), target)
    duplicity("verify", "--compare-data", target, str(source))
    duplicity("restore", target, str(tmp_path / "restored"))
    _same_tree(tmp_path / "restored", files)


@pytest.mark.slow
@pytest.mark.requires_tool("restic")
@pytest.mark.requires_tool("rclone")
def test_restic_repository_on_the_hub_survives_a_wiped_data_dir(emulator: HubEmulator, tmp_path: Path):
    """restic's packs and index in Hub mode: once synced, the data dir goes, and the repository
    rebuilt from the dataset repo alone passes ``check --read-data`` and restores every byte."""
    source = tmp_path / "source"
    files = _tree(source)
    data_dir = tmp_path / "data"
    env = hub_env(emulator, data_dir)
    with served(env, tmp_path / "server.log") as srv:
        rclone = Rclone(SimpleNamespace(url=srv.url, user="admin", password=HUB_PASSWORD), tmp_path / "rclone")
        restic = _restic(rclone, tmp_path)
        restic("init")
        restic("backup", "--host", "h", str(source))
        srv.wait_synced(300)
    shutil.rmtree(data_dir)
    shutil.rmtree(tmp_path / "restic-cache", ignore_errors=True)
    with served(env, tmp_path / "server2.log") as srv:
        rclone = Rclone(SimpleNamespace(url=srv.url, user="admin", password=HUB_PASSWORD), tmp_path / "rclone2")
        restic = _restic(rclone, tmp_path)
        restic("check", "--read-data")
        restic("restore", "latest", "--target", str(tmp_path / "restored"))
    _same_tree(tmp_path / "restored" / source.relative_to("/"), files)
