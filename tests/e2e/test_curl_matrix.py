"""The curl matrix: every WebDAV method a client uses, with the status codes and bytes checked,
on cheroot and on gunicorn. Files span several chunks (1 MiB chunks) wherever bytes matter."""

from __future__ import annotations

import os
import re
import uuid

import pytest

from tests.e2e.support import SERVER_KINDS, MiB, curl, propfind

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("module_server", SERVER_KINDS, indirect=True)]

#: 3.5 chunks: the last chunk is partial, so chunk boundaries and the tail are both exercised.
BIG = int(3.5 * MiB)


@pytest.fixture
def srv(module_server):
    return module_server


@pytest.fixture
def folder(srv):
    """A fresh folder per test so the tests sharing one server do not see each other."""
    name = "m-" + uuid.uuid4().hex[:8]
    assert _c(srv, "-X", "MKCOL", srv.url_for(name)).status == 201
    return name


@pytest.fixture
def payload(tmp_path):
    data = os.urandom(BIG)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    return path, data


def _c(srv, *args, **kw):
    return curl("--basic", "-u", f"{srv.user}:{srv.password}", *args, **kw)


def test_put_get_head(srv, folder, payload):
    path, data = payload
    url = srv.url_for(f"{folder}/f.bin")
    assert _c(srv, "-T", str(path), url).status == 201
    got = _c(srv, url)
    assert got.status == 200 and got.body == data
    head = _c(srv, "-I", url)
    assert head.status == 200
    assert head.header("content-length") == str(BIG)
    assert head.header("etag")
    # overwrite: 204 and the new content
    newer = os.urandom(BIG - 1000)
    path.write_bytes(newer)
    assert _c(srv, "-T", str(path), url).status == 204
    got = _c(srv, url)
    assert got.status == 200 and got.body == newer
    assert _c(srv, "-I", url).header("etag") != head.header("etag")


def test_chunked_put(srv, folder, payload):
    _path, data = payload
    url = srv.url_for(f"{folder}/chunked.bin")
    res = _c(srv, "-T", "-", url, input=data)  # stdin: Transfer-Encoding: chunked
    assert res.status == 201
    assert _c(srv, url).body == data


def test_empty_file(srv, folder, tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    url = srv.url_for(f"{folder}/empty")
    assert _c(srv, "-T", str(empty), url).status == 201
    got = _c(srv, url)
    assert got.status == 200 and got.body == b""
    assert propfind(srv, folder)[f"{folder}/empty"]["getcontentlength"] == "0"


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("1000-2999", 1000, 2999),
        (f"{MiB - 100}-{MiB + 99}", MiB - 100, MiB + 99),  # across a chunk boundary
        (f"{MiB}-", MiB, BIG - 1),  # open end
        ("-500", BIG - 500, BIG - 1),  # suffix
    ],
)
def test_range(srv, folder, payload, spec, start, end):
    path, data = payload
    url = srv.url_for(f"{folder}/r.bin")
    assert _c(srv, "-T", str(path), url).status == 201
    res = _c(srv, "-r", spec, url)
    assert res.status == 206
    assert res.body == data[start : end + 1]
    assert res.header("content-range") == f"bytes {start}-{end}/{BIG}"


def test_range_beyond_end(srv, folder, payload):
    path, _data = payload
    url = srv.url_for(f"{folder}/r.bin")
    assert _c(srv, "-T", str(path), url).status == 201
    assert _c(srv, "-r", f"{BIG + 10}-{BIG + 20}", url).status == 416


def test_mkcol(srv, folder):
    url = srv.url_for(f"{folder}/sub")
    assert _c(srv, "-X", "MKCOL", url).status == 201
    assert _c(srv, "-X", "MKCOL", url).status == 405  # exists
    assert _c(srv, "-X", "MKCOL", srv.url_for(f"{folder}/no/such")).status == 409  # no parent
    assert propfind(srv, folder)[f"{folder}/sub"]["resourcetype"] == "collection"


