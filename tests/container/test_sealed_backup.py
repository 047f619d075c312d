"""The WebDAV metadata backup of an encrypted data dir is sealed: the remote server sees no file
or folder name; restoring it needs the key (without it, a clear refusal, also at boot)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from gateway.app import build_gateway
from gateway.config import load_settings
from gateway.sync.backup import BackupKeyError, Generation, MetadataBackup
from tests.container.support import WebDavTarget

pytestmark = pytest.mark.e2e

FOLDER = "backups/sealed"
KEY = "cd" * 32
FILES = {
    "/zebra-quartz-folder/zebra-quartz-report.pdf": b"%PDF zebra" * 5000,
    "/机密文件夹/季度财务报告.xlsx": b"quarterly" * 300,
}
NEEDLES = [b"zebra-quartz", "季度财务报告".encode(), "机密文件夹".encode()]


@pytest.fixture
def target(tmp_path):
    t = WebDavTarget(tmp_path / "remote").start()
    yield t
    t.stop()


def _env(tmp_path: Path, target: WebDavTarget, **extra: str) -> dict[str, str]:
    env = {
        "HFDAV_DATA_DIR": str(tmp_path / "data"),
        "SYS_TOKEN": "pw",
        "HFDAV_TRASH_DAYS": "0",
        "WEBDAV_URL": f"{target.url}{FOLDER}/",
    }
    return env | extra


def _write_files(env: dict[str, str]) -> None:
    gw = build_gateway(load_settings(env))
    try:
        for path, data in FILES.items():
            gw.files.mkdir(path.rsplit("/", 1)[0])
            gw.files.write_bytes(path, data)
    finally:
        gw.close()


def _remote_files(target: WebDavTarget) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (target.root / FOLDER).iterdir()}


def test_clear_backup_of_an_unencrypted_data_dir_shows_the_names(tmp_path, target):
    """The control for the sealed test: without encryption the names are in the backup."""
    env = _env(tmp_path, target)
    _write_files(env)
    backup = MetadataBackup.from_settings(load_settings(env))
    try:
        gen = backup.backup_once()
    finally:
        backup.close()
    assert not gen.sealed and not gen.name.endswith(".sealed")
    plain = gzip.decompress(_remote_files(target)[gen.name])
    assert all(n in plain for n in NEEDLES)


def test_sealed_backup_hides_names_and_restores_with_the_key(tmp_path, target):
    env = _env(tmp_path, target, HFDAV_ENCRYPTION_KEY=KEY)
    _write_files(env)
    settings = load_settings(env)
    backup = MetadataBackup.from_settings(settings)
    try:
        gen = backup.backup_once()
        assert gen is not None and gen.sealed and gen.name.endswith(".sqlite3.gz.sealed")
        assert Generation.parse(gen.name) == gen
        assert backup.backup_once() is None, "an unchanged database is not uploaded again"
    finally:
        backup.close()
    remote = _remote_files(target)
    assert list(remote) == [gen.name]
    blob = remote[gen.name]
    assert [n for n in NEEDLES if n in blob] == []
    with pytest.raises(OSError):
        gzip.decompress(blob)

    db = settings.data_dir / "meta.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)

    # without the key, or with another: a clear refusal, the database stays missing
    for other in (_env(tmp_path, target), _env(tmp_path, target, HFDAV_ENCRYPTION_KEY="ef" * 32)):
        refused = MetadataBackup.from_settings(load_settings(other))
        try:
            with pytest.raises(BackupKeyError, match="HFDAV_ENCRYPTION_KEY"):
                refused.restore_latest()
        finally:
            refused.close()
        assert not db.exists()

    backup = MetadataBackup.from_settings(settings)
    try:
        assert backup.restore_latest() == gen
    finally:
        backup.close()
    gw = build_gateway(settings)
    try:
        assert {p: gw.files.read_bytes(p) for p in FILES} == FILES
    finally:
        gw.close()


def test_boot_refuses_to_start_without_the_key_of_a_sealed_backup(tmp_path, target, monkeypatch):
    env = _env(tmp_path, target, HFDAV_ENCRYPTION_KEY=KEY)
    _write_files(env)
    backup = MetadataBackup.from_settings(load_settings(env))
    try:
        backup.backup_once()
    finally:
        backup.close()
    shutil.move(tmp_path / "data" / "meta.sqlite3", tmp_path / "kept.sqlite3")
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    import boot

    settings = load_settings(_env(tmp_path, target))
    keyless = MetadataBackup.from_settings(settings)
    try:
        with pytest.raises(boot.BootError, match="HFDAV_ENCRYPTION_KEY"):
            boot.restore_metadata(settings, keyless, None)
    finally:
        keyless.close()
    assert not (tmp_path / "data" / "meta.sqlite3").exists()
