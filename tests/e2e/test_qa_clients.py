"""Requests and clients as users of other tools send them, against the real server on cheroot
and on gunicorn: PROPFIND ``<propname/>`` and ``<allprop/>`` with ``<include/>`` (RFC 4918
§9.1), Windows and macOS Finder request sequences, and Python WebDAV client libraries from
PyPI (skipped, with the reason, where they are not installed)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import requests

from tests.e2e.support import BOTH_KINDS, SERVER_KINDS

pytestmark = pytest.mark.e2e
#: Tests on the module's shared server, under cheroot and under gunicorn.
ON_BOTH = pytest.mark.parametrize("module_server", SERVER_KINDS, indirect=True)

D = "{DAV:}"


@pytest.fixture
def srv(module_server):
    return module_server


def _put(srv, path: str, data: bytes, **headers) -> int:
    return requests.put(srv.url_for(path), data=data, auth=srv.auth, headers=headers, timeout=30).status_code


def _propfind(srv, path: str, body: str, depth: str = "0") -> dict[str, ET.Element]:
    """PROPFIND with ``body``: the ``<D:response>`` elements by their href."""
    r = requests.request("PROPFIND", srv.url_for(path), data=body.encode(), auth=srv.auth, timeout=30,
                         headers={"Depth": depth, "Content-Type": "application/xml"})  # fmt: skip
    assert r.status_code == 207, r.text
    return {resp.findtext(f"{D}href"): resp for resp in ET.fromstring(r.content).iter(f"{D}response")}


def _props(response: ET.Element, status: str = "200") -> dict[str, ET.Element]:
    """The properties of one ``<D:response>`` under propstats whose status has ``status``."""
    found = {}
    for propstat in response.iter(f"{D}propstat"):
        if status in (propstat.findtext(f"{D}status") or ""):
            found.update({p.tag: p for p in propstat.find(f"{D}prop")})
    return found


@ON_BOTH
def test_propfind_propname_lists_names_without_values(srv):
    requests.request("MKCOL", srv.url_for("propname"), auth=srv.auth, timeout=30)
    assert _put(srv, "propname/f.txt", b"hello") in (201, 204)
    body = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>'
    responses = _propfind(srv, "propname", body, depth="1")
    assert set(responses) == {"/propname/", "/propname/f.txt"}
    names = _props(responses["/propname/f.txt"])
    for tag in ("getcontentlength", "getlastmodified", "getetag", "resourcetype", "displayname"):
        assert f"{D}{tag}" in names, tag
        assert not names[f"{D}{tag}"].text and not len(names[f"{D}{tag}"]), f"{tag} has a value"
    assert f"{D}resourcetype" in _props(responses["/propname/"])


@ON_BOTH
def test_propfind_allprop_with_include_adds_the_included(srv):
    """macOS and Windows ask for quota properties this way; allprop alone omits them."""
    body = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/><D:include>'
            "<D:quota-used-bytes/><D:quota-available-bytes/></D:include></D:propfind>")  # fmt: skip
    root = _propfind(srv, "", body)["/"]
    props = {**_props(root), **_props(root, "404")}
    assert f"{D}quota-used-bytes" in props and f"{D}quota-available-bytes" in props
    assert f"{D}resourcetype" in props and f"{D}getlastmodified" in props  # still allprop


@ON_BOTH
def test_quota_properties_are_numbers_or_absent(srv):
    """RFC 4331 §3, §4: without a quota (and on a file) the properties are 404, never an empty
    value, which Windows and Finder read as "0 bytes free" and refuse every copy."""
    assert _put(srv, "quota.txt", b"12345") in (201, 204)
    body = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
            "<D:quota-available-bytes/><D:quota-used-bytes/></D:prop></D:propfind>")  # fmt: skip
    for href, response in {**_propfind(srv, "", body), **_propfind(srv, "quota.txt", body)}.items():
        for tag, el in _props(response).items():
            assert (el.text or "").isdigit(), f"{href}: {tag} is {el.text!r} with 200"
        assert f"{D}quota-available-bytes" in _props(response, "404"), href  # no HFDAV_QUOTA set
    assert _props(_propfind(srv, "", body)["/"])[f"{D}quota-used-bytes"].text.isdigit()


@BOTH_KINDS
def test_quota_available_bytes_with_a_quota(server_factory, kind):
    srv = server_factory.start(kind, env={"HFDAV_QUOTA": "10MiB"})
    assert _put(srv, "q.bin", b"x" * 1000) == 201
    body = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:quota-available-bytes/></D:prop></D:propfind>'
    assert _props(_propfind(srv, "", body)["/"])[f"{D}quota-available-bytes"].text == str(10 * (1 << 20) - 1000)
