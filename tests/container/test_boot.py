"""boot.py on this machine (no container): the same nginx.conf, real nginx and gunicorn.

The fast loop for everything the image does: settings check, home page, health and metrics,
WebDAV through nginx (litmus, streaming, forwarded headers), drain on SIGTERM, restore of the
metadata from a WebDAV backup, and restore from the dataset repo in Hub mode.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import requests

from tests.container.support import (
    BOOT,
    MiB,
    WebDavTarget,
    clean_env,
    make_random_file,
    one_gib_round_trip,
    run_litmus,
    start_boot,
)
from tests.e2e.support import propfind, require_tool

pytestmark = pytest.mark.e2e

@pytest.fixture(scope="module")
def booted(tmp_path_factory):
    require_tool("nginx")
    workdir = tmp_path_factory.mktemp("boot")
    b = start_boot(workdir)
    yield b
    status = b.shutdown()
    assert status == 0, b.log_text()[-3000:]


def test_bad_settings_are_listed_together_and_exit_2(tmp_path):
    env = clean_env(PORT="not-a-port", HFDAV_PREFIX="/", HFDAV_CHUNK_SIZE="1 banana",
                    HFDAV_DRAIN_TIMEOUT="-1", HFDAV_DATA_DIR=str(tmp_path / "d"), HOME=str(tmp_path))  # fmt: skip
    proc = subprocess.run([sys.executable, str(BOOT)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    for name in ("PORT", "HFDAV_PREFIX", "HFDAV_CHUNK_SIZE", "HFDAV_DRAIN_TIMEOUT"):
        assert name in proc.stderr, proc.stderr
    assert "hfdav online" not in proc.stdout


def test_start_up_summary_banner_and_one_log_format(booted):
    log_text = booted.log_text()
    assert "hfdav online: local mode\n" in log_text
    for needle in ("hfdav.startup: backend: local, chunks in ", "hfdav.startup: encryption: off; chunk size: 50.0 MiB",
                   "hfdav.startup: users: admin (rw)", "hfdav.startup: admin password: from SYS_TOKEN",
                   f"hfdav.startup: share: http://localhost:{booted.port}/dav/"):  # fmt: skip
        assert needle in log_text, log_text[-3000:]
    assert booted.password not in log_text
    assert "gunicorn.error: Booting worker with pid" in log_text
    # every log line has hfdav's format ("2026-01-01 12:00:00,123 LEVEL logger: ..."); gunicorn's own is gone
    assert "[INFO]" not in log_text
    import re

    shape = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
    lines = [line for line in log_text.splitlines() if line and not line.startswith("hfdav online")]
    odd = [line for line in lines if not shape.match(line)]
    assert not odd, odd[:5]


def test_json_logs_for_every_process(tmp_path):
    require_tool("nginx")
    import json

    b = start_boot(tmp_path, env={"HFDAV_LOG_FORMAT": "json"})
    try:
        requests.put(b.url_for("j.txt"), data=b"x", auth=b.auth, timeout=10).raise_for_status()
    finally:
        assert b.shutdown() == 0
    lines = [line for line in b.log_text().splitlines() if line.strip()]
    assert "hfdav online: local mode" in lines
    records = [json.loads(line) for line in lines if line != "hfdav online: local mode"]  # each line is JSON
    loggers = {r["logger"] for r in records}
    assert {"hfdav.boot", "hfdav.startup", "gunicorn.error", "hfdav.access"} <= loggers, loggers
    access = next(r for r in records if r["logger"] == "hfdav.access" and "PUT /j.txt 201" in r["message"])
    assert "client=127.0.0.1" in access["message"]


def test_own_home_page_and_a_token_without_a_repo(tmp_path):
    require_tool("nginx")
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>my own site</h1>")
    env = clean_env(HF_TOKEN="hf_x", HFDAV_DATA_DIR=str(tmp_path / "d"), HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, str(BOOT)], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2 and "HF_TOKEN is set but HF_DATASET_REPO is not" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    b = start_boot(tmp_path, env={"HFDAV_HOME_DIR": str(site)})
    try:
        home = requests.get(b.base + "/", timeout=10)
        assert home.status_code == 200 and home.text == "<h1>my own site</h1>"
        assert requests.request("PROPFIND", b.url, timeout=10).status_code == 401  # the drive is still there
    finally:
        assert b.shutdown() == 0


def test_hub_refusals_stop_boot_with_one_line(tmp_path):
    """A token the Hub rejects, and a repo in a namespace the token cannot write to: one line,
    exit 2, before anything starts."""
    require_tool("nginx")
    from tests.hub_emulator import HubEmulator

    with HubEmulator(tmp_path / "hub", foreign_namespaces=("someoneelse",)) as emu:
        base = {**emu.client_env(tmp_path / "hf-home"), "HFDAV_DATA_DIR": str(tmp_path / "d"), "HOME": str(tmp_path)}
        cases = [({"HF_TOKEN": "hf_revoked", "HF_DATASET_REPO": "testuser/drive"}, "rejected HF_TOKEN (HTTP 401)"),
                 ({"HF_DATASET_REPO": "someoneelse/drive"}, "cannot write to the dataset repo someoneelse/")]  # fmt: skip
        for extra, needle in cases:
            proc = subprocess.run([sys.executable, str(BOOT)], capture_output=True, text=True, timeout=60,
                                  env=clean_env(**{**base, **extra}))  # fmt: skip
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
            assert lines[0].startswith("boot: ") and "hfdav online" not in proc.stdout


def test_home_page_health_metrics_and_root_probe(booted):
    home = requests.get(booted.base + "/", timeout=10)
    assert home.status_code == 200 and "text/html" in home.headers["Content-Type"]
    assert "hfdav" in home.text and "WebDAV" in home.text  # says what it is
    assert 'href="/dav/"' in home.text and "{{" not in home.text  # and where the drive is
    assert requests.get(booted.base + "/style.css", timeout=10).status_code == 200
    missing = requests.get(booted.base + "/wp-admin/", timeout=10)
    assert missing.status_code == 404 and "Not found" in missing.text
    assert "nginx" not in missing.text.lower() and "nginx/" not in missing.headers.get("Server", "")
    assert requests.post(booted.base + "/", data=b"x", timeout=10).status_code in (403, 405)

    assert requests.get(booted.base + "/healthz", timeout=10).json() == {"status": "ok"}
    health = requests.get(booted.base + "/healthz", auth=booted.auth, timeout=10)
    assert health.status_code == 200
    report = health.json()
    assert report["status"] == "ok" and report["checks"]["database"]["ok"] and report["checks"]["store"]["ok"]

    assert requests.get(booted.base + "/metrics", timeout=10).status_code == 401
    requests.put(booted.url_for("metrics-probe.txt"), data=b"12345", auth=booted.auth, timeout=10)
    metrics = requests.get(booted.base + "/metrics", auth=booted.auth, timeout=10)
    assert metrics.status_code == 200
    assert 'hfdav_requests_total{method="PUT",status="201"}' in metrics.text
    assert "hfdav_bytes_in_total" in metrics.text and "hfdav_bytes_out_total" in metrics.text

    # Windows probes the root of the host before it maps /dav/
    options = requests.options(booted.base + "/", timeout=10)
    assert options.status_code == 200 and "2" in options.headers["DAV"]
    root = requests.request("PROPFIND", booted.base + "/", headers={"Depth": "1"}, timeout=10)
    assert root.status_code == 207
    hrefs = [h.text for h in ET.fromstring(root.content).iter("{DAV:}href")]
    assert hrefs == ["/", "/dav/"]
    assert requests.request("PROPFIND", booted.url, timeout=10).status_code == 401


def test_webdav_methods_through_nginx(booted):
    s = booted.session()
    base = booted.url
    assert s.request("MKCOL", base + "docs/").status_code == 201
    payload = b"hello through nginx\n" * 1000
    assert s.put(base + "docs/a.txt", data=payload).status_code == 201
    assert s.get(base + "docs/a.txt").content == payload
    ranged = s.get(base + "docs/a.txt", headers={"Range": "bytes=20-39"})
    assert ranged.status_code == 206 and ranged.content == payload[20:40]

    # Finder-style upload: chunked, no Content-Length, X-Expected-Entity-Length
    body = iter([payload[:7000], payload[7000:]])
    r = s.put(base + "docs/finder.txt", data=body, headers={"X-Expected-Entity-Length": str(len(payload))})
    assert r.status_code == 201, r.text
    assert s.get(base + "docs/finder.txt").content == payload

    # COPY and MOVE with the Destination a client behind a TLS front sends
    host = f"127.0.0.1:{booted.port}"
    tls = {"X-Forwarded-Proto": "https"}
    r = s.request("COPY", base + "docs/a.txt", headers={**tls, "Destination": f"https://{host}/dav/docs/b.txt"})
    assert r.status_code == 201, r.text
    r = s.request("MOVE", base + "docs/b.txt", headers={"Destination": f"http://{host}/dav/docs/c.txt"})
    assert r.status_code == 201, r.text
    assert s.get(base + "docs/c.txt").content == payload

    # the share without its trailing slash answers directly (no redirect: Windows breaks on it)
    r = s.request("PROPFIND", booted.base + "/dav", headers={"Depth": "0"}, allow_redirects=False)
    assert r.status_code == 207
    listing = propfind(booted, "docs")  # hrefs carry the prefix
    assert {"dav/docs/a.txt", "dav/docs/c.txt", "dav/docs/finder.txt"} <= set(listing)
    assert "dav/docs/b.txt" not in listing

    lock = s.request("LOCK", base + "docs/a.txt", headers={"Timeout": "Second-60"}, data=(
        '<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
        '<D:locktype><D:write/></D:locktype></D:lockinfo>'))  # fmt: skip
    assert lock.status_code == 200
    token = lock.headers["Lock-Token"]
    assert s.put(base + "docs/a.txt", data=b"x").status_code == 423
    assert s.put(base + "docs/a.txt", data=b"x", headers={"If": f"({token})"}).status_code == 204
    assert s.request("UNLOCK", base + "docs/a.txt", headers={"Lock-Token": token}).status_code == 204
    assert s.delete(base + "docs/").status_code == 204


def _read_answer(f) -> bytes:
    """One whole HTTP answer (head and Content-Length body) from a socket file; b"" if the
    connection was closed (an answer may come in several TCP segments)."""
    head = b""
    while (line := f.readline()) not in (b"\r\n", b""):
        head += line
    length = next((int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                   if k.strip().lower() == b"content-length"), 0)  # fmt: skip
    return head + b"\r\n" + f.read(length) if head else b""


def test_connection_survives_an_error_answer_that_beats_the_body(booted):
    """A PUT whose body arrives after the gateway has decided (here: 423, the file is locked).
    The gateway reads the small body before answering, so nginx keeps the client's connection
    open and the next request on it is answered (nginx closes it when the answer comes first)."""
    s = booted.session()
    assert s.put(booted.url_for("locked.txt"), data=b"hello").status_code in (201, 204)
    lock = s.request("LOCK", booted.url_for("locked.txt"), headers={"Timeout": "Second-60"}, data=(
        '<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
        '<D:locktype><D:write/></D:locktype></D:lockinfo>'))  # fmt: skip
    assert lock.status_code == 200
    auth = "Authorization: Basic " + base64.b64encode(f"{booted.user}:{booted.password}".encode()).decode()
    host = f"Host: 127.0.0.1:{booted.port}"
    with socket.create_connection(("127.0.0.1", booted.port), timeout=30) as sock:
        sock.sendall(f"PUT /dav/locked.txt HTTP/1.1\r\n{host}\r\n{auth}\r\nContent-Length: 5\r\n\r\n".encode())
        time.sleep(0.5)  # the gateway could answer now; the body comes later
        sock.sendall(b"xxxxx")
        answers = sock.makefile("rb")
        first = _read_answer(answers)
        assert first.startswith(b"HTTP/1.1 423"), first[:200]
        sock.sendall(f"OPTIONS /dav/ HTTP/1.1\r\n{host}\r\n{auth}\r\n\r\n".encode())
        second = _read_answer(answers)
    assert second.startswith(b"HTTP/1.1 200"), f"connection closed after the early answer: {second[:200]!r}"
    s.request("UNLOCK", booted.url_for("locked.txt"), headers={"Lock-Token": lock.headers["Lock-Token"]})


def test_litmus_through_nginx(booted, tmp_path):
    run_litmus(booted.url, booted.user, booted.password, tmp_path)


@pytest.mark.slow
def test_one_gib_streams_through_nginx_with_bounded_memory(booted, tmp_path):
    """PUT and GET 1 GiB through nginx: byte-identical, Range deep inside correct, nothing
    spooled by nginx, RSS of nginx's workers and of the gateway bounded."""
    spool = tuple(Path(tempfile.gettempdir(), f"hfdav-nginx-{booted.port}", d) for d in ("client_body", "proxy"))
    assert all(d.is_dir() for d in spool), spool
    result = one_gib_round_trip(booted, tmp_path, booted.proc.pid, spool)
    print(f"\n1 GiB through nginx: {result.summary()}")
    result.assert_bounded()


