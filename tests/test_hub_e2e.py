"""End to end over WebDAV: ``hfdav serve`` (cheroot) in a subprocess, its storage the Hub
emulator, clients speaking HTTP. What the issue promises: big and many files round-trip, the
repo matches the documented format, a lost data dir comes back from the repo, SIGKILL loses
nothing acknowledged and shows no partial file, injected faults lose nothing."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.hub_emulator import HubEmulator
from tests.hub_fixtures import (  # noqa: F401  (emulator_fixture provides the emulator fixture)
    PASSWORD,
    REPO,
    STORAGE_READS,
    UPLOAD_PUTS,
    Server,
    check_repo_format,
    commit_sizes,
    emulator_fixture,
    hub_env,
    journal_documents,
    served,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
MiB = 1 << 20
BIG = 300 * 1000 * 1000


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * MiB):
            h.update(block)
    return h.hexdigest()


def _get_sha256(session, url: str, headers: dict | None = None) -> tuple[int, str, int]:
    h = hashlib.sha256()
    n = 0
    with session.get(url, stream=True, headers=headers or {}, timeout=300) as r:
        for block in r.iter_content(4 * MiB):
            h.update(block)
            n += len(block)
        return r.status_code, h.hexdigest(), n


def test_a_300_mb_file_round_trips_and_reads_cold_from_the_hub(emulator: HubEmulator, tmp_path: Path):
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        left = BIG
        while left:
            n = min(left, 8 * MiB)
            f.write(os.urandom(n))
            left -= n
    digest = _sha256_file(src)
    env = hub_env(emulator, tmp_path / "data", HFDAV_CHUNK_SIZE="50MiB")
    with served(env, tmp_path / "server.log") as srv:
        s = srv.session()
        with open(src, "rb") as body:
            assert s.put(srv.url + "/big.bin", data=body, timeout=300).status_code == 201
        assert _get_sha256(s, srv.url + "/big.bin") == (200, digest, BIG)
        srv.wait_synced(300)
    objects = [p for p in emulator.repo_files(REPO) if p.startswith("objects/")]
    assert len(objects) == -(-BIG // (50 * MiB))
    shutil.rmtree(tmp_path / "data" / "hub" / "cache")  # cold: every byte must come from the Hub
    with served(env, tmp_path / "server.log") as srv:
        s = srv.session()
        before = emulator.stats["bytes_out"]
        deep = 250 * 1000 * 1000
        r = s.get(srv.url + "/big.bin", headers={"Range": f"bytes={deep}-{deep + 999}"}, timeout=60)
        assert r.status_code == 206
        with open(src, "rb") as f:
            f.seek(deep)
            assert r.content == f.read(1000)
        assert emulator.stats["bytes_out"] - before < 256 * 1024  # only what the range needs
        before = emulator.stats["bytes_out"]
        assert _get_sha256(s, srv.url + "/big.bin") == (200, digest, BIG)
        assert emulator.stats["bytes_out"] - before >= BIG


@pytest.mark.parametrize("encryption", ["clear", "encrypted"])
def test_a_file_written_over_webdav_survives_a_wiped_data_dir_with_either_transport(
    emulator: HubEmulator, tmp_path: Path, hub_transport: str, encryption: str
):
    """The bar of both transports: PUT over WebDAV, the data dir lost, the same bytes back from
    the repo alone, whole and by Range (a range across a chunk boundary, one deep inside)."""
    data = os.urandom(3 * MiB + 12345) + b"compressible text " * 100_000 + os.urandom(77)
    extra = {"HFDAV_ENCRYPTION_KEY": "passphrase:correct horse battery staple"} if encryption == "encrypted" else {}
    env = hub_env(emulator, tmp_path / "data", **extra)
    with served(env, tmp_path / "server.log") as srv:
        s = srv.session()
        assert s.put(srv.url + "/bar.bin", data=data, timeout=120).status_code == 201
        srv.wait_synced(120)
    objects = [p for p in emulator.repo_files(REPO) if p.startswith("objects/")]
    assert len(objects) >= 4
    xet_objects = [p for p in emulator.xet_files(REPO) if p.startswith("objects/")]
    assert sorted(xet_objects) == (sorted(objects) if hub_transport == "xet" else [])
    shutil.rmtree(tmp_path / "data")
    with served(env, tmp_path / "server2.log") as srv:
        s = srv.session()
        r = s.get(srv.url + "/bar.bin", timeout=120)
        assert r.status_code == 200 and r.content == data
        for start, end in ((MiB - 100, MiB + 100), (3 * MiB + 5, 3 * MiB + 400_000), (len(data) - 10, len(data) - 1)):
            r = s.get(srv.url + "/bar.bin", headers={"Range": f"bytes={start}-{end}"}, timeout=60)
            assert r.status_code == 206 and r.content == data[start : end + 1], (start, end)


def test_a_thousand_small_files_round_trip_and_survive_the_loss_of_the_data_dir(emulator: HubEmulator, tmp_path: Path):
    files = {f"/docs/d{i // 100}/f{i:04d}.txt": f"note {i}\n".encode() * (1 + i % 40) for i in range(1000)}
    env = hub_env(emulator, tmp_path / "data", HFDAV_COMMIT_INTERVAL="5")
    with served(env, tmp_path / "server.log") as srv:
        s = srv.session()
        assert s.request("MKCOL", srv.url + "/docs").status_code == 201
        for d in range(10):
            assert s.request("MKCOL", srv.url + f"/docs/d{d}").status_code == 201
        initial = len(commit_sizes(emulator))

        local = threading.local()

        def put(item):
            if not hasattr(local, "session"):
                local.session = srv.session()  # one keep-alive connection per client thread
            path, data = item
            return local.session.put(srv.url + path, data=data, timeout=60).status_code

        with ThreadPoolExecutor(4) as pool:
            assert set(pool.map(put, files.items())) == {201}
        for path, data in list(files.items())[::37]:
            assert s.get(srv.url + path, timeout=60).content == data
        srv.wait_synced(300)
    sizes = commit_sizes(emulator)[initial:]
    assert len(sizes) <= 20, sizes
    assert max(sizes) <= 100, sizes
    counts = check_repo_format(emulator, tmp_path / "hf-check")
    assert counts["files"] == 1000
    shutil.rmtree(tmp_path / "data")
    with served(env, tmp_path / "server2.log") as srv:
        s = srv.session()
        for path, data in files.items():
            r = s.get(srv.url + path, timeout=60)
            assert r.status_code == 200 and r.content == data, path


def _partial_put(url: str, path: str, total: int, send: int) -> http.client.HTTPConnection:
    """Start a PUT announcing ``total`` bytes and send only ``send`` of them."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.putrequest("PUT", parts.path.rstrip("/") + path)
    conn.putheader("Authorization", "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode())
    conn.putheader("Content-Length", str(total))
    conn.endheaders()
    sent = 0
    while sent < send:
        block = os.urandom(min(MiB, send - sent))
        conn.send(block)
        sent += len(block)
    return conn


def test_sigkill_mid_upload_loses_nothing_acknowledged(emulator: HubEmulator, tmp_path: Path):
    data_dir = tmp_path / "data"
    acked = {f"/a{i}.bin": os.urandom(1000 * (i + 1) + (MiB if i % 3 == 0 else 0)) for i in range(12)}
    # a long commit interval: at the kill, the acknowledged files are on the local disk only
    server = Server(hub_env(emulator, data_dir, HFDAV_COMMIT_INTERVAL="3600"), tmp_path / "server.log").start()
    try:
        s = server.session()
        for path, data in acked.items():
            assert s.put(server.url + path, data=data, timeout=60).status_code == 201
        conn = _partial_put(server.url, "/partial.bin", 20 * MiB, 6 * MiB)
        deadline = time.monotonic() + 30
        while "/partial.bin: 6.0 MiB" not in server.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.kill()
    conn.close()
    env = hub_env(emulator, data_dir)
    with served(env, tmp_path / "server2.log") as srv:
        s = srv.session()
        for path, data in acked.items():
            r = s.get(srv.url + path, timeout=60)
            assert r.status_code == 200 and r.content == data, path
        assert s.get(srv.url + "/partial.bin", timeout=60).status_code == 404
        listing = s.request("PROPFIND", srv.url + "/", headers={"Depth": "1"}, timeout=60).text
        assert "partial.bin" not in listing
        srv.wait_synced(120)
    shutil.rmtree(data_dir)  # and now from the repo alone
    with served(env, tmp_path / "server3.log") as srv:
        s = srv.session()
        for path, data in acked.items():
            assert s.get(srv.url + path, timeout=60).content == data, path
        assert s.get(srv.url + "/partial.bin", timeout=60).status_code == 404


def test_injected_faults_end_with_every_acknowledged_byte_intact(
    emulator: HubEmulator, tmp_path: Path, hub_transport: str
):
    faults = [
        dict(method="POST", path=r"/commit/", kind="drop_after", times=1),
        dict(method="POST", path=r"/commit/", kind="status", status=503, times=1),
        dict(method="PUT", path=UPLOAD_PUTS[hub_transport], kind="status", status=500, times=2),
        dict(method="POST", path=r"/preupload/", kind="drop_before", times=1),
    ]
    if hub_transport == "xet":
        faults.append(dict(method="POST", path=r"^/v2/shards", kind="status", status=429, reset=1, times=1))
    else:
        faults.append(dict(method="POST", path=r"/objects/batch", kind="status", status=429, reset=1, times=1))
    for spec in faults:
        emulator.faults.add(**spec)
    written = {f"/f{i}.bin": os.urandom(MiB * (i % 4) + 777 * i + 1) for i in range(16)}
    env = hub_env(emulator, tmp_path / "data")
    with served(env, tmp_path / "server.log") as srv:
        s = srv.session()
        for path, data in written.items():
            assert s.put(srv.url + path, data=data, timeout=60).status_code == 201
        srv.wait_synced(300)
    assert not emulator.faults.rules, "every fault fired"
    shutil.rmtree(tmp_path / "data" / "hub" / "cache")
    reads = STORAGE_READS[hub_transport]
    emulator.faults.add(method="GET", path=reads, kind="drop_after", times=2)
    emulator.faults.add(method="GET", path=reads, kind="status", status=503, times=1)
    with served(env, tmp_path / "server2.log") as srv:
        s = srv.session()
        for path, data in written.items():
            r = s.get(srv.url + path, timeout=120)
            assert r.status_code == 200 and r.content == data, path
    shutil.rmtree(tmp_path / "data")
    with served(env, tmp_path / "server3.log") as srv:
        s = srv.session()
        for path, data in written.items():
            assert s.get(srv.url + path, timeout=120).content == data, path


def test_sync_durability_acknowledges_after_the_commit(emulator: HubEmulator, tmp_path: Path):
    env = hub_env(emulator, tmp_path / "data", HFDAV_DURABILITY="sync", HFDAV_COMMIT_INTERVAL="3600")
    with served(env, tmp_path / "server.log") as srv:
        s = srv.session()
        assert s.put(srv.url + "/durable.txt", data=b"in a commit before the 201\n", timeout=120).status_code == 201
        puts = [d["e"]["path"] for d in journal_documents(emulator) if "e" in d and d["e"]["op"] == "put"]
        assert puts == ["/durable.txt"]
