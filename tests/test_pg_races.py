"""PostgreSQL under 4 gunicorn workers: workers starting together on a fresh database (SQLite
too), then concurrent PUT/DELETE/MOVE/COPY/MKCOL on the same few paths from many clients.
Nothing may be answered 500, no deadlock may reach the log, and the tree must be consistent
afterwards."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import pg_schema_url
from tests.test_multiprocess import _free_port

AUTH = ("admin", "pw")
WORKERS = 4
CLIENTS = 16
OPS_PER_CLIENT = 60

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_schema():
    with pg_schema_url("r_") as url:
        yield url


def _start(tmp_path, db_url, name):
    """gunicorn with 4 workers on ``db_url`` (nothing created beforehand); returns (proc, base, log)."""
    port = _free_port()
    env = dict(os.environ, HFDAV_DATA_DIR=str(tmp_path / "d"), HFDAV_DATABASE_URL=db_url, SYS_TOKEN="pw",
               HFDAV_LOG_LEVEL="WARNING", HFDAV_TRASH_DAYS="0")  # fmt: skip
    log_path = tmp_path / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", str(WORKERS), "--worker-class", "gthread",
             "--threads", "8", "--bind", f"127.0.0.1:{port}", "--no-control-socket", "gateway.wsgi:create_app()"],
            env=env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        try:
            requests.request("OPTIONS", base + "/", auth=AUTH, timeout=2)
            return proc, base, log_path
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    proc.wait(10)
    pytest.fail(f"gunicorn did not start (exit {proc.returncode}):\n{log_path.read_text()[-4000:]}")


def _errors(log: str) -> str:
    """The log's error records (WsgiDAV also logs a 409 with its traceback at ERROR level)."""
    blocks = log.split("\n20")
    return "\n".join(b[:3000] for b in blocks if " ERROR " in b[:80] and "DAVError: 4" not in b)


def _stop(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_workers_start_together_on_a_fresh_database(tmp_path, request, kind):
    db_url = request.getfixturevalue("pg_schema") if kind == "postgresql" else f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    proc, base, log_path = _start(tmp_path, db_url, "start")
    try:
        # every worker came up: connections spread over them all answer
        for _ in range(40):
            with requests.Session() as s:
                r = s.request("PROPFIND", base + "/", auth=AUTH, headers={"Depth": "0"}, timeout=10)
                assert r.status_code == 207
        assert proc.poll() is None
    finally:
        _stop(proc)
    log = log_path.read_text()
    assert "Traceback" not in log and "failed to boot" not in log.lower(), log[-4000:]


def _client(base: str, seed: int) -> list[tuple[str, str, int]]:
    rnd = random.Random(seed)
    files = [f"/r/f{i}" for i in range(4)] + [f"/r/d{i}/f" for i in range(2)]
    folders = ["/r/d0", "/r/d1"]
    out = []
    with requests.Session() as s:
        for _ in range(OPS_PER_CLIENT):
            op = rnd.choice(("PUT", "PUT", "PUT", "DELETE", "MOVE", "MOVE", "COPY", "MKCOL"))
            path = rnd.choice(folders if op == "MKCOL" else files + folders)
            headers = {}
            data = None
            if op == "PUT":
                path = rnd.choice(files)
                data = os.urandom(rnd.randint(0, 3000))
            if op in ("MOVE", "COPY"):
                headers = {"Destination": base + rnd.choice(files + folders), "Overwrite": rnd.choice("TF")}
            r = s.request(op, base + path, data=data, headers=headers, auth=AUTH, timeout=60)
            out.append((op, path, r.status_code))
    return out


def test_concurrent_writes_never_fail_with_500(tmp_path, pg_schema):
    proc, base, log_path = _start(tmp_path, pg_schema, "race")
    try:
        assert requests.request("MKCOL", base + "/r", auth=AUTH, timeout=10).status_code == 201
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = [r for rs in pool.map(lambda i: _client(base, i), range(CLIENTS)) for r in rs]
    finally:
        _stop(proc)
    failed = [r for r in results if r[2] >= 500]
    log = log_path.read_text()
    assert not failed, f"{len(failed)} of {len(results)} answered >= 500: {failed[:10]}\n{_errors(log)}"
    assert "deadlock" not in log.lower(), log[-4000:]
    assert not _errors(log), _errors(log)
    assert sum(1 for r in results if r[2] < 300) > len(results) // 4  # the clients did get work done

    from gateway.app import build_gateway
    from gateway.config import load_settings
    from gateway.maintenance import fsck

    settings = load_settings({"HFDAV_DATA_DIR": str(tmp_path / "d"), "HFDAV_DATABASE_URL": pg_schema,
                              "SYS_TOKEN": "pw", "HFDAV_TRASH_DAYS": "0"})  # fmt: skip
    gw = build_gateway(settings)
    try:
        report = fsck(gw)
    finally:
        gw.close()
    assert report.findings == [], report.findings


@pytest.fixture
def pg_repo(pg_schema):
    from gateway.meta.repo import MetadataRepository

    repo = MetadataRepository.open(pg_schema)
    yield repo
    repo.close()


def test_a_deadlock_is_retried_and_both_transactions_succeed(pg_repo):
    """Two transactions lock two rows in opposite orders: PostgreSQL aborts one, which runs again."""
    import threading

    from sqlalchemy import text

    from gateway.meta import db

    for key in ("k1", "k2"):
        pg_repo.set_setting(key, "0")
    barrier = threading.Barrier(2)
    attempts = {"a": 0, "b": 0}

    @db.retrying
    def touch(name, first, second):
        attempts[name] += 1
        with pg_repo._write() as c:
            c.execute(text("UPDATE settings SET value = :n WHERE key = :k"), {"n": name, "k": first})
            if attempts[name] == 1:
                barrier.wait(10)  # both hold their first row now
            c.execute(text("UPDATE settings SET value = :n WHERE key = :k"), {"n": name, "k": second})

    threads = [
        threading.Thread(target=touch, args=("a", "k1", "k2")),
        threading.Thread(target=touch, args=("b", "k2", "k1")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(attempts.values()) == [1, 2]  # one of them lost the deadlock and ran again
    assert pg_repo.get_setting("k1") == pg_repo.get_setting("k2")  # the second one's writes both landed
    assert pg_repo.last_write_error is None


def test_retries_exhausted_raise_database_busy(pg_repo):
    from sqlalchemy import text

    from gateway.meta import db

    calls = []

    @db.retrying
    def always_conflicts():
        calls.append(1)
        with pg_repo._write() as c:
            c.execute(text("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$"))

    with pytest.raises(db.DatabaseBusy) as err:
        always_conflicts()
    assert len(calls) == db.TRANSACTION_ATTEMPTS and err.value.transient and err.value.retry_after > 0
    assert pg_repo.health()["ok"] is False  # the failed write shows in the health check

    @db.retrying
    def not_transient():
        calls.append(2)
        with pg_repo._write() as c:
            c.execute(text("DO $$ BEGIN RAISE EXCEPTION 'bad' USING ERRCODE = 'data_exception'; END $$"))

    from sqlalchemy import exc as sa_exc

    with pytest.raises(sa_exc.DBAPIError):
        not_transient()
    assert calls.count(2) == 1
