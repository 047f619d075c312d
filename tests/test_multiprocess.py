"""Several server processes over one database: locks and dead properties are shared and
conflicting locks are never both granted (WsgiDAV's own check only guards one process)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

AUTH = ("admin", "pw")
LOCK_BODY = (
    '<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
    "<D:locktype><D:write/></D:locktype><D:owner>race</D:owner></D:lockinfo>"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def four_workers(tmp_path):
    port = _free_port()
    env = dict(os.environ, HFDAV_DATA_DIR=str(tmp_path / "d"), SYS_TOKEN="pw", HFDAV_LOG_LEVEL="WARNING")
    # create the schema once before the workers race to migrate it
    from gateway.meta.repo import MetadataRepository

    (tmp_path / "d").mkdir()
    MetadataRepository.open(f"sqlite:///{tmp_path / 'd' / 'meta.sqlite3'}").close()
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 - closed after the server stops
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "4", "--worker-class", "gthread", "--threads", "8",
         "--bind", f"127.0.0.1:{port}", "--no-control-socket", "gateway.wsgi:create_app()"],
        env=env, stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            requests.request("OPTIONS", base + "/", auth=AUTH, timeout=2)
            break
        except requests.RequestException:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("gunicorn did not start:\n" + (tmp_path / "gunicorn.log").read_text())
    yield base
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    log.close()


def test_concurrent_exclusive_locks_one_winner(four_workers):
    base = four_workers
    for attempt in range(3):
        url = f"{base}/race{attempt}.txt"
        assert requests.put(url, data=b"x", auth=AUTH, timeout=10).status_code == 201

        def lock(_, url=url):
            with requests.Session() as s:  # a fresh connection each: spread over workers
                return s.request("LOCK", url, data=LOCK_BODY, auth=AUTH, timeout=30).status_code

        with ThreadPoolExecutor(24) as pool:
            codes = list(pool.map(lock, range(24)))
        assert codes.count(200) == 1, codes
        assert set(codes) <= {200, 423}


def test_dead_property_visible_from_every_worker(four_workers):
    base = four_workers
    assert requests.put(base + "/p.txt", data=b"x", auth=AUTH, timeout=10).status_code == 201
    body = (
        '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x-test:">'
        "<D:set><D:prop><Z:color>blue</Z:color></D:prop></D:set></D:propertyupdate>"
    )
    assert requests.request("PROPPATCH", base + "/p.txt", data=body, auth=AUTH, timeout=10).status_code == 207
    for _ in range(20):
        with requests.Session() as s:
            r = s.request("PROPFIND", base + "/p.txt", auth=AUTH, headers={"Depth": "0"}, timeout=10)
            assert "blue" in r.text
