"""The whole WSGI stack in-process (cheroot in a thread, real HTTP from requests)."""

from __future__ import annotations

import os
import socket

import pytest
import requests
from requests.auth import HTTPDigestAuth

from tests.inprocess import served_gateway

MiB = 1 << 20
AUTH = ("admin", "pw")


@pytest.fixture
def server(tmp_path):
    env = {
        "HFDAV_DATA_DIR": str(tmp_path / "data"),
        "SYS_TOKEN": "pw",
        "HFDAV_USERS": "reader:rpw:ro",
        "HFDAV_CHUNK_SIZE": "1MiB",
    }
    with served_gateway(env, threads=8) as served:
        yield served


def dav(method, url, auth=AUTH, **kw):
    return requests.request(method, url, auth=auth, timeout=30, **kw)


def test_auth_required(server):
    base, _ = server
    assert requests.get(base + "/", timeout=5).status_code == 401
    assert dav("PROPFIND", base + "/", auth=("admin", "wrong"), headers={"Depth": "0"}).status_code == 401
    assert dav("PROPFIND", base + "/", headers={"Depth": "0"}).status_code == 207


def test_digest_auth(server):
    base, _ = server
    r = dav("PUT", base + "/d.txt", auth=HTTPDigestAuth("admin", "pw"), data=b"digest")
    assert r.status_code == 201
    assert dav("GET", base + "/d.txt", auth=HTTPDigestAuth("admin", "pw")).content == b"digest"


def test_read_only_user(server):
    base, _ = server
    dav("PUT", base + "/r.txt", data=b"x")
    ro = ("reader", "rpw")
    assert dav("GET", base + "/r.txt", auth=ro).content == b"x"
    assert dav("PUT", base + "/r.txt", auth=ro, data=b"y").status_code == 403
    assert dav("DELETE", base + "/r.txt", auth=ro).status_code == 403
    assert dav("MKCOL", base + "/dir", auth=ro).status_code == 403
    assert dav("GET", base + "/r.txt").content == b"x"


def raw_request(base, head: bytes, body: bytes = b"", close_after=True) -> bytes:
    host, port = base.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + body)
        if close_after:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def test_unframed_put_is_411(server):
    base, gw = server
    head = b"PUT /unframed.txt HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YWRtaW46cHc=\r\n\r\n"
    answer = raw_request(base, head, b"hello")
    assert answer.startswith(b"HTTP/1.1 411")
    assert gw.files.stat("/unframed.txt") is None


def test_truncated_put_leaves_previous_version(server):
    base, gw = server
    dav("PUT", base + "/t.bin", data=b"previous")
    head = (
        b"PUT /t.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YWRtaW46cHc=\r\n"
        b"Content-Length: 3000000\r\n\r\n"
    )
    raw_request(base, head, os.urandom(1_500_000))
    assert dav("GET", base + "/t.bin").content == b"previous"
    assert gw.files.tmp_files() == []


def test_finder_style_chunked_put(server):
    base, _ = server
    blob = os.urandom(2 * MiB + 17)

    def gen():
        for i in range(0, len(blob), 65536):
            yield blob[i : i + 65536]

    r = dav("PUT", base + "/finder.bin", data=gen(), headers={"X-Expected-Entity-Length": str(len(blob))})
    assert r.status_code == 201
    assert dav("GET", base + "/finder.bin").content == blob
    r = dav("PUT", base + "/short.bin", data=gen(), headers={"X-Expected-Entity-Length": str(len(blob) + 1)})
    assert r.status_code == 400
    assert dav("GET", base + "/short.bin").status_code == 404


def test_range_and_etag(server):
    base, _ = server
    blob = os.urandom(3 * MiB)
    r = dav("PUT", base + "/big.bin", data=blob)
    etag = r.headers["ETag"]
    r = dav("GET", base + "/big.bin", headers={"Range": f"bytes={MiB - 3}-{MiB + 3}"})
    assert r.status_code == 206 and r.content == blob[MiB - 3 : MiB + 4]
    assert dav("HEAD", base + "/big.bin").headers["ETag"] == etag
    assert dav("GET", base + "/big.bin", headers={"If-None-Match": etag}).status_code == 304


def test_propfind_quota_and_win32_props(server):
    base, _ = server
    dav("PUT", base + "/w.txt", data=b"12345")
    body = (
        '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:">'
        "<D:set><D:prop><Z:Win32LastModifiedTime>Wed, 01 Jan 2025 10:00:00 GMT</Z:Win32LastModifiedTime>"
        "<Z:Win32FileAttributes>00000020</Z:Win32FileAttributes></D:prop></D:set></D:propertyupdate>"
    )
    r = dav("PROPPATCH", base + "/w.txt", data=body)
    assert r.status_code == 207 and "200 OK" in r.text
    r = dav("PROPFIND", base + "/", headers={"Depth": "1"})
    assert "quota-used-bytes>5<" in r.text.replace("D:", "")
    r = dav("PROPFIND", base + "/w.txt", headers={"Depth": "0"})
    assert "2025" in r.text and "Wed, 01 Jan 2025 10:00:00 GMT" in r.text


