"""Hostile and careless clients at the connection level, against the real servers: slow or
oversized headers, bursts of connections, ``Expect: 100-continue`` before a login, ambiguous
body framing, and the timeouts and connection limits that bound what a client may hold.

``hfdav serve`` (cheroot, and gunicorn where said) runs on loopback; the container's path
(nginx in front of gunicorn, via boot.py) is checked for the slow-connection bar. Slow clients
connect from a second loopback address (:data:`OTHER_CLIENT`), so that the per-client limit
counts them apart from the normal client on 127.0.0.1.
"""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time

import pytest
import requests

from tests.e2e.support import BOTH_KINDS, basic_header, require_tool
from tests.hostile.support import (
    OTHER_CLIENT,
    closed_by_peer,
    connect,
    exchange,
    read_response,
    slow_connections,
    status_of,
    statuses_of,
    tree_rss_kib,
)

pytestmark = pytest.mark.e2e

#: The bar: while this many connections are slow, a normal client is answered within 2 s.
SLOW_CONNECTIONS = 500
ANSWER_WITHIN_S = 2.0
#: A request head that never ends (no blank line ever follows).
UNFINISHED_HEAD = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\n"
MiB = 1 << 20


def _head(server, request_line: str, *headers: str) -> bytes:
    lines = [request_line, f"Host: {server.host}:{server.port}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _normal_gets_answer_quickly(url: str, auth) -> None:
    """Three GETs on fresh connections, each answered within the bar."""
    for _ in range(3):
        started = time.monotonic()
        r = requests.get(url, auth=auth, timeout=ANSWER_WITHIN_S)
        assert r.status_code == 200, r.status_code
        assert time.monotonic() - started < ANSWER_WITHIN_S


# -- slow headers ------------------------------------------------------------------------------


@pytest.mark.slow
@BOTH_KINDS
def test_slow_headers_do_not_starve_normal_clients(server_factory, kind):
    """500 connections that never finish their request head (more than the 16 request threads,
    from another address than the normal client) leave a normal GET answered within 2 s."""
    srv = server_factory.start(kind, env={"HFDAV_MAX_CONNECTIONS_PER_CLIENT": "0"})
    requests.put(srv.url_for("f.txt"), data=b"hello", auth=srv.auth, timeout=30).raise_for_status()
    with slow_connections(srv.host, srv.port, SLOW_CONNECTIONS, partial=UNFINISHED_HEAD, source=OTHER_CLIENT) as socks:
        assert len(socks) == SLOW_CONNECTIONS
        _normal_gets_answer_quickly(srv.url_for("f.txt"), srv.auth)
        assert sum(closed_by_peer(s) for s in socks) == 0, "slow connections were dropped before their deadline"


@pytest.mark.slow
def test_slow_headers_through_nginx_do_not_starve_normal_clients(tmp_path):
    """The container's path: nginx in front of gunicorn (boot.py), 1,000 slow connections
    (more than nginx used to take: it reset the normal client then)."""
    require_tool("nginx")
    from tests.container.support import start_boot

    booted = start_boot(tmp_path)
    try:
        requests.put(booted.url_for("f.txt"), data=b"hello", auth=booted.auth, timeout=30).raise_for_status()
        with slow_connections(booted.host, booted.port, 2 * SLOW_CONNECTIONS, partial=UNFINISHED_HEAD,
                              source=OTHER_CLIENT) as socks:  # fmt: skip
            assert len(socks) == 2 * SLOW_CONNECTIONS
            _normal_gets_answer_quickly(booted.url_for("f.txt"), booted.auth)
            assert sum(closed_by_peer(s) for s in socks) == 0
    finally:
        assert booted.shutdown() == 0


@pytest.mark.slow
@BOTH_KINDS
def test_header_deadline_is_total_not_per_read(server_factory, kind):
    """A client that trickles one header byte every 0.2 s is cut off at the header deadline
    (2 s here), although no single read waits long: answered 408 and closed."""
    srv = server_factory.start(kind, env={"HFDAV_HEADER_TIMEOUT": "2"})
    with connect(srv.host, srv.port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 15:  # bounded: the deadline is 2 s
            try:
                s.sendall(b"a")
            except OSError:
                closed = True
                break
            if closed_by_peer(s):
                closed = True
                break
            time.sleep(0.2)
        assert closed, "the trickling client was never cut off"
        assert time.monotonic() - started < 10


@pytest.mark.slow
@BOTH_KINDS
def test_idle_keepalive_connection_is_closed(server_factory, kind):
    srv = server_factory.start(kind, env={"HFDAV_IDLE_TIMEOUT": "1"})
    with connect(srv.host, srv.port) as s:
        s.sendall(_head(srv, "OPTIONS / HTTP/1.1", basic_header(srv)))
        assert status_of(read_response(s)) == 200
        deadline = time.monotonic() + 15
        while not closed_by_peer(s) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert closed_by_peer(s), "an idle keep-alive connection stayed open"


@pytest.mark.slow
@BOTH_KINDS
def test_stalled_body_is_given_up(server_factory, kind):
    """A PUT that stops sending its body is abandoned after the body timeout: the connection
    is closed and the old version of the file is still there."""
    srv = server_factory.start(kind, env={"HFDAV_BODY_TIMEOUT": "1"})
    requests.put(srv.url_for("f.txt"), data=b"old", auth=srv.auth, timeout=30).raise_for_status()
    with connect(srv.host, srv.port) as s:
        s.sendall(_head(srv, "PUT /f.txt HTTP/1.1", basic_header(srv), "Content-Length: 1000") + b"x" * 10)
        read_response(s, timeout=15, until_close=True)  # whatever the answer, to a client that went quiet
        assert closed_by_peer(s)
    assert requests.get(srv.url_for("f.txt"), auth=srv.auth, timeout=30).content == b"old"


# -- oversized headers ----------------------------------------------------------------------


@BOTH_KINDS
def test_oversized_header_is_refused_early(server_factory, kind):
    """A 100 KiB header line (more than the 64 KiB head limit) gets 431 or 400, not a login
    prompt: the server stopped reading it."""
    srv = server_factory.start(kind)
    data = exchange(srv.host, srv.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (100 * 1024) + b"\r\n\r\n")
    assert status_of(data) in (400, 431), data[:200]


@pytest.mark.slow
@BOTH_KINDS
def test_huge_header_line_keeps_memory_bounded(server_factory, kind):
    """One unauthenticated 200 MiB header line: the server's RSS grows by less than 32 MiB
    (it used to buffer the whole line before answering 401)."""
    srv = server_factory.start(kind)
    before = tree_rss_kib(srv.proc.pid)
    piece = b"a" * MiB
    with connect(srv.host, srv.port, timeout=30) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        try:
            for _ in range(200):
                s.sendall(piece)
                sent += 1
        except OSError:
            pass  # the server refused and closed: what it should do
    assert requests.options(srv.url, auth=srv.auth, timeout=30).status_code == 200
    grown_mib = (tree_rss_kib(srv.proc.pid) - before) / 1024
    assert grown_mib < 32, f"RSS grew by {grown_mib:.0f} MiB after {sent} MiB of header"


# -- bursts -----------------------------------------------------------------------------------


def _put_answers(url_of, auth, count: int, rounds: int = 3) -> list:
    """``rounds`` times ``count`` PUTs released at the same instant, each on its own
    connection; their statuses, or the exception."""
    start = threading.Barrier(count)

    def put(i: int):
        start.wait(60)
        try:
            return requests.put(url_of(i), data=b"x" * 100, auth=auth, timeout=120,
                                headers={"Connection": "close"}).status_code  # fmt: skip
        except requests.RequestException as exc:
            return exc

    answers = []
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        for _ in range(rounds):
            answers += pool.map(put, range(count))
    return answers


@pytest.mark.slow
@BOTH_KINDS
def test_burst_of_small_puts_is_answered_not_reset(server_factory, kind):
    """200 PUTs at once, three times: every one is answered (created, or 503 to retry), none
    reset (cheroot's listen backlog was 5)."""
    srv = server_factory.start(kind)
    requests.request("MKCOL", srv.url_for("burst"), auth=srv.auth, timeout=30)
    answers = _put_answers(lambda i: srv.url_for(f"burst/{i}.bin"), srv.auth, 200)
    failures = [a for a in answers if not isinstance(a, int) or a not in (201, 204, 503)]
    assert not failures, f"{len(failures)} of {len(answers)}: {failures[:3]}"


@pytest.mark.slow
@BOTH_KINDS
def test_burst_of_puts_to_one_path_is_answered_not_reset(server_factory, kind):
    srv = server_factory.start(kind)
    answers = _put_answers(lambda i: srv.url_for("same.bin"), srv.auth, 50)
    failures = [a for a in answers if not isinstance(a, int) or a not in (201, 204, 423, 503)]
    assert not failures, f"{len(failures)} of {len(answers)}: {failures[:3]}"


@pytest.mark.slow
def test_connections_over_the_limit_get_503_with_retry_after(server_factory):
    srv = server_factory.start("cheroot", env={"HFDAV_MAX_CONNECTIONS": "20", "HFDAV_MAX_CONNECTIONS_PER_CLIENT": "0"})
    with slow_connections(srv.host, srv.port, 20, partial=UNFINISHED_HEAD, source=OTHER_CLIENT):
        data = exchange(srv.host, srv.port, _head(srv, "OPTIONS / HTTP/1.1", basic_header(srv)))
        assert status_of(data) == 503, data[:300]
        assert b"\r\nretry-after:" in data.lower()
    # the slow ones are gone: room again
    deadline = time.monotonic() + 10
    while status_of(exchange(srv.host, srv.port, _head(srv, "OPTIONS / HTTP/1.1", basic_header(srv)))) != 200:
        assert time.monotonic() < deadline, "no room after the slow connections closed"
        time.sleep(0.1)


@pytest.mark.slow
def test_connections_per_client_are_bounded(server_factory):
    """One address may hold at most HFDAV_MAX_CONNECTIONS_PER_CLIENT connections; the next one
    gets 503; another address is still served."""
    srv = server_factory.start("cheroot", env={"HFDAV_MAX_CONNECTIONS_PER_CLIENT": "5"})
    with slow_connections(srv.host, srv.port, 5, partial=UNFINISHED_HEAD, source=OTHER_CLIENT):
        refused = exchange(srv.host, srv.port, _head(srv, "OPTIONS / HTTP/1.1", basic_header(srv)),
                           source=OTHER_CLIENT)  # fmt: skip
        assert status_of(refused) == 503, refused[:300]
        assert requests.options(srv.url, auth=srv.auth, timeout=10).status_code == 200


# -- Expect: 100-continue ------------------------------------------------------------------------


@BOTH_KINDS
def test_expect_continue_is_not_answered_before_authentication(server_factory, kind):
    """An unauthenticated PUT announcing 100 MB with ``Expect: 100-continue`` gets 401 and no
    invitation to send the body."""
    srv = server_factory.start(kind)
    with connect(srv.host, srv.port) as s:
        s.sendall(_head(srv, "PUT /big.bin HTTP/1.1", "Content-Length: 100000000", "Expect: 100-continue"))
        data = read_response(s, timeout=10)
    assert statuses_of(data)[:1] == [401], data[:300]


@BOTH_KINDS
def test_expect_continue_is_answered_once_the_upload_is_accepted(server_factory, kind):
    srv = server_factory.start(kind)
    with connect(srv.host, srv.port) as s:
        s.sendall(_head(srv, "PUT /ok.bin HTTP/1.1", basic_header(srv), "Content-Length: 5", "Expect: 100-continue"))
        s.settimeout(10)
        interim = s.recv(65536)
        assert statuses_of(interim) == [100], interim
        s.sendall(b"hello")
        data = read_response(s, timeout=10)
    assert statuses_of(data)[-1:] in ([201], [204]), data[:300]
    assert requests.get(srv.url_for("ok.bin"), auth=srv.auth, timeout=10).content == b"hello"


# -- ambiguous framing --------------------------------------------------------------------------

#: Requests whose body length is ambiguous (RFC 9112 §6.3) or broken; each hides a second
#: request (a DELETE of the file) where a lenient reading would find it.
SMUGGLING = {
    "content-length and chunked": ("Content-Length: 4", "Transfer-Encoding: chunked"),
    "two different content-lengths": ("Content-Length: 4", "Content-Length: 60"),
    "content-length list": ("Content-Length: 4, 60",),
    "signed content-length": ("Content-Length: +4",),
}


@BOTH_KINDS
@pytest.mark.parametrize("case", list(SMUGGLING))
def test_ambiguous_body_length_is_refused_and_closed(server_factory, kind, case):
    srv = server_factory.start(kind)
    requests.put(srv.url_for("victim.txt"), data=b"old", auth=srv.auth, timeout=30).raise_for_status()
    hidden = _head(srv, "DELETE /victim.txt HTTP/1.1", basic_header(srv))
    body = b"0\r\n\r\n" + hidden
    head = _head(srv, "PUT /f.txt HTTP/1.1", basic_header(srv), *SMUGGLING[case])
    data = exchange(srv.host, srv.port, head + body, until_close=True, timeout=10)
    assert statuses_of(data) == [400], data[:500]
    assert requests.get(srv.url_for("victim.txt"), auth=srv.auth, timeout=30).content == b"old"


@BOTH_KINDS
@pytest.mark.parametrize("size_line", [b"-5", b"+5", b"5 5", b"0x5", b""])
def test_malformed_chunk_size_is_refused_and_keeps_the_old_version(server_factory, kind, size_line):
    srv = server_factory.start(kind)
    requests.put(srv.url_for("f.txt"), data=b"old version", auth=srv.auth, timeout=30).raise_for_status()
    head = _head(srv, "PUT /f.txt HTTP/1.1", basic_header(srv), "Transfer-Encoding: chunked")
    data = exchange(srv.host, srv.port, head + size_line + b"\r\nhello\r\n0\r\n\r\n", until_close=True, timeout=10)
    assert statuses_of(data) == [400], data[:500]
    assert requests.get(srv.url_for("f.txt"), auth=srv.auth, timeout=30).content == b"old version"


def test_socket_helpers_see_a_reset(server_factory):
    """Self-check of the helpers: a connection the server closed reads as closed."""
    srv = server_factory.start("cheroot")
    with connect(srv.host, srv.port) as s:
        s.sendall(_head(srv, "OPTIONS / HTTP/1.1", basic_header(srv), "Connection: close"))
        read_response(s, until_close=True)
        assert closed_by_peer(s)
    with socket.create_connection((srv.host, srv.port)) as s:
        assert not closed_by_peer(s)


@pytest.mark.slow
@pytest.mark.parametrize("anonymous", ["none", "ro"])
def test_expect_continue_through_nginx_is_not_answered_before_authentication(tmp_path, anonymous):
    """The container's path: nginx sends "100 Continue" itself once it streams a body to the
    gateway, so it answers an Expect without credentials 401 (Basic challenge) on its own;
    with read-only anonymous access only for writing methods. With credentials the 100 comes
    and the upload lands."""
    require_tool("nginx")
    from tests.container.support import start_boot

    booted = start_boot(tmp_path, env={"HFDAV_ANONYMOUS": anonymous})
    try:
        with connect(booted.host, booted.port) as s:
            s.sendall(_head(booted, "PUT /dav/big.bin HTTP/1.1", "Content-Length: 100000000", "Expect: 100-continue"))
            data = read_response(s, timeout=10)
        assert statuses_of(data)[:1] == [401], data[:300]
        assert b'www-authenticate: basic realm="hfdav"' in data.lower()

        body = b'<?xml version="1.0"?><propfind xmlns="DAV:"><allprop/></propfind>'
        propfind = _head(booted, "PROPFIND /dav/ HTTP/1.1", "Depth: 0", f"Content-Length: {len(body)}",
                         "Expect: 100-continue")  # fmt: skip
        first = statuses_of(exchange(booted.host, booted.port, propfind + body))[:1]
        assert first == ([401] if anonymous == "none" else [100]), first

        with connect(booted.host, booted.port) as s:
            s.sendall(_head(booted, "PUT /dav/ok.bin HTTP/1.1", basic_header(booted), "Content-Length: 5",
                            "Expect: 100-continue"))  # fmt: skip
            s.settimeout(10)
            interim = s.recv(65536)
            assert statuses_of(interim) == [100], interim
            s.sendall(b"hello")
            assert statuses_of(read_response(s, timeout=10))[-1:] == [201]
        assert requests.get(booted.url_for("ok.bin"), auth=booted.auth, timeout=10).content == b"hello"
    finally:
        assert booted.shutdown() == 0


# -- a request thread serving the next request of its connection -------------------------------


def test_requests_in_a_row_on_one_connection_are_all_answered(server_factory):
    """More requests in a row than one thread serves before handing the connection back
    (gateway.server_front.KEEP_SERVING_MAX), each sent right after the last answer: each is
    answered with its own file."""
    from gateway.server_front import KEEP_SERVING_MAX

    srv = server_factory.start("cheroot")
    with srv.session() as s:
        for i in range(3):
            assert s.put(srv.url_for(f"k{i}.txt"), data=f"body {i}".encode(), timeout=30).status_code == 201
    with connect(srv.host, srv.port) as s:
        for n in range(KEEP_SERVING_MAX + 20):
            s.sendall(_head(srv, f"GET /k{n % 3}.txt HTTP/1.1", basic_header(srv)))
            data = read_response(s)
            assert status_of(data) == 200 and data.endswith(f"body {n % 3}".encode()), (n, data[-200:])


@pytest.mark.parametrize("pause", [0.0, 0.3])
def test_a_next_head_in_two_pieces_is_answered(server_factory, pause):
    """The next request's head arrives in two pieces (together, or the second after the request
    thread stopped waiting): answered either way."""
    srv = server_factory.start("cheroot")
    head = _head(srv, "OPTIONS / HTTP/1.1", basic_header(srv))
    with connect(srv.host, srv.port) as s:
        s.sendall(head)
        assert status_of(read_response(s)) == 200
        s.sendall(head[:20])
        time.sleep(pause)
        s.sendall(head[20:])
        assert status_of(read_response(s)) == 200


def test_a_malformed_next_head_is_refused(server_factory):
    """A header line with whitespace before its colon, sent right after an answer on the same
    connection, gets the 400 a first request gets."""
    srv = server_factory.start("cheroot")
    with connect(srv.host, srv.port) as s:
        s.sendall(_head(srv, "OPTIONS / HTTP/1.1", basic_header(srv)))
        assert status_of(read_response(s)) == 200
        s.sendall(_head(srv, "OPTIONS / HTTP/1.1", basic_header(srv), "X-Bad : 1"))
        assert status_of(read_response(s)) == 400


def test_an_unfinished_next_head_meets_the_header_deadline(server_factory):
    """The start of a next request that never ends, on a kept-alive connection: 408 and closed
    at the header deadline (2 s here), as on a fresh connection."""
    srv = server_factory.start("cheroot", env={"HFDAV_HEADER_TIMEOUT": "2"})
    with connect(srv.host, srv.port) as s:
        s.sendall(_head(srv, "OPTIONS / HTTP/1.1", basic_header(srv)))
        assert status_of(read_response(s)) == 200
        started = time.monotonic()
        s.sendall(UNFINISHED_HEAD)
        data = read_response(s, timeout=15, until_close=True)
        assert status_of(data) == 408, data[:200]
        assert time.monotonic() - started < 10