def _slow_put(port: int, path: str, auth_header: str, data: bytes, pause_after: int,
              started: threading.Event, resume: threading.Event, result: dict) -> None:  # fmt: skip
    """PUT ``data`` over a raw socket, stopping after ``pause_after`` bytes until ``resume``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    try:
        head = (f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth_header}\r\n"
                f"Content-Length: {len(data)}\r\nContent-Type: application/octet-stream\r\n\r\n")  # fmt: skip
        sock.sendall(head.encode())
        sock.sendall(data[:pause_after])
        started.set()
        resume.wait(60)
        sock.sendall(data[pause_after:])
        reply = b""
        while b"\r\n\r\n" not in reply:
            piece = sock.recv(65536)
            if not piece:
                break
            reply += piece
        result["reply"] = reply
    finally:
        sock.close()


def test_sigterm_drains_an_upload_in_flight_then_backs_up_and_exits_0(tmp_path):
    """SIGTERM while a PUT is half sent: new connections are refused, the PUT still completes
    (201), the final metadata backup is taken, boot.py exits 0, and the file is there after
    a restart."""
    target = WebDavTarget(tmp_path / "remote").start()
    try:
        env = {"WEBDAV_URL": f"{target.url}backup/", "SYNC_INTERVAL": "3600", "HFDAV_CHUNK_SIZE": "1MiB"}
        b = start_boot(tmp_path, env=env)
        make_random_file(tmp_path / "inflight.bin", 8 * MiB)
        data = (tmp_path / "inflight.bin").read_bytes()
        auth = "Authorization: Basic " + base64.b64encode(f"admin:{b.password}".encode()).decode()
        started, resume, result = threading.Event(), threading.Event(), {}
        sender = threading.Thread(target=_slow_put, args=(b.port, "/dav/inflight.bin", auth, data, 3 * MiB,
                                                          started, resume, result))  # fmt: skip
        sender.start()
        assert started.wait(30)
        time.sleep(0.5)  # let the first bytes reach the gateway
        b.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while "stopping: no new connections" not in b.log_text():
            assert time.monotonic() < deadline, b.log_text()
            time.sleep(0.1)
        time.sleep(1)
        with pytest.raises(requests.ConnectionError):
            requests.get(b.base + "/", timeout=5)
        resume.set()
        sender.join(120)
        assert result.get("reply", b"").startswith(b"HTTP/1.1 201"), result.get("reply", b"")[:300]
        assert b.proc.wait(120) == 0, b.log_text()[-3000:]
        log = b.log_text()
        assert "final metadata backup: hfdav-meta-" in log, log[-3000:]
        assert len(target.files("backup")) == 1

        again = start_boot(tmp_path, data_dir=b.data_dir, env=env, password=b.password)
        try:
            got = requests.get(again.url_for("inflight.bin"), auth=again.auth, timeout=60)
            assert got.status_code == 200 and hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()
        finally:
            assert again.shutdown() == 0
    finally:
        target.stop()


def test_lost_database_is_restored_from_the_webdav_backup(tmp_path):
    target = WebDavTarget(tmp_path / "remote").start()
    try:
        env = {"WEBDAV_URL": f"{target.url}meta/", "HFDAV_CHUNK_SIZE": "1MiB"}
        b = start_boot(tmp_path, env=env)
        s = b.session()
        files = {f"dir/file-{i}.bin": bytes([i]) * (i * 300_000 + 1) for i in range(4)}
        assert s.request("MKCOL", b.url + "dir/").status_code == 201
        for name, body in files.items():
            assert s.put(b.url_for(name), data=body).status_code == 201
        assert b.shutdown() == 0
        assert len(target.files("meta")) == 1

        for leftover in b.data_dir.glob("meta.sqlite3*"):
            leftover.unlink()
        again = start_boot(tmp_path, data_dir=b.data_dir, env=env, password=b.password)
        try:
            assert "metadata: restored from WebDAV backup hfdav-meta-" in again.log_text()
            for name, body in files.items():
                got = requests.get(again.url_for(name), auth=again.auth, timeout=30)
                assert got.status_code == 200 and got.content == body, name
        finally:
            assert again.shutdown() == 0

        # with the local chunks gone too, the backup would list files nobody can read: not restored
        shutil.rmtree(b.data_dir)
        fresh = start_boot(tmp_path, data_dir=b.data_dir, env=env, password=b.password)
        try:
            assert "local chunks it refers to are gone" in fresh.log_text()
            assert requests.get(fresh.url_for("dir/file-1.bin"), auth=fresh.auth, timeout=30).status_code == 404
        finally:
            assert fresh.shutdown() == 0
    finally:
        target.stop()


@pytest.mark.slow
def test_hub_mode_wiped_disk_restores_every_committed_file(tmp_path):
    """Hub mode against the emulator, default (async) durability: files PUT, boot.py stopped
    (the drain commits them), the data dir deleted; the next boot rebuilds the tree from the
    dataset repo and every file reads back."""
    from tests.hub_emulator import HubEmulator

    with HubEmulator(tmp_path / "hub") as emu:
        repo = f"{emu.config.username}/drive"
        env = {**emu.client_env(tmp_path / "hf-home"), "HF_DATASET_REPO": repo, "HFDAV_CHUNK_SIZE": "1MiB"}
        b = start_boot(tmp_path, env=env)
        s = b.session()
        files = {f"hub/f{i}.bin": hashlib.sha256(bytes([i])).digest() * (i * 40_000 + 1) for i in range(4)}
        assert s.request("MKCOL", b.url + "hub/").status_code == 201
        for name, body in files.items():
            assert s.put(b.url_for(name), data=body).status_code == 201
        assert b.shutdown() == 0, b.log_text()[-3000:]
        assert emu.commit_count(repo) > 0

        shutil.rmtree(b.data_dir)
        again = start_boot(tmp_path, data_dir=b.data_dir, env=env, password=b.password)
        try:
            log = again.log_text()
            assert "the gateway restores it from the dataset repo" in log, log[-3000:]
            for name, body in files.items():
                got = requests.get(again.url_for(name), auth=again.auth, timeout=60)
                assert got.status_code == 200 and got.content == body, name
            health = requests.get(again.base + "/healthz", auth=again.auth, timeout=10).json()
            assert health["checks"]["committer"]["ok"], health
            assert health["checks"]["committer"]["pending_changes"] == 0, health
            metrics = requests.get(again.base + "/metrics", auth=again.auth, timeout=10).text
            for name in ('hfdav_hub_api_calls_total{kind="resolve_get"}', 'hfdav_cache_requests_total{result="miss"}',
                         "hfdav_commit_queue_depth 0", "hfdav_staged_bytes", 'method="GET",status="200"'):  # fmt: skip
                assert name in metrics, f"{name} missing from /metrics:\n{metrics}"
        finally:
            assert again.shutdown() == 0


@pytest.mark.slow
def test_hub_mode_with_backup_restores_from_the_newer_copy(tmp_path):
    """Hub mode plus the WebDAV backup, disk wiped twice. First the final backup (taken after
    the last commit) is the newer copy and is restored; then the backup server is down at stop,
    so the repo is newer and the tree comes from the repo. Every file reads back both times."""
    from tests.hub_emulator import HubEmulator

    target = WebDavTarget(tmp_path / "remote").start()
    try:
        with HubEmulator(tmp_path / "hub") as emu:
            repo = f"{emu.config.username}/drive"
            env = {**emu.client_env(tmp_path / "hf-home"), "HF_DATASET_REPO": repo, "HFDAV_CHUNK_SIZE": "1MiB",
                   "WEBDAV_URL": f"{target.url}meta/"}  # fmt: skip
            files = {"a.bin": b"a" * 1_500_000}
            b = start_boot(tmp_path, env=env)
            assert requests.put(b.url_for("a.bin"), data=files["a.bin"], auth=b.auth, timeout=60).status_code == 201
            assert b.shutdown() == 0
            assert "final metadata backup: hfdav-meta-" in b.log_text()

            shutil.rmtree(b.data_dir)
            second = start_boot(tmp_path, data_dir=b.data_dir, env=env, password=b.password)
            assert "metadata: restored from WebDAV backup" in second.log_text(), second.log_text()[-3000:]
            files["b.bin"] = b"b" * 2_500_000
            assert requests.put(second.url_for("b.bin"), data=files["b.bin"], auth=second.auth,
                                timeout=60).status_code == 201  # fmt: skip
            target.stop()
            assert second.shutdown() == 0
            assert "final metadata backup FAILED" in second.log_text()

            shutil.rmtree(b.data_dir)
            target.start()
            third = start_boot(tmp_path, data_dir=b.data_dir, env=env, password=b.password)
            try:
                log = third.log_text()
                assert "is newer than the newest backup" in log and "restores it from the dataset repo" in log, log
                for name, body in files.items():
                    got = requests.get(third.url_for(name), auth=third.auth, timeout=60)
                    assert got.status_code == 200 and got.content == body, name
            finally:
                assert third.shutdown() == 0
    finally:
        target.stop()