def test_copy(srv, folder, payload):
    path, data = payload
    src, dst = srv.url_for(f"{folder}/a.bin"), srv.url_for(f"{folder}/b.bin")
    assert _c(srv, "-T", str(path), src).status == 201
    assert _c(srv, "-X", "COPY", "-H", f"Destination: {dst}", src).status == 201
    assert _c(srv, src).body == data
    assert _c(srv, dst).body == data
    # Overwrite: F onto an existing target is refused and changes nothing
    assert _c(srv, "-X", "COPY", "-H", f"Destination: {dst}", "-H", "Overwrite: F", src).status == 412
    # overwriting copy (default Overwrite: T)
    path.write_bytes(b"small")
    assert _c(srv, "-T", str(path), src).status == 204
    assert _c(srv, "-X", "COPY", "-H", f"Destination: {dst}", src).status == 204
    assert _c(srv, dst).body == b"small"


def test_copy_folder(srv, folder, payload):
    path, data = payload
    assert _c(srv, "-X", "MKCOL", srv.url_for(f"{folder}/d")).status == 201
    assert _c(srv, "-T", str(path), srv.url_for(f"{folder}/d/x.bin")).status == 201
    res = _c(srv, "-X", "COPY", "-H", f"Destination: {srv.url_for(folder + '/e')}", srv.url_for(f"{folder}/d"))
    assert res.status == 201
    assert _c(srv, srv.url_for(f"{folder}/e/x.bin")).body == data
    assert _c(srv, srv.url_for(f"{folder}/d/x.bin")).body == data


def test_move(srv, folder, payload):
    path, data = payload
    src, dst = srv.url_for(f"{folder}/a.bin"), srv.url_for(f"{folder}/moved.bin")
    assert _c(srv, "-T", str(path), src).status == 201
    assert _c(srv, "-X", "MOVE", "-H", f"Destination: {dst}", "-H", "Overwrite: F", src).status == 201
    assert _c(srv, src).status == 404
    assert _c(srv, dst).body == data
    # moving a folder moves its content
    assert _c(srv, "-X", "MKCOL", srv.url_for(f"{folder}/d")).status == 201
    assert _c(srv, "-X", "MOVE", "-H", f"Destination: {srv.url_for(folder + '/d/m.bin')}", dst).status == 201
    res = _c(srv, "-X", "MOVE", "-H", f"Destination: {srv.url_for(folder + '/d2')}", srv.url_for(f"{folder}/d"))
    assert res.status == 201
    assert _c(srv, srv.url_for(f"{folder}/d2/m.bin")).body == data
    assert _c(srv, srv.url_for(f"{folder}/d/m.bin")).status == 404


def test_delete(srv, folder, payload):
    path, _data = payload
    url = srv.url_for(f"{folder}/a.bin")
    assert _c(srv, "-T", str(path), url).status == 201
    assert _c(srv, "-X", "DELETE", url).status == 204
    assert _c(srv, url).status == 404
    assert _c(srv, "-X", "DELETE", url).status == 404
    # a folder with content, recursively
    assert _c(srv, "-X", "MKCOL", srv.url_for(f"{folder}/d")).status == 201
    assert _c(srv, "-T", str(path), srv.url_for(f"{folder}/d/x.bin")).status == 201
    assert _c(srv, "-X", "DELETE", srv.url_for(f"{folder}/d")).status == 204
    assert _c(srv, srv.url_for(f"{folder}/d/x.bin")).status == 404
    assert set(propfind(srv, folder)) == {folder}


def test_propfind(srv, folder, payload):
    path, _data = payload
    assert _c(srv, "-T", str(path), srv.url_for(f"{folder}/a.bin")).status == 201
    assert _c(srv, "-X", "MKCOL", srv.url_for(f"{folder}/sub")).status == 201
    res = _c(srv, "-X", "PROPFIND", "-H", "Depth: 1", srv.url_for(folder))
    assert res.status == 207
    listing = propfind(srv, folder)
    assert set(listing) == {folder, f"{folder}/a.bin", f"{folder}/sub"}
    assert listing[f"{folder}/a.bin"]["getcontentlength"] == str(BIG)
    assert listing[f"{folder}/a.bin"]["resourcetype"] == ""
    assert listing[f"{folder}/sub"]["resourcetype"] == "collection"
    assert set(propfind(srv, folder, depth="0")) == {folder}
    assert _c(srv, "-X", "PROPFIND", "-H", "Depth: 0", srv.url_for(f"{folder}/nothing")).status == 404


