"""Failed uploads leave the previous version current and nothing else visible; readers of a file
that is being overwritten always get one complete version.

The broken requests are written on raw sockets, since no well-behaved client sends them:
a Content-Length body cut off with the connection closed, a chunked body aborted mid-way,
a Finder-style chunked PUT whose X-Expected-Entity-Length does not match, and a PUT with
neither Content-Length nor chunked encoding.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
import time
import uuid

import pytest
import requests

from tests.e2e.support import (
    BOTH_SERVERS,
    SERVER_KINDS,
    MiB,
    Server,
    all_paths,
    basic_header,
    chunked,
    raw_request,
)

pytestmark = pytest.mark.e2e

#: The previous version: 3 chunks and a 5-byte tail.
OLD_SIZE = 3 * MiB + 5
#: The failed new version: 3 full chunks, so a cut in the middle has complete chunks staged.
NEW_SIZE = 3 * MiB


def _staged_leftovers(server: Server) -> list[str]:
    """Pieces of uploads kept in the data dir's temporary area (lock files aside)."""
    tmp = server.data_dir / "tmp"
    if not tmp.exists():
        return []
    return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file() and not p.name.startswith("."))


def _object_files(server: Server) -> set[str]:
    root = server.data_dir / "objects"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _send_broken(server: Server, kind: str, name: str, body: bytes) -> int | None:
    """Send one broken PUT of ``body`` to ``/name``; the status if the server answered."""
    auth = basic_header(server)
    start = f"PUT /{name} HTTP/1.1\r\n{auth}"
    if kind == "content-length-cut":
        raw_request(server, f"{start}\r\nContent-Length: {len(body)}", [body[: len(body) // 2]], read_reply=False)
        return None
    if kind == "chunked-cut":
        pieces = chunked(body)
        raw_request(server, f"{start}\r\nTransfer-Encoding: chunked", pieces[: len(pieces) // 2], read_reply=False)
        return None
    if kind == "expected-length-longer":
        head = f"{start}\r\nTransfer-Encoding: chunked\r\nX-Expected-Entity-Length: {len(body) + 1000}"
        return raw_request(server, head, [*chunked(body), b"0\r\n\r\n"])[0]
    if kind == "expected-length-shorter":
        head = f"{start}\r\nTransfer-Encoding: chunked\r\nX-Expected-Entity-Length: {len(body) - 1000}"
        return raw_request(server, head, [*chunked(body), b"0\r\n\r\n"])[0]
    if kind == "unframed":
        return raw_request(server, start, [])[0]
    raise ValueError(kind)


BROKEN = ("content-length-cut", "chunked-cut", "expected-length-longer", "expected-length-shorter", "unframed")


@pytest.mark.parametrize("module_server", SERVER_KINDS, indirect=True)
@pytest.mark.parametrize("target", ["existing", "new"])
@pytest.mark.parametrize("kind", BROKEN)
def test_failed_upload_changes_nothing(module_server, kind, target):
    server = module_server
    name = f"{kind}-{target}-{uuid.uuid4().hex[:6]}.bin"
    old = os.urandom(OLD_SIZE)
    mark = server.log_mark()
    if target == "existing":
        assert requests.put(server.url_for(name), data=old, auth=server.auth, timeout=60).status_code == 201
        # the access line is written just after the response: wait for it, look past it
        mark = server.wait_for_log(rf"PUT /{name} 201 ", since=mark).end()
    objects_before = _object_files(server)

    status = _send_broken(server, kind, name, os.urandom(NEW_SIZE))

    # the access log line is written when the server is done with the request
    logged = int(server.wait_for_log(rf"PUT /{name} (\d{{3}}) ", since=mark).group(1))
    assert 400 <= logged < 600, f"{kind}: the server accepted the broken upload with {logged}"
    if logged >= 500:  # the client is gone, but an internal error must say why in the log
        assert re.search(r" (ERROR|WARNING) ", server.log_text()[mark:]), f"{kind}: {logged} without a reason"
    if kind == "unframed":
        assert status == 411
    elif status is not None:
        assert 400 <= status < 500, f"{kind}: answered {status}"

    got = requests.get(server.url_for(name), auth=server.auth, timeout=60)
    listing = all_paths(server)
    if target == "existing":
        assert got.status_code == 200
        assert got.content == old, f"{kind}: GET does not return the previous version byte for byte"
        assert listing[name]["getcontentlength"] == str(OLD_SIZE)
    else:
        assert got.status_code == 404, f"{kind}: the failed new file is visible ({len(got.content)} bytes)"
        assert name not in listing, f"{kind}: the failed new file is listed: {listing.get(name)}"
    assert _staged_leftovers(server) == [], f"{kind}: staged pieces left behind"
    assert _object_files(server) == objects_before, f"{kind}: objects stored for a failed upload"


@BOTH_SERVERS
def test_raw_puts_that_are_complete_succeed(server):
    """The control for the broken cases: the same requests, complete, store the bytes."""
    auth = basic_header(server)
    body = os.urandom(NEW_SIZE)
    status, _ = raw_request(server, f"PUT /cl.bin HTTP/1.1\r\n{auth}\r\nContent-Length: {len(body)}", [body])
    assert status == 201
    head = f"PUT /finder.bin HTTP/1.1\r\n{auth}\r\nTransfer-Encoding: chunked\r\nX-Expected-Entity-Length: {len(body)}"
    status, _ = raw_request(server, head, [*chunked(body), b"0\r\n\r\n"])
    assert status == 201
    status, _ = raw_request(server, f"PUT /te.bin HTTP/1.1\r\n{auth}\r\nTransfer-Encoding: chunked",
                            [*chunked(body), b"0\r\n\r\n"])  # fmt: skip
    assert status == 201
    for name in ("cl.bin", "finder.bin", "te.bin"):
        assert requests.get(server.url_for(name), auth=server.auth, timeout=60).content == body, name


# -- concurrent readers while a file is overwritten ------------------------------------------

#: 20 chunks of 1 MiB.
BIG_SIZE = 20 * MiB
#: Every block of a version starts with a stamp naming the version, so every chunk differs
#: between versions and a mix of two versions cannot hash like either.
STAMP_EVERY = 64 * 1024
VERSIONS = 6
READERS = 3


def _version(base: bytes, k: int) -> bytes:
    data = bytearray(base)
    stamp = f"<version {k:06d}>".encode()
    for off in range(0, len(data), STAMP_EVERY):
        data[off : off + len(stamp)] = stamp
    return bytes(data)


def _stamps(body: bytes) -> set[bytes]:
    return {body[off : off + 16] for off in range(0, len(body), STAMP_EVERY)}


@BOTH_SERVERS
def test_readers_see_whole_versions_during_overwrites(server):
    url = server.url_for("big.bin")
    base = os.urandom(BIG_SIZE)
    first = _version(base, 0)
    known = {hashlib.sha256(first).hexdigest(): 0}
    assert requests.put(url, data=first, auth=server.auth, timeout=120).status_code == 201

    done = threading.Event()
    everyone_read_once = threading.Barrier(READERS + 1)
    problems: list[str] = []
    seen: list[int] = []

    def reader() -> None:
        session = server.session()
        first_round = True
        while True:
            stopping = done.is_set()
            try:
                r = session.get(url, timeout=120)
                body = r.content
                digest = hashlib.sha256(body).hexdigest()
                if r.status_code != 200:
                    problems.append(f"GET answered {r.status_code}")
                elif len(body) != BIG_SIZE or r.headers.get("Content-Length") != str(BIG_SIZE):
                    problems.append(
                        f"GET returned {len(body)} bytes (Content-Length {r.headers.get('Content-Length')})"
                    )
                elif digest not in known:
                    problems.append(f"GET returned a mix of versions: stamps {sorted(_stamps(body))[:4]}")
                else:
                    seen.append(known[digest])
            except requests.RequestException as exc:
                problems.append(f"GET failed: {exc!r}")
            if first_round:
                first_round = False
                everyone_read_once.wait(timeout=120)
            if stopping or problems:
                return

    threads = [threading.Thread(target=reader, name=f"reader-{i}") for i in range(READERS)]
    for t in threads:
        t.start()
    everyone_read_once.wait(timeout=120)
    try:
        writer = server.session()
        for k in range(1, VERSIONS + 1):
            data = _version(base, k)
            known[hashlib.sha256(data).hexdigest()] = k  # before the PUT: readers may see it at once
            r = writer.put(url, data=data, timeout=120)
            assert r.status_code == 204, f"PUT of version {k}: {r.status_code}"
    finally:
        done.set()
        for t in threads:
            t.join(timeout=300)
    assert not problems, problems[:5]
    assert all(not t.is_alive() for t in threads)
    # each reader's last GET started after the last PUT had returned
    final = requests.get(url, auth=server.auth, timeout=120).content
    assert hashlib.sha256(final).hexdigest() in known and known[hashlib.sha256(final).hexdigest()] == VERSIONS
    assert 0 in seen and VERSIONS in seen
    print(f"{server.kind}: {len(seen)} complete GETs, versions seen: {sorted(set(seen))}")


def test_upload_interrupted_by_a_crash_leaves_nothing(server_factory, tmp_path):
    """The server is killed (SIGKILL) in the middle of a PUT: after the restart the file is not
    there and the staged pieces are gone."""
    data_dir = tmp_path / "data"
    first = server_factory.start("cheroot", data_dir=data_dir)
    body = os.urandom(NEW_SIZE)
    sock = socket.create_connection((first.host, first.port), timeout=60)
    try:
        head = f"PUT /crash.bin HTTP/1.1\r\nHost: x\r\n{basic_header(first)}\r\nContent-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode() + body[: 2 * MiB + 10])
        deadline = time.monotonic() + 30
        while len(_staged_leftovers(first)) < 2:  # two chunks cut: the server is mid-upload
            assert time.monotonic() < deadline, f"no staged pieces: {_staged_leftovers(first)}"
            time.sleep(0.05)
        first.proc.kill()
        first.proc.wait(30)
    finally:
        sock.close()
    second = server_factory.start("cheroot", data_dir=data_dir, password=first.password)
    assert _staged_leftovers(second) == []
    assert requests.get(second.url_for("crash.bin"), auth=second.auth, timeout=30).status_code == 404
    assert "crash.bin" not in all_paths(second)
