"""A SQLite database file that was unwritable for a moment: writes must work again as soon as
it is writable (no restart), and the database health check must fail while writes fail.

SQLite opens a file it may not write read-only, silently, and such a connection stays
read-only; kept in the pool, it failed every write it was handed later. File permissions do not
bind root, so the scenario runs in a child process as user ``nobody`` when the tests run as root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

SCENARIO = textwrap.dedent(
    """
    import json, os, sys
    from gateway.meta.repo import MetadataRepository

    path = sys.argv[1]
    repo = MetadataRepository.open(f"sqlite:///{path}")
    out = {}

    def writes(prefix, n=40):
        failed = 0
        for i in range(n):
            try:
                repo.mkdir(f"/{prefix}{i}")
            except Exception:
                failed += 1
        return failed

    # the file becomes unwritable while the pool opens connections (readers come and go)
    os.chmod(path, 0o444)
    repo.engine.dispose()
    conns = [repo.engine.connect() for _ in range(8)]
    for c in conns:
        c.exec_driver_sql("SELECT 1").all()
        c.close()
    out["health_unwritable"] = repo.health()
    out["failed_unwritable"] = writes("ro", 3)
    os.chmod(path, 0o644)
    out["failed_after"] = writes("rw")
    out["health_after"] = repo.health()
    repo.close()
    print(json.dumps(out))
    """
)


def _as_nobody() -> list[str]:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv is missing: cannot drop privileges for file permissions")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def work_dir():
    """A folder the scenario's user owns (pytest's own temporary folders are root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="hfdav-ro-"))
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_writes_recover_after_the_database_file_was_unwritable(work_dir):
    work = work_dir
    script = work / "scenario.py"
    script.write_text(SCENARIO)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.run(
        [*_as_nobody(), sys.executable, str(script), str(work / "meta.sqlite3")],
        capture_output=True, text=True, timeout=120, env=env, cwd=work,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["failed_unwritable"] == 3  # nothing can be written then: the failures are real
    assert out["health_unwritable"]["ok"] is False, out
    assert out["failed_after"] == 0, out  # every pooled read-only connection was replaced
    assert out["health_after"]["ok"] is True, out


def test_health_reports_a_busy_writer_without_waiting_for_it(repo):
    """A long write transaction of another writer: the probe gives up after a short wait and
    says ``busy`` (the database works); real writes would wait for their turn."""
    import threading
    import time

    from gateway.meta import db

    holding, release = threading.Event(), threading.Event()

    def long_writer():
        with repo._write() as c:
            if repo.engine.dialect.name == "postgresql":  # SQLite's BEGIN IMMEDIATE holds the lock already
                from sqlalchemy import text

                c.execute(text("LOCK TABLE settings IN EXCLUSIVE MODE"))
            holding.set()
            release.wait(30)

    t = threading.Thread(target=long_writer)
    t.start()
    try:
        assert holding.wait(10)
        started = time.monotonic()
        report = repo.health()
        waited = time.monotonic() - started
    finally:
        release.set()
        t.join(30)
    assert report == {"ok": True, "write_probe": "busy"}, report
    assert waited < db.SQLITE_BUSY_TIMEOUT_S / 2  # the probe did not wait as long as a writer does
    assert repo.health() == {"ok": True}