def test_move_and_copy_file(server):
    base, gw = server
    dav("PUT", base + "/a.txt", data=b"abc")
    r = dav("MOVE", base + "/a.txt", headers={"Destination": base + "/b.txt"})
    assert r.status_code == 201
    r = dav("COPY", base + "/b.txt", headers={"Destination": base + "/c.txt"})
    assert r.status_code == 201
    assert dav("GET", base + "/a.txt").status_code == 404
    assert dav("GET", base + "/c.txt").content == b"abc"


def test_utf8_and_special_names(server):
    base, _ = server
    from urllib.parse import quote

    for name in ["中文 文件.txt", "100% #1 & more+.txt"]:
        url = base + "/" + quote(name)
        assert dav("PUT", url, data=name.encode()).status_code == 201
        assert dav("GET", url).content == name.encode()
        listing = dav("PROPFIND", base + "/", headers={"Depth": "1"}).text
        assert quote(name, safe="/!*'(),$-_|.") in listing or name in listing


def test_lock_unmapped_creates_empty_file(server):
    base, gw = server
    body = (
        '<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
        "<D:locktype><D:write/></D:locktype><D:owner>t</D:owner></D:lockinfo>"
    )
    r = dav("LOCK", base + "/locked.txt", data=body)
    assert r.status_code == 201
    token = r.headers["Lock-Token"]
    assert gw.files.stat("/locked.txt").size == 0
    assert dav("PUT", base + "/locked.txt", data=b"x").status_code == 423
    assert dav("PUT", base + "/locked.txt", data=b"x", headers={"If": f"({token})"}).status_code == 204
    assert dav("UNLOCK", base + "/locked.txt", headers={"Lock-Token": token}).status_code == 204


@pytest.fixture
def quota_server(tmp_path):
    env = {"HFDAV_DATA_DIR": str(tmp_path / "q"), "SYS_TOKEN": "pw", "HFDAV_QUOTA": "3MiB", "HFDAV_CHUNK_SIZE": "1MiB"}
    with served_gateway(env) as served:
        yield served


@pytest.mark.allow_error_log
def test_quota_properties_and_507(quota_server):
    base, gw = quota_server
    assert dav("PUT", base + "/a.bin", data=os.urandom(2 * MiB)).status_code == 201
    r = dav("PROPFIND", base + "/", headers={"Depth": "0"})
    text = r.text.replace("D:", "")
    assert f"<quota-used-bytes>{2 * MiB}<" in text and f"<quota-available-bytes>{MiB}<" in text
    r = dav("PUT", base + "/b.bin", data=os.urandom(2 * MiB))
    assert r.status_code == 507
    assert gw.files.stat("/b.bin") is None
    # overwriting counts the bytes it replaces
    assert dav("PUT", base + "/a.bin", data=os.urandom(3 * MiB)).status_code == 204


def test_macos_companion_files_are_stored(server):
    base, _ = server
    for name in ("._report.pdf", ".DS_Store"):
        assert dav("PUT", base + "/" + name, data=b"\x00\x05\x16\x07").status_code == 201
        assert dav("GET", base + "/" + name).content == b"\x00\x05\x16\x07"


def test_delete_is_restorable_from_hidden_trash(server):
    base, gw = server
    dav("PUT", base + "/keep.txt", data=b"keep")
    assert dav("DELETE", base + "/keep.txt").status_code == 204
    listing = dav("PROPFIND", base + "/", headers={"Depth": "1"}).text
    assert ".hfdav-trash" not in listing and "keep.txt" not in listing
    [entry] = gw.files.trash.entries()
    from urllib.parse import quote

    r = dav("MOVE", base + quote(entry.trash_path), headers={"Destination": base + "/keep.txt"})
    assert r.status_code == 201
    assert dav("GET", base + "/keep.txt").content == b"keep"


LOCK_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
    b"</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>t</D:owner></D:lockinfo>"
)


@pytest.mark.parametrize("nested", [False, True])
def test_delete_of_a_folder_keeps_a_locked_file_and_its_folders(server, nested):
    # a locked file inside made WsgiDAV fall back to deleting file by file, and its folder was
    # then deleted as a whole, the locked file with it (answered 207 with a 423 for the file)
    base, _gw = server
    inner = "/d/sub" if nested else "/d"
    assert dav("MKCOL", base + "/d").status_code == 201
    if nested:
        assert dav("MKCOL", base + inner).status_code == 201
    for name in ("locked.txt", "free.txt"):
        assert dav("PUT", f"{base}{inner}/{name}", data=b"x").status_code == 201
    r = dav("LOCK", f"{base}{inner}/locked.txt", data=LOCK_BODY, headers={"Depth": "0"})
    assert r.status_code == 200
    token = r.headers["Lock-Token"]
    r = dav("DELETE", base + "/d")
    assert r.status_code == 207 and b"423" in r.content, r.text
    assert dav("GET", f"{base}{inner}/locked.txt").status_code == 200
    assert dav("GET", f"{base}{inner}/free.txt").status_code == 404
    r = dav("DELETE", base + "/d", headers={"If": f"<{base}{inner}/locked.txt> ({token})"})
    assert r.status_code == 204, r.text
    assert dav("GET", f"{base}{inner}/locked.txt").status_code == 404
