"""PROPFIND Depth 0/1 (gateway.dav.propfind): the same answer as WsgiDAV's own code, streamed.

The reference is the answer of WsgiDAV's code path: Depth infinity still goes through it
(``res.get_descendants`` and ``get_properties`` per member), and on a folder whose subfolders
are empty it lists exactly the members Depth 1 does. The two answers must be equal byte for
byte (lock timeouts, which count down, aside).
"""

from __future__ import annotations

import logging
import re

import pytest
import requests

from gateway.dav import propfind
from tests.inprocess import served_gateway

AUTH = ("admin", "pw")
LITMUS_NS = "http://example.com/neon/litmus/"
OC_NS = "http://owncloud.org/ns"

NAMES = [
    "plain.txt",
    "with space.txt",
    "ünïcödé ✓.md",
    "amp&lt<gt>.html",
    "percent%41.bin",
    "q?mark#hash;semi.txt",
    "paren(1)'quote'!.tar.gz",
    "noext",
    ".hidden",
    "comma,plus+eq=.json",
]


def _body(*parts: str, mode: str = "prop") -> bytes:
    inner = "".join(parts)
    if mode == "allprop":
        return (f'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:oc="{OC_NS}">'
                f"<D:allprop/>{inner}</D:propfind>").encode()  # fmt: skip
    if mode == "propname":
        return b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>'
    return (f'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:oc="{OC_NS}" '
            f'xmlns:L="{LITMUS_NS}" xmlns:Z="urn:zz"><D:prop>{inner}</D:prop></D:propfind>').encode()  # fmt: skip


BODIES = {
    "empty": b"",
    "allprop": _body(mode="allprop"),
    "allprop+include": _body("<D:include><D:quota-available-bytes/><oc:checksums/></D:include>", mode="allprop"),
    "propname": _body(mode="propname"),
    "named-4": _body("<D:getcontentlength/><D:getlastmodified/><D:resourcetype/><D:getetag/>"),
    "named-mixed": _body(
        "<D:displayname/><D:nosuchprop/><L:prop0/><Z:other/><oc:checksums/><D:getcontenttype/>",
        "<D:quota-used-bytes/><D:quota-available-bytes/><D:creationdate/><D:lockdiscovery/>",
        "<D:supportedlock/><D:getetag/>",
    ),
    "rclone": _body(
        "<D:displayname/><D:getlastmodified/><D:getcontentlength/><D:resourcetype/>",
        "<D:getcontenttype/><oc:checksums/><oc:permissions/>",
    ),
}


def dav(method, url, **kw):
    return requests.request(method, url, auth=AUTH, timeout=30, **kw)


def _countdown(xml: bytes) -> bytes:
    return re.sub(rb"<D:timeout>Second-\d+</D:timeout>", b"<D:timeout>T</D:timeout>", xml)


def _propfind(url: str, depth: str, body: bytes) -> requests.Response:
    r = dav("PROPFIND", url, headers={"Depth": depth, "Content-Type": "application/xml"}, data=body)
    assert r.status_code == 207, r.text[:500]
    return r


def _fill(base: str) -> None:
    """A folder with files of every kind of name, dead properties, locks and empty subfolders."""
    assert dav("MKCOL", base + "/f").status_code == 201
    for i, name in enumerate(NAMES):
        headers = {"Content-Type": 'text/x-odd; q="a&b<c>"'} if i == 3 else {}
        r = dav("PUT", base + "/f/" + requests.utils.quote(name), data=b"x" * i, headers=headers)
        assert r.status_code == 201, name
    for sub in ("sub", "sub with props", "locked sub"):
        assert dav("MKCOL", base + "/f/" + requests.utils.quote(sub)).status_code == 201
    patch = (f'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:L="{LITMUS_NS}"><D:set><D:prop>'
             f'<L:prop0>value &amp; more</L:prop0><L:prop1><L:nested a="b">x</L:nested></L:prop1>'
             f"</D:prop></D:set></D:propertyupdate>").encode()  # fmt: skip
    for target in ("/f/plain.txt", "/f/sub%20with%20props"):
        assert dav("PROPPATCH", base + target, data=patch).status_code == 207
    lock = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
            b"<D:locktype><D:write/></D:locktype><D:owner>me</D:owner></D:lockinfo>")  # fmt: skip
    for target, depth in (("/f/noext", "0"), ("/f/locked%20sub", "infinity")):
        r = dav("LOCK", base + target, data=lock, headers={"Depth": depth, "Timeout": "Second-600"})
        assert r.status_code == 200


