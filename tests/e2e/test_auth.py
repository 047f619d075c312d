"""Authentication is always on: 401 without or with wrong credentials, read-only users get 403 on
writes, Basic and Digest both work, the generated admin password is printed only once, and
anonymous read-only access allows reading but not writing."""

from __future__ import annotations

import os

import pytest
import requests
from requests.auth import HTTPDigestAuth

from tests.e2e.support import BOTH_KINDS, BOTH_SERVERS, GENERATED_PASSWORD_RE, MiB, curl

pytestmark = pytest.mark.e2e

READER = ("reader", "read-pass-1")
WRITER = ("writer", "write:pass-2")  # a ':' in a password needs the explicit right
USERS_ENV = {"HFDAV_USERS": f"{READER[0]}:{READER[1]}:ro,{WRITER[0]}:{WRITER[1]}:rw"}
PROPPATCH_BODY = (
    b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>'
    b'<x xmlns="urn:t">1</x></D:prop></D:set></D:propertyupdate>'
)


def _refused_writes(server, auth) -> dict[str, int]:
    """Try every kind of write against ``doc.txt`` / ``newdir``; the status of each."""
    url = server.url_for("doc.txt")
    calls = {
        "PUT existing": ("PUT", url, {}, b"changed"),
        "PUT new": ("PUT", server.url_for("new.txt"), {}, b"new"),
        "DELETE": ("DELETE", url, {}, None),
        "MKCOL": ("MKCOL", server.url_for("newdir"), {}, None),
        "PROPPATCH": ("PROPPATCH", url, {"Content-Type": "application/xml"}, PROPPATCH_BODY),
        "COPY": ("COPY", url, {"Destination": server.url_for("copy.txt")}, None),
        "MOVE": ("MOVE", url, {"Destination": server.url_for("moved.txt")}, None),
    }
    return {
        label: requests.request(method, target, auth=auth, headers=headers, data=body, timeout=30).status_code
        for label, (method, target, headers, body) in calls.items()
    }


def _nothing_written(server) -> None:
    assert requests.get(server.url_for("doc.txt"), auth=server.auth, timeout=30).content == b"original"
    for name in ("new.txt", "newdir", "copy.txt", "moved.txt"):
        r = requests.request("PROPFIND", server.url_for(name), auth=server.auth, headers={"Depth": "0"}, timeout=30)
        assert r.status_code == 404, f"{name} was created"


@BOTH_SERVERS
def test_no_or_wrong_credentials_get_401(server):
    url = server.url_for("doc.txt")
    assert requests.put(url, data=b"original", auth=server.auth, timeout=30).status_code == 201
    for method in ("GET", "HEAD", "PROPFIND", "OPTIONS", "PUT", "DELETE", "MKCOL"):
        r = requests.request(method, url, data=b"x" if method == "PUT" else None, timeout=30)
        assert r.status_code == 401, f"{method} without credentials: {r.status_code}"
        assert "WWW-Authenticate" in r.headers
    bad = [(server.user, "wrong"), ("nobody", server.password), (server.user, ""), HTTPDigestAuth(server.user, "wrong")]
    for auth in bad:
        assert requests.get(url, auth=auth, timeout=30).status_code == 401, f"GET with {auth!r}"
        assert requests.put(url, data=b"changed", auth=auth, timeout=30).status_code == 401, f"PUT with {auth!r}"
    _nothing_written(server)


@BOTH_KINDS
def test_read_only_user_can_read_but_not_write(server_factory, kind):
    server = server_factory.start(kind, env=USERS_ENV)
    url = server.url_for("doc.txt")
    assert requests.put(url, data=b"original", auth=server.auth, timeout=30).status_code == 201
    assert requests.get(url, auth=READER, timeout=30).content == b"original"
    r = requests.request("PROPFIND", server.url, auth=READER, headers={"Depth": "1"}, timeout=30)
    assert r.status_code == 207
    statuses = _refused_writes(server, READER)
    assert statuses == dict.fromkeys(statuses, 403), statuses
    _nothing_written(server)
    # the read-write user may write, with Basic or Digest
    assert requests.put(url, data=b"by writer", auth=WRITER, timeout=30).status_code == 204
    assert requests.put(url, data=b"by writer 2", auth=HTTPDigestAuth(*WRITER), timeout=30).status_code == 204
    assert requests.get(url, auth=HTTPDigestAuth(*READER), timeout=30).content == b"by writer 2"


@BOTH_SERVERS
def test_basic_and_digest_with_curl(server, tmp_path):
    body = os.urandom(2 * MiB + 17)
    f = tmp_path / "body.bin"
    f.write_bytes(body)
    creds = f"{server.user}:{server.password}"
    assert curl("--basic", "-u", creds, "-T", str(f), server.url_for("basic.bin")).status == 201
    # digest: curl first gets the 401 challenge, then re-sends the file body
    assert curl("--digest", "-u", creds, "-T", str(f), server.url_for("digest.bin")).status == 201
    for name in ("basic.bin", "digest.bin"):
        assert curl("--digest", "-u", creds, server.url_for(name)).body == body
        assert curl("--basic", "-u", creds, server.url_for(name)).body == body
    res = curl("--digest", "-u", creds, "-X", "PROPFIND", "-H", "Depth: 1", server.url)
    assert res.status == 207 and b"digest.bin" in res.body
    assert curl("--digest", "-u", f"{server.user}:wrong", "-T", str(f), server.url_for("x.bin")).status == 401
    assert curl("--basic", "-u", f"{server.user}:wrong", server.url_for("basic.bin")).status == 401
    # both schemes are offered, Digest first (requests joins the two headers)
    challenge = requests.get(server.url, timeout=30).headers.get("WWW-Authenticate", "").lower()
    assert challenge.startswith("digest ") and ", basic realm=" in challenge, challenge


@BOTH_KINDS
def test_generated_password_printed_once(server_factory, tmp_path, kind):
    data_dir = tmp_path / "data"
    first = server_factory.start(kind, password=None, sys_token=False, data_dir=data_dir)
    password = first.password
    assert password and GENERATED_PASSWORD_RE.search(first.log_text())
    assert requests.get(first.url, auth=("admin", password), timeout=30).status_code == 200
    assert requests.get(first.url, timeout=30).status_code == 401
    assert first.stop() is None

    second = server_factory.start(kind, password=password, sys_token=False, data_dir=data_dir)
    log = second.log_text()
    assert password not in log and "generated a password" not in log, log
    assert requests.get(second.url, auth=("admin", password), timeout=30).status_code == 200
    assert requests.get(second.url, auth=("admin", "wrong"), timeout=30).status_code == 401


@BOTH_KINDS
def test_anonymous_read_only(server_factory, kind):
    server = server_factory.start(kind, env={"HFDAV_ANONYMOUS": "ro"})
    url = server.url_for("doc.txt")
    assert requests.put(url, data=b"original", auth=server.auth, timeout=30).status_code == 201
    r = requests.get(url, timeout=30)
    assert r.status_code == 200 and r.content == b"original"
    assert requests.request("PROPFIND", server.url, headers={"Depth": "1"}, timeout=30).status_code == 207
    statuses = _refused_writes(server, None)
    assert all(s in (401, 403) for s in statuses.values()), statuses
    assert statuses["PUT existing"] == 401 and statuses["PUT new"] == 401, statuses
    _nothing_written(server)
    # wrong credentials are still refused, not downgraded to anonymous
    assert requests.get(url, auth=(server.user, "wrong"), timeout=30).status_code == 401
    assert requests.put(url, data=b"by admin", auth=server.auth, timeout=30).status_code == 204