PROPPATCH_SET = """<?xml version="1.0" encoding="utf-8"?>
<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:hfdav-test:">
  <D:set><D:prop><Z:color>blue &amp; green</Z:color></D:prop></D:set>
</D:propertyupdate>"""

PROPPATCH_REMOVE = """<?xml version="1.0" encoding="utf-8"?>
<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:hfdav-test:">
  <D:remove><D:prop><Z:color/></D:prop></D:remove>
</D:propertyupdate>"""

PROPFIND_COLOR = """<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:" xmlns:Z="urn:hfdav-test:"><D:prop><Z:color/></D:prop></D:propfind>"""


def test_proppatch(srv, folder, tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"x")
    url = srv.url_for(f"{folder}/p.txt")
    assert _c(srv, "-T", str(f), url).status == 201
    hdr = ["-H", "Content-Type: application/xml"]
    res = _c(srv, "-X", "PROPPATCH", *hdr, "--data-binary", PROPPATCH_SET, url)
    assert res.status == 207 and b"200 OK" in res.body
    found = _c(srv, "-X", "PROPFIND", "-H", "Depth: 0", *hdr, "--data-binary", PROPFIND_COLOR, url)
    assert found.status == 207 and b"blue &amp; green" in found.body
    # the property follows a MOVE
    dst = srv.url_for(f"{folder}/q.txt")
    assert _c(srv, "-X", "MOVE", "-H", f"Destination: {dst}", url).status == 201
    found = _c(srv, "-X", "PROPFIND", "-H", "Depth: 0", *hdr, "--data-binary", PROPFIND_COLOR, dst)
    assert b"blue &amp; green" in found.body
    res = _c(srv, "-X", "PROPPATCH", *hdr, "--data-binary", PROPPATCH_REMOVE, dst)
    assert res.status == 207
    found = _c(srv, "-X", "PROPFIND", "-H", "Depth: 0", *hdr, "--data-binary", PROPFIND_COLOR, dst)
    assert b"blue" not in found.body and b"404" in found.body


LOCK_BODY = """<?xml version="1.0" encoding="utf-8"?>
<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>
<D:locktype><D:write/></D:locktype><D:owner>e2e</D:owner></D:lockinfo>"""


def test_lock_unlock(srv, folder, tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"version 1")
    url = srv.url_for(f"{folder}/locked.txt")
    assert _c(srv, "-T", str(f), url).status == 201
    res = _c(srv, "-X", "LOCK", "-H", "Content-Type: application/xml", "-H", "Timeout: Second-600",
             "--data-binary", LOCK_BODY, url)  # fmt: skip
    assert res.status == 200
    token = res.header("lock-token")
    assert token and re.fullmatch(r"<[^>]+>", token), res.headers
    f.write_bytes(b"version 2")
    assert _c(srv, "-T", str(f), url).status == 423  # no token
    assert _c(srv, "-X", "DELETE", url).status == 423
    assert _c(srv, url).body == b"version 1"
    assert _c(srv, "-T", str(f), "-H", f"If: ({token})", url).status == 204
    assert _c(srv, url).body == b"version 2"
    assert _c(srv, "-X", "UNLOCK", "-H", f"Lock-Token: {token}", url).status == 204
    f.write_bytes(b"version 3")
    assert _c(srv, "-T", str(f), url).status == 204
    assert _c(srv, url).body == b"version 3"


def test_lock_unmapped_url_then_put(srv, folder, tmp_path):
    """Finder and Windows lock a new name before the PUT: a LOCK creates a 0-byte file."""
    url = srv.url_for(f"{folder}/new.txt")
    res = _c(srv, "-X", "LOCK", "-H", "Content-Type: application/xml", "--data-binary", LOCK_BODY, url)
    assert res.status == 201
    token = res.header("lock-token")
    f = tmp_path / "x"
    f.write_bytes(b"content")
    assert _c(srv, "-T", str(f), "-H", f"If: ({token})", url).status == 204
    assert _c(srv, "-X", "UNLOCK", "-H", f"Lock-Token: {token}", url).status == 204
    assert _c(srv, url).body == b"content"
