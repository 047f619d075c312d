"""Odd request targets and heads from an outside tester's list, against both servers:
``OPTIONS *`` (RFC 9110 §9.3.7), and an HTTP/1.1 request without ``Host``."""

from __future__ import annotations

import pytest

from tests.e2e.support import BOTH_KINDS, basic_header
from tests.hostile.support import exchange, status_of

pytestmark = pytest.mark.e2e


@BOTH_KINDS
def test_options_asterisk_is_answered_not_an_error(server_factory, kind):
    """``OPTIONS *`` asks about the server as a whole: 200 with the DAV compliance classes
    (gunicorn passed ``*`` on as the path and WsgiDAV failed an assertion: 500)."""
    srv = server_factory.start(kind)
    data = exchange(srv.host, srv.port, f"OPTIONS * HTTP/1.1\r\nHost: x\r\n{basic_header(srv)}\r\n\r\n".encode())
    assert status_of(data) == 200, data[:300]
    assert b"\r\ndav: 1" in data.lower()


@BOTH_KINDS
@pytest.mark.parametrize("hosts", [(), ("Host: a", "Host: b"), ("Host: a b",)], ids=["none", "two", "malformed"])
def test_http11_request_needs_exactly_one_valid_host(server_factory, kind, hosts):
    """RFC 9112 §3.2: an HTTP/1.1 request without Host, with two, or with an invalid one is a
    400 (both servers served them; the Host is what a Destination is checked against)."""
    srv = server_factory.start(kind)
    head = "\r\n".join(["PROPFIND / HTTP/1.1", *hosts, basic_header(srv), "Depth: 0"]) + "\r\n\r\n"
    data = exchange(srv.host, srv.port, head.encode())
    assert status_of(data) == 400, data[:300]


@BOTH_KINDS
def test_http10_request_without_host_is_served(server_factory, kind):
    srv = server_factory.start(kind)
    data = exchange(srv.host, srv.port, f"OPTIONS / HTTP/1.0\r\n{basic_header(srv)}\r\n\r\n".encode(), until_close=True)
    assert status_of(data) == 200, data[:300]


@BOTH_KINDS
def test_header_flood_is_refused(server_factory, kind):
    """6,000 tiny header fields fit in the 64 KiB head limit; cheroot parsed them all (40
    times the CPU of a normal request, before any login). Both servers take at most 100 fields
    (gunicorn's limit): 431."""
    srv = server_factory.start(kind)
    fields = "".join(f"X-{i}: a\r\n" for i in range(6000))
    data = exchange(
        srv.host, srv.port, f"OPTIONS / HTTP/1.1\r\nHost: x\r\n{fields}{basic_header(srv)}\r\n\r\n".encode()
    )
    assert status_of(data) == 431, data[:300]
    fine = "".join(f"X-{i}: a\r\n" for i in range(50))
    data = exchange(srv.host, srv.port, f"OPTIONS / HTTP/1.1\r\nHost: x\r\n{fine}{basic_header(srv)}\r\n\r\n".encode())
    assert status_of(data) == 200, data[:300]


#: Header lines RFC 9112 §5 says to reject (or that carry a control character, RFC 9110 §5.5):
#: a proxy in front may read them otherwise than the server, the ground of request smuggling.
MALFORMED_FIELDS = {
    "space before colon": "X-A : b",
    "obs-fold": "X-A: b\r\n c",
    "bare CR": "X-A: b\rc",
    "NUL": "X-A: b\x00c",
    "no colon": "X-A b",
}


@BOTH_KINDS
@pytest.mark.parametrize("case", list(MALFORMED_FIELDS))
def test_malformed_header_line_is_refused(server_factory, kind, case):
    srv = server_factory.start(kind)
    head = f"OPTIONS / HTTP/1.1\r\nHost: x\r\n{MALFORMED_FIELDS[case]}\r\n{basic_header(srv)}\r\n\r\n"
    data = exchange(srv.host, srv.port, head.encode("latin-1"))
    assert status_of(data) == 400, data[:300]
