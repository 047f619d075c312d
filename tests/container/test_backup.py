"""The metadata backup against real WebDAV servers started by the test: stock WsgiDAV
(anonymous) and ``hfdav serve`` itself (Basic credentials)."""

from __future__ import annotations

import gzip
import logging
import sqlite3
import threading
import time

import pytest

from gateway.cli import main as cli_main
from gateway.meta.repo import MetadataRepository
from gateway.sync.backup import (
    BackupError,
    BackupLoop,
    Generation,
    MetadataBackup,
    WebDavFolder,
    sqlite_path,
)
from tests.container.support import WebDavTarget
from tests.e2e.support import ServerFactory, free_port

pytestmark = pytest.mark.e2e

FOLDER = "backups/hfdav"


@pytest.fixture
def wsgidav_target(tmp_path):
    target = WebDavTarget(tmp_path / "remote").start()
    yield target
    target.stop()


@pytest.fixture(params=["wsgidav", "hfdav"])
def target(request, tmp_path):
    """(folder URL, user, password) on a fresh server of either kind."""
    if request.param == "wsgidav":
        t = WebDavTarget(tmp_path / "remote").start()
        yield f"{t.url}{FOLDER}/", None, None
        t.stop()
        return
    factory = ServerFactory(tmp_path / "servers")
    srv = factory.start("cheroot")
    yield f"{srv.url}{FOLDER}/", srv.user, srv.password
    problems = factory.close()
    assert not problems, problems


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "data" / "meta.sqlite3"
    path.parent.mkdir()
    repo = MetadataRepository.open(f"sqlite:///{path}")
    yield path, repo
    repo.close()


def _backup(db_path, url, user=None, password=None, keep=3) -> MetadataBackup:
    return MetadataBackup(db_path, WebDavFolder(url, user, password), keep=keep)


def _names_in(db_path) -> set[str]:
    with sqlite3.connect(db_path) as conn:
        return {row[0] for row in conn.execute("SELECT path FROM nodes")}


def test_generations_verified_pruned_and_restored(target, db, tmp_path):
    url, user, password = target
    db_path, repo = db
    backup = _backup(db_path, url, user, password, keep=3)
    try:
        made = []
        for i in range(5):
            repo.mkdir(f"/folder-{i}")
            gen = backup.backup_once()
            assert gen is not None
            made.append(gen)
        assert backup.backup_once() is None, "an unchanged database must not make a new generation"

        gens = backup.generations()
        assert [g.seq for g in gens] == [5, 4, 3], "newest three kept, newest first"
        assert [g.name for g in gens] == [g.name for g in reversed(made[2:])]
        assert all(Generation.parse(g.name) == g for g in gens)

        restored = tmp_path / "restored" / "meta.sqlite3"
        assert backup.restore_latest(restored) == gens[0]
        assert {f"/folder-{i}" for i in range(5)} <= _names_in(restored)
        reopened = MetadataRepository.open(f"sqlite:///{restored}")
        try:
            assert reopened.get("/folder-4") is not None
        finally:
            reopened.close()
    finally:
        backup.close()


def test_damaged_newest_generation_falls_back_to_older(wsgidav_target, db, tmp_path, caplog):
    db_path, repo = db
    url = f"{wsgidav_target.url}{FOLDER}/"
    backup = _backup(db_path, url)
    try:
        repo.mkdir("/kept")
        good = backup.backup_once()
        # a newer generation whose content does not match its name, then one that is not a database
        folder = wsgidav_target.root / FOLDER
        (folder / "hfdav-meta-20990101T000000.000Z-000002-0000000000000000.sqlite3.gz").write_bytes(b"junk")
        not_db = gzip.compress(b"not a database at all" * 100, mtime=0)
        import hashlib

        sha = hashlib.sha256(not_db).hexdigest()
        (folder / f"hfdav-meta-20990101T000000.000Z-000003-{sha[:16]}.sqlite3.gz").write_bytes(not_db)

        restored = tmp_path / "r" / "meta.sqlite3"
        with caplog.at_level(logging.WARNING, logger="gateway.sync.backup"):
            assert backup.restore_latest(restored) == good
        assert "/kept" in _names_in(restored)
        assert "does not match its name" in caplog.text
        assert "not a usable SQLite database" in caplog.text or "integrity" in caplog.text
    finally:
        backup.close()


