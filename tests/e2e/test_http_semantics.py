"""HTTP and WebDAV semantics at the request front, against the real server on cheroot and on
gunicorn: Destination decoding (names with ``? # % & + ; '``, spaces, CJK, emoji), byte ranges
(RFC 9110 §14), paths that are not UTF-8, neutral status bodies, quoted ``getetag``, and a
chunked PUT whose client goes away."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from urllib.parse import quote

import pytest
import requests

from tests.e2e.support import SERVER_KINDS, basic_header, chunked, curl, propfind, raw_request

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("module_server", SERVER_KINDS, indirect=True)]

AWKWARD = ["report?.txt", "a#b.txt", "100%.txt", "a&b.txt", "a+b.txt", "a;b.txt", "it's.txt", "two  spaces .txt",
           "中文 文件.txt", "emoji 😀.txt", "q?x#y;z%41.txt"]  # fmt: skip


@pytest.fixture
def srv(module_server):
    return module_server


def _c(srv, *args, **kw):
    return curl("--basic", "-u", f"{srv.user}:{srv.password}", *args, **kw)


def _put(srv, path: str, data: bytes) -> int:
    return requests.put(srv.url_for(path), data=data, auth=srv.auth, timeout=30).status_code


def _get(srv, path: str, **headers) -> requests.Response:
    return requests.get(srv.url_for(path), auth=srv.auth, headers=headers, timeout=30)


# -- Destination -----------------------------------------------------------------------------


def test_move_to_name_with_question_mark_does_not_touch_the_prefix_file(srv):
    assert requests.request("MKCOL", srv.url_for("qm"), auth=srv.auth, timeout=30).status_code == 201
    assert _put(srv, "qm/report", b"unrelated") == 201
    assert _put(srv, "qm/draft", b"draft") == 201
    got = _c(srv, "-X", "MOVE", "-H", f"Destination: {srv.url}qm/report%3F.txt", srv.url_for("qm/draft"))
    assert got.status == 201
    assert _get(srv, "qm/report").content == b"unrelated"
    assert _get(srv, "qm/report?.txt").content == b"draft"
    assert set(propfind(srv, "qm")) == {"qm", "qm/report", "qm/report?.txt"}


@pytest.mark.parametrize("name", AWKWARD)
def test_copy_and_move_round_trip_awkward_names(srv, name):
    folder = "aw-" + quote(name, safe="")[:40].replace("%", "")
    assert requests.request("MKCOL", srv.url_for(folder), auth=srv.auth, timeout=30).status_code == 201
    body = os.urandom(3000)
    assert _put(srv, f"{folder}/src", body) == 201
    got = _c(srv, "-X", "COPY", "-H", f"Destination: {srv.url_for(f'{folder}/{name}')}", srv.url_for(f"{folder}/src"))
    assert got.status == 201
    moved = f"{folder}/moved {name}"
    got = _c(srv, "-X", "MOVE", "-H", f"Destination: {srv.url_for(moved)}", srv.url_for(f"{folder}/{name}"))
    assert got.status == 201
    listing = propfind(srv, folder)
    assert set(listing) == {folder, f"{folder}/src", moved}
    assert listing[moved]["displayname"] == moved.rsplit("/", 1)[1]
    assert _get(srv, moved).content == body


def test_destination_with_user_info_compares_host_and_port_only(srv):
    assert _put(srv, "ui-src.txt", b"git") == 201
    dest = f"http://someone:secret@{srv.host}:{srv.port}/ui-dst.txt"
    assert _c(srv, "-X", "MOVE", "-H", f"Destination: {dest}", srv.url_for("ui-src.txt")).status == 201
    assert _get(srv, "ui-dst.txt").content == b"git"
    other_port = f"http://{srv.host}:{srv.port + 1}/ui-x.txt"
    assert _c(srv, "-X", "COPY", "-H", f"Destination: {other_port}", srv.url_for("ui-dst.txt")).status == 502


@pytest.mark.parametrize("dest", ["/x.txt?a=b", "/x.txt#frag", "x.txt", "http://[::1/x", "/caf%e9.txt", "ftp://h/x"])
def test_malformed_destination_is_400(srv, dest):
    assert _put(srv, "md-src.txt", b"m") in (201, 204)
    got = _c(srv, "-X", "COPY", "-H", f"Destination: {dest}", srv.url_for("md-src.txt"))
    assert got.status == 400, got.body


# -- paths that are not UTF-8 ----------------------------------------------------------------


@pytest.mark.parametrize("authenticated", [False, True])
def test_path_not_utf8_is_400(srv, authenticated):
    auth = f"\r\n{basic_header(srv)}" if authenticated else ""
    status, raw = raw_request(srv, f"PUT /caf%e9.txt HTTP/1.1{auth}\r\nContent-Length: 2", [b"hi"])
    assert status == 400, raw[:300]
    assert b"WsgiDAV" not in raw
    assert "Traceback" not in srv.log_text()


# -- ranges ------------------------------------------------------------------------------------


@pytest.fixture
def ranged(srv):
    data = os.urandom(200_000)
    assert _put(srv, "ranged.bin", data) in (201, 204)
    return data


def _multipart(resp: requests.Response) -> list[tuple[str, bytes]]:
    m = re.fullmatch(r"multipart/byteranges; boundary=(\S+)", resp.headers["Content-Type"])
    assert m, resp.headers["Content-Type"]
    boundary = m.group(1).encode()
    assert int(resp.headers["Content-Length"]) == len(resp.content)
    parts = []
    for chunk in resp.content.split(b"--" + boundary)[1:-1]:
        head, _, body = chunk.partition(b"\r\n\r\n")
        assert body.endswith(b"\r\n")
        fields = dict(line.split(": ", 1) for line in head.decode().strip().splitlines())
        assert fields["Content-Type"] == "application/octet-stream"
        parts.append((fields["Content-Range"], body[:-2]))
    assert resp.content.endswith(b"--" + boundary + b"--\r\n")
    return parts


def test_two_ranges_give_both_parts(srv, ranged):
    r = _get(srv, "ranged.bin", Range="bytes=0-9,100-109")
    assert r.status_code == 206
    size = len(ranged)
    assert _multipart(r) == [(f"bytes 0-9/{size}", ranged[:10]), (f"bytes 100-109/{size}", ranged[100:110])]


def test_unsatisfiable_member_is_dropped_not_416(srv, ranged):
    r = _get(srv, "ranged.bin", Range="bytes=0-9,999999999-")
    assert r.status_code == 206 and r.content == ranged[:10]
    assert r.headers["Content-Range"] == f"bytes 0-9/{len(ranged)}"


@pytest.mark.parametrize("header", ["bytes=10-5", "bytes=abc", "items=0-5", "bytes=", "bytes=0-5,x"])
def test_invalid_range_is_ignored(srv, ranged, header):
    r = _get(srv, "ranged.bin", Range=header)
    assert r.status_code == 200 and r.content == ranged


def test_overlapping_ranges_are_coalesced(srv, ranged):
    r = _get(srv, "ranged.bin", Range="bytes=0-9,5-19,20-29,-10")
    assert r.status_code == 206
    size = len(ranged)
    assert _multipart(r) == [
        (f"bytes 0-29/{size}", ranged[:30]),
        (f"bytes {size - 10}-{size - 1}/{size}", ranged[-10:]),
    ]


def test_no_satisfiable_range_is_416(srv, ranged):
    r = _get(srv, "ranged.bin", Range="bytes=999999-,888888-888889")
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{len(ranged)}"
    assert b"WsgiDAV" not in r.content


def test_if_range(srv, ranged):
    etag = _get(srv, "ranged.bin").headers["ETag"]
    modified = _get(srv, "ranged.bin").headers["Last-Modified"]
    assert _get(srv, "ranged.bin", Range="bytes=0-9", **{"If-Range": etag}).status_code == 206
    assert _get(srv, "ranged.bin", Range="bytes=0-9", **{"If-Range": modified}).status_code == 206
    for stale in ('"other"', f"W/{etag}", "Thu, 01 Jan 2004 00:00:00 GMT", "garbage"):
        r = _get(srv, "ranged.bin", Range="bytes=0-9", **{"If-Range": stale})
        assert r.status_code == 200 and r.content == ranged, stale


def test_head_mirrors_get(srv, ranged):
    r = requests.head(srv.url_for("ranged.bin"), auth=srv.auth, headers={"Range": "bytes=5-14"}, timeout=30)
    assert r.status_code == 206 and r.headers["Content-Length"] == "10" and r.content == b""
    assert r.headers["Content-Range"] == f"bytes 5-14/{len(ranged)}"


def test_ten_thousand_ranges_are_not_served_one_by_one(srv, ranged):
    """Issue 10: such a header cost 5.5 s of CPU; past the limits the whole file is sent."""
    many = "bytes=" + ",".join(f"{2 * i}-{2 * i}" for i in range(10_000))
    r = _get(srv, "ranged.bin", Range=many)
    if srv.kind == "gunicorn":  # gunicorn refuses a header field over 8190 bytes itself
        assert r.status_code in (400, 431)
    else:
        assert r.status_code == 200 and r.content == ranged
    longer_than_limit = "bytes=" + ",".join(f"{2 * i}-{2 * i}" for i in range(700))
    assert 4096 < len(longer_than_limit) < 8000
    r = _get(srv, "ranged.bin", Range=longer_than_limit)
    assert r.status_code == 200 and r.content == ranged
    hundred_one = "bytes=" + ",".join(f"{10 * i}-{10 * i}" for i in range(101))
    r = _get(srv, "ranged.bin", Range=hundred_one)
    assert r.status_code == 200 and r.content == ranged
    hundred = "bytes=" + ",".join(f"{10 * i}-{10 * i}" for i in range(100))
    r = _get(srv, "ranged.bin", Range=hundred)
    assert r.status_code == 206 and [p for _, p in _multipart(r)] == [ranged[10 * i : 10 * i + 1] for i in range(100)]


# -- bodies and properties -----------------------------------------------------------------


def test_status_bodies_do_not_name_the_library(srv):
    got = _c(srv, "-X", "MKCOL", srv.url_for("sb"))
    assert got.status == 201 and got.body == b""
    again = _c(srv, "-X", "MKCOL", srv.url_for("sb"))
    assert again.status == 405
    conflict = _c(srv, "-X", "MKCOL", srv.url_for("no/such/parent"))
    assert conflict.status == 409
    missing = _c(srv, srv.url_for("sb/missing.txt"))
    assert missing.status == 404
    for r in (again, conflict, missing):
        assert b"WsgiDAV" not in r.body and b"<html" not in r.body.lower()
        assert r.header("content-type").startswith("text/plain")


def test_getetag_is_quoted_like_the_etag_header(srv):
    assert _put(srv, "etag.txt", b"etag") in (201, 204)
    header = _get(srv, "etag.txt").headers["ETag"]
    assert header.startswith('"') and header.endswith('"')
    assert propfind(srv, "etag.txt", depth="0")["etag.txt"]["getetag"] == header


def test_listing_hrefs_decode_to_the_names(srv):
    requests.request("MKCOL", srv.url_for("hrefs"), auth=srv.auth, timeout=30)
    for name in AWKWARD:
        assert _put(srv, f"hrefs/{name}", name.encode()) in (201, 204)
    r = requests.request("PROPFIND", srv.url_for("hrefs"), auth=srv.auth, headers={"Depth": "1"}, timeout=30)
    hrefs = [e.text for e in ET.fromstring(r.content).iter("{DAV:}href")]
    assert len(hrefs) == len(AWKWARD) + 1
    for href in hrefs:  # percent-encoded: nothing a URL parser would split on or decode twice
        assert not re.search(r"[?#%\s]", re.sub(r"%[0-9A-F]{2}", "", href)), href
    assert set(propfind(srv, "hrefs")) == {"hrefs"} | {f"hrefs/{n}" for n in AWKWARD}


# -- a chunked PUT whose client goes away ---------------------------------------------------


def test_vanished_chunked_put_is_one_warning_and_no_500(srv):
    mark = srv.log_mark()
    pieces = chunked(os.urandom(600_000), piece=100_000)
    head = f"PUT /vanish.bin HTTP/1.1\r\n{basic_header(srv)}\r\nTransfer-Encoding: chunked"
    raw_request(srv, head, pieces[:3], read_reply=False)
    status = int(srv.wait_for_log(r"PUT /vanish.bin (\d{3}) ", since=mark).group(1))
    log = srv.log_text()[mark:]
    assert status == 400, log
    assert "Traceback" not in log and " ERROR " not in log, log
    assert len(re.findall(r"WARNING .*vanish\.bin.*body broken", log)) == 1, log
    assert _get(srv, "vanish.bin").status_code == 404