@pytest.fixture(params=[None, "10MiB"], ids=["no-quota", "quota"])
def server(request, tmp_path):
    env = {"HFDAV_DATA_DIR": str(tmp_path / "data"), "SYS_TOKEN": "pw"}
    if request.param:
        env["HFDAV_QUOTA"] = request.param
    with served_gateway(env, threads=4) as (base, gw):
        _fill(base)
        yield base


@pytest.mark.parametrize("page_size", [1000, 3])
@pytest.mark.parametrize("body", list(BODIES), ids=list(BODIES))
def test_depth1_equals_wsgidav_answer(server, monkeypatch, body, page_size):
    monkeypatch.setattr(propfind, "PAGE_SIZE", page_size)
    ours = _propfind(server + "/f/", "1", BODIES[body])
    reference = _propfind(server + "/f/", "infinity", BODIES[body])
    assert ours.content.count(b"<D:response") == len(NAMES) + 3 + 1
    assert _countdown(ours.content) == _countdown(reference.content)


def test_template_used_for_plain_members(server, monkeypatch):
    """The comparison above would pass trivially if every member took WsgiDAV's code."""
    generic = []
    real = propfind.PropfindStream._generic_member
    monkeypatch.setattr(propfind.PropfindStream, "_generic_member",
                        lambda self, *a: generic.append(a[1].name) or real(self, *a))  # fmt: skip
    _propfind(server + "/f/", "1", BODIES["named-4"])
    # dead properties or a lock rooted at it: WsgiDAV's code; all others: the template
    assert sorted(generic) == sorted(["plain.txt", "sub with props", "noext", "locked sub"])


@pytest.mark.parametrize("body", ["empty", "named-mixed", "propname"])
def test_depth0_equals_wsgidav_answer(server, body):
    # a file, a locked file, a folder with dead properties, an empty folder: Depth infinity
    # lists them alone
    for target in ("/f/plain.txt", "/f/noext", "/f/sub%20with%20props/", "/f/sub/"):
        ours = _countdown(_propfind(server + target, "0", BODIES[body]).content)
        assert ours.count(b"<D:response") == 1
        assert ours == _countdown(_propfind(server + target, "infinity", BODIES[body]).content)


def test_long_listing_is_streamed_short_one_is_not(server, monkeypatch):
    monkeypatch.setattr(propfind, "PAGE_SIZE", 4)
    long = _propfind(server + "/f/", "1", b"")
    assert "Content-Length" not in long.headers
    assert long.headers.get("Transfer-Encoding") == "chunked"
    assert long.content.endswith(b"</D:multistatus>")
    short = _propfind(server + "/f/sub/", "1", b"")
    assert short.headers["Content-Length"] == str(len(short.content))


def test_root_listing_hides_trash(server):
    assert dav("DELETE", server + "/f/sub").status_code == 204  # makes the trash folder
    root = _propfind(server + "/", "1", b"").content
    assert b".hfdav-trash" not in root and b"<D:href>/f/</D:href>" in root


def test_a_streamed_listing_logs_no_error(server, monkeypatch, caplog):
    """WsgiDAV calls a 207 without Content-Length an error; for a streamed listing it is the
    design, so nothing is logged (the same complaint for any other answer still is)."""
    monkeypatch.setattr(propfind, "PAGE_SIZE", 4)
    with caplog.at_level(logging.WARNING, logger="wsgidav"):
        assert _propfind(server + "/f/", "1", b"").headers.get("Transfer-Encoding") == "chunked"
    assert not [r for r in caplog.records if r.name.startswith("wsgidav")], caplog.text
    quiet = propfind.QuietStreamedAnswers()
    message = "Missing required Content-Length header in 207-response: closing connection"
    other = logging.LogRecord("wsgidav.wsgidav_app", logging.ERROR, __file__, 1, message, (), None)
    assert quiet.filter(other)


def test_root_listing_hides_pending_s3_uploads(server):
    assert dav("MKCOL", server + "/.hfdav-s3-uploads").status_code == 201
    root = _propfind(server + "/", "1", b"").content
    assert b".hfdav-s3-uploads" not in root and b"<D:href>/f/</D:href>" in root
