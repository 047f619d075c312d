"""The direct body reader and cheroot's sendall writer, on the real servers (cheroot in this
process, gunicorn as a child): bodies arrive exactly, block by block, with what the server had
buffered handed on first, and a keep-alive connection carrying pipelined requests stays in
step; a body cut short is seen as short; large answers go out whole."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway.server_io import Connection, direct_body_reader

ROOT = Path(__file__).resolve().parent.parent
#: Odd read size, so that blocks never line up with what the server buffered.
READ = 100_003
BIG_ANSWER = 9 * (1 << 20) + 17


def app(environ, start_response):
    """Reads the body through the direct reader and answers what it got, or a large body."""
    if environ["PATH_INFO"] == "/big":
        block = b"0123456789abcdef" * (1 << 16)
        start_response("200 OK", [("Content-Length", str(BIG_ANSWER))])
        return [block] * (BIG_ANSWER // len(block)) + [block[: BIG_ANSWER % len(block)]]
    read = direct_body_reader(environ["wsgi.input"])
    if read is None:
        body = b"no direct reader"
        start_response("500 Internal Server Error", [("Content-Length", str(len(body)))])
        return [body]
    digest, size, reads = hashlib.sha256(), 0, 0
    if environ["PATH_INFO"] == "/once":  # one read of the whole body, as WsgiDAV reads XML
        block = read(int(environ["CONTENT_LENGTH"]))
        digest.update(block)
        size, reads = len(block), 1
    while block := read(READ):
        digest.update(block)
        size += len(block)
        reads += 1
    body = f"{size} {digest.hexdigest()} {reads}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["cheroot", "gunicorn"])
def server(request, tmp_path):
    port = _free_port()
    if request.param == "cheroot":
        from cheroot import wsgi

        httpd = wsgi.Server(("127.0.0.1", port), app, numthreads=4)
        httpd.ConnectionClass = Connection
        httpd.prepare()
        thread = threading.Thread(target=httpd.serve, daemon=True)
        thread.start()
        yield port
        httpd.stop()
        return
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--worker-class", "gthread",
         "--threads", "4", "--chdir", str(ROOT), "tests.test_server_io:app"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"gunicorn did not start: {(tmp_path / 'gunicorn.log').read_text()}")
    yield port
    proc.terminate()
    proc.wait(10)
    log.close()


def _request(body: bytes, path: str = "/put") -> bytes:
    head = f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    return head + body


def _read_answers(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """``count`` HTTP answers from ``sock``: (status, body)."""
    f = sock.makefile("rb")
    out = []
    for _ in range(count):
        status = int(f.readline().split()[1])
        length = 0
        while (line := f.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        out.append((status, f.read(length)))
    return out


def test_pipelined_bodies_arrive_exactly_and_in_step(server):
    bodies = [os.urandom(3 * READ + 11), b"", os.urandom(17), os.urandom(2_000_000)]
    with socket.create_connection(("127.0.0.1", server), timeout=30) as sock:
        # all requests in one send: the server reads the first headers together with body
        # bytes and the next requests, and must hand them on in order
        sock.sendall(b"".join(_request(b) for b in bodies))
        answers = _read_answers(sock, len(bodies))
    for body, (status, got) in zip(bodies, answers, strict=True):
        assert status == 200, got
        size, digest, _reads = got.split()
        assert (int(size), digest.decode()) == (len(body), hashlib.sha256(body).hexdigest())


def test_a_body_streamed_in_pieces_is_read_in_full_blocks(server):
    body = os.urandom(5 * READ + 3)
    with socket.create_connection(("127.0.0.1", server), timeout=30) as sock:
        sock.sendall(_request(body)[: -len(body)])  # the headers alone first
        for i in range(0, len(body), 40_000):
            sock.sendall(body[i : i + 40_000])
            time.sleep(0.002)
        [(status, got)] = _read_answers(sock, 1)
    assert status == 200
    size, digest, reads = got.split()
    assert (int(size), digest.decode()) == (len(body), hashlib.sha256(body).hexdigest())
    # full blocks, though the body came in 40 kB pieces (one short read for what the server
    # had buffered with the headers is allowed)
    assert int(reads) <= -(-len(body) // READ) + 1


def test_a_body_cut_short_is_short(server):
    body = os.urandom(300_000)
    with socket.create_connection(("127.0.0.1", server), timeout=30) as sock:
        head = f"PUT /put HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body) + 1000}\r\n\r\n".encode()
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        [(status, got)] = _read_answers(sock, 1)
    assert status == 200
    assert got.split()[0] == str(len(body)).encode()  # fewer bytes than announced, no hang


def test_large_answers_are_sent_whole(server):
    with socket.create_connection(("127.0.0.1", server), timeout=30) as sock:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        answers = _read_answers(sock, 2)
    block = b"0123456789abcdef" * (1 << 16)
    expected = (block * (BIG_ANSWER // len(block) + 1))[:BIG_ANSWER]
    assert [a[0] for a in answers] == [200, 200]
    assert all(a[1] == expected for a in answers)


def test_other_bodies_get_no_direct_reader():
    import io

    assert direct_body_reader(io.BytesIO(b"abc")) is None


def test_one_read_returns_a_body_that_came_in_two_segments(server):
    # WsgiDAV reads an XML body with one read(Content-Length): it must get all of it, though
    # the second half arrives later than the headers and the first half
    body = os.urandom(16_000)
    with socket.create_connection(("127.0.0.1", server), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(_request(body, "/once")[: -len(body) + 10])
        time.sleep(0.2)
        sock.sendall(body[10:])
        [(status, got)] = _read_answers(sock, 1)
    assert status == 200
    size, digest, reads = got.split()
    assert (int(size), digest.decode(), int(reads)) == (len(body), hashlib.sha256(body).hexdigest(), 1)


def test_a_huge_announced_read_allocates_only_what_arrives():
    import tracemalloc

    from gateway.server_io import _recv_block

    sent = [b"<?xml "]

    def recv_into(view):
        if not sent:
            return 0  # the client stops
        data = sent.pop()
        view[: len(data)] = data
        return len(data)

    tracemalloc.start()
    try:
        data = _recv_block(recv_into, 1 << 30)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert bytes(data) == b"<?xml "
    assert peak < 4 << 20, f"{peak} bytes allocated for a 6-byte body announced as 1 GiB"


class _RecordingSocket:
    """What a writer sends, one entry per ``sendall``."""

    def __init__(self):
        self.sends: list[bytes] = []

    def sendall(self, data) -> None:
        self.sends.append(bytes(data))

    def send(self, data) -> int:  # pragma: no cover - the writer always uses sendall
        self.sends.append(bytes(data))
        return len(data)

    def _decref_socketios(self) -> None:
        pass


def test_a_held_head_goes_out_with_the_first_body_bytes():
    from gateway.server_io import COALESCE_MAX, _SendallWriter

    sock = _RecordingSocket()
    writer = _SendallWriter(sock, 8192)
    writer.hold_next()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    assert sock.sends == []
    writer.write(memoryview(b"hello"))
    writer.release()
    assert sock.sends == [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"]
    # a large first block is not copied behind the head: two sends
    sock.sends.clear()
    writer.hold_next()
    writer.write(b"HEAD")
    big = b"x" * (COALESCE_MAX + 1)
    writer.write(big)
    assert sock.sends == [b"HEAD", big]
    # no body: the head is sent by release, once
    sock.sends.clear()
    writer.hold_next()
    writer.write(b"HEAD2")
    writer.release()
    writer.release()
    assert sock.sends == [b"HEAD2"]
    assert writer.bytes_written == len(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello") + 4 + len(big) + 5
