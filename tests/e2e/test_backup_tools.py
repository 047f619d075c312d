"""Backup tools that keep their repositories on a WebDAV drive: restic (through rclone's WebDAV
backend, the usual way to point restic at WebDAV) and duplicity (its own WebDAV backend).
Each backs a tree up, checks the repository by reading every byte back, adds a second snapshot,
prunes, and restores byte-identical."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.support import BOTH_KINDS, BOTH_SERVERS, MiB, Rclone, require_tool

pytestmark = [pytest.mark.e2e]

PASSWORD = "correct horse battery staple"


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
    env = {**rclone.env, "RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": str(tmp_path / "restic-cache"),
           "RESTIC_REPOSITORY": "rclone:hfdav:restic-repo"}  # fmt: skip
    exe = require_tool("restic")
    rclone_args = f"--config {rclone.config} serve restic --stdio --retries 1 --low-level-retries 1"

    def restic(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([exe, "-o", f"rclone.program={rclone.exe}", "-o", f"rclone.args={rclone_args}", *args], capture_output=True, text=True,
                              env=env, timeout=600)  # fmt: skip
        assert proc.returncode == 0, f"restic {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
        return proc

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