def test_snapshot_is_consistent_while_the_gateway_writes(wsgidav_target, db, tmp_path):
    """Snapshots taken while another thread keeps changing the tree restore to intact
    databases in which every node's parent exists."""
    db_path, repo = db
    backup = _backup(db_path, f"{wsgidav_target.url}{FOLDER}/", keep=10)
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            repo.mkdir(f"/w{i}")
            repo.mkdir(f"/w{i}/sub")
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(3):
            backup.backup_once()
    finally:
        stop.set()
        thread.join()
    try:
        for gen in backup.generations():
            restored = tmp_path / gen.name / "meta.sqlite3"
            restored.parent.mkdir()
            backup.folder.download(gen.name, restored.with_suffix(".gz"))
            restored.write_bytes(gzip.decompress(restored.with_suffix(".gz").read_bytes()))
            with sqlite3.connect(restored) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                orphans = conn.execute(
                    "SELECT count(*) FROM nodes n WHERE n.parent_id IS NOT NULL "
                    "AND NOT EXISTS (SELECT 1 FROM nodes p WHERE p.id = n.parent_id)"
                ).fetchone()[0]
                assert orphans == 0
    finally:
        backup.close()


def test_wrong_password_is_reported(tmp_path, db):
    db_path, _repo = db
    factory = ServerFactory(tmp_path / "servers")
    srv = factory.start("cheroot")
    try:
        backup = _backup(db_path, f"{srv.url}{FOLDER}/", srv.user, "wrong")
        with pytest.raises(BackupError, match="HTTP 401"):
            backup.backup_once()
        backup.close()
    finally:
        assert not factory.close()


def test_loop_retries_until_the_server_answers(tmp_path, db, caplog):
    db_path, repo = db
    repo.mkdir("/x")
    port = free_port()
    target = WebDavTarget(tmp_path / "remote", port=port)
    backup = _backup(db_path, f"{target.url}{FOLDER}/")
    loop = BackupLoop(backup, interval=1, retry_first=0.5)
    with caplog.at_level(logging.WARNING, logger="gateway.sync.backup"):
        loop.start()
        try:
            deadline = time.monotonic() + 60
            while loop.failures < 2:
                assert time.monotonic() < deadline, "the loop never reported a failure"
                time.sleep(0.1)
            target.start()
            while loop.last_success is None:
                assert time.monotonic() < deadline, f"no backup after the server came up: {caplog.text}"
                time.sleep(0.1)
        finally:
            loop.stop()
            target.stop()
            backup.close()
    assert "metadata backup failed (attempt 1" in caplog.text
    assert target.files(FOLDER) == [loop.last_success.name]


def test_cli_backup_list_and_restore(tmp_path, wsgidav_target, monkeypatch, capsys):
    data = tmp_path / "d"
    monkeypatch.setenv("HFDAV_DATA_DIR", str(data))
    monkeypatch.setenv("SYS_TOKEN", "pw")
    monkeypatch.setenv("WEBDAV_URL", f"{wsgidav_target.url}{FOLDER}")
    data.mkdir()
    repo = MetadataRepository.open(f"sqlite:///{data / 'meta.sqlite3'}")
    repo.mkdir("/from-cli")
    repo.close()

    assert cli_main(["backup"]) == 0
    name = capsys.readouterr().out.split()[-1]
    assert Generation.parse(name) is not None
    assert cli_main(["backup"]) == 0
    assert "unchanged" in capsys.readouterr().out
    assert cli_main(["backup", "--list"]) == 0
    assert name in capsys.readouterr().out

    assert cli_main(["restore"]) == 1, "must refuse to replace an existing database"
    assert "--force" in capsys.readouterr().err
    (data / "meta.sqlite3").unlink()
    assert cli_main(["restore"]) == 0
    assert name in capsys.readouterr().out
    assert "/from-cli" in _names_in(data / "meta.sqlite3")


def test_only_sqlite_is_backed_up():
    assert sqlite_path("sqlite:////data/meta.sqlite3").as_posix() == "/data/meta.sqlite3"
    assert sqlite_path("sqlite+pysqlite:///rel/m.db?timeout=5").as_posix() == "rel/m.db"
    assert sqlite_path("postgresql+psycopg://u@h/db") is None
    assert sqlite_path("sqlite:///:memory:") is None
