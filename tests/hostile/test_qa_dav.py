"""WebDAV requests from an outside tester's list, against both servers: the share's root as
the object or the target of a DELETE, MOVE or COPY."""

from __future__ import annotations

import pytest

from tests.e2e.support import BOTH_KINDS

pytestmark = pytest.mark.e2e


@BOTH_KINDS
@pytest.mark.parametrize(
    "method,path,destination",
    [("DELETE", "", None), ("MOVE", "", "moved/"), ("MOVE", "f.txt", ""), ("COPY", "f.txt", "")],
    ids=["delete-root", "move-root", "move-onto-root", "copy-onto-root"],
)
def test_the_root_cannot_be_deleted_moved_or_replaced(server_factory, kind, method, path, destination):
    """403, not a 500 (WsgiDAV asked for the parent of the root, which has none), and the
    share is intact afterwards."""
    server = server_factory.start(kind)
    s = server.session()
    s.put(server.url_for("f.txt"), data=b"kept", timeout=30).raise_for_status()
    headers = {"Destination": server.url_for(destination)} if destination is not None else {}
    r = s.request(method, server.url_for(path), headers=headers, timeout=30)
    assert r.status_code == 403, (r.status_code, r.text[:200])
    assert s.get(server.url_for("f.txt"), timeout=30).content == b"kept"
    assert s.request("PROPFIND", server.url, headers={"Depth": "0"}, timeout=30).status_code == 207


def _proppatch(props: dict[str, str]) -> str:
    inner = "".join(f'<Z:{k} xmlns:Z="urn:qa">{v}</Z:{k}>' for k, v in props.items())
    head = '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:">'
    return f"{head}<D:set><D:prop>{inner}</D:prop></D:set></D:propertyupdate>"


def test_dead_properties_of_a_resource_are_bounded(server_factory):
    """Dead properties live in the database, outside the quota, and every PROPFIND of the
    resource (or of its folder) carries them: a user could store without limit beside a
    one-byte file (four 900 KiB values were stored and answered). Beyond the bound the
    PROPPATCH is answered 507 for the property (RFC 4918 §9.2.1) and nothing of it is stored."""
    srv = server_factory.start("cheroot")
    s = srv.session()
    s.put(srv.url_for("f.txt"), data=b"x", timeout=30).raise_for_status()
    big = _proppatch({"big": "v" * (900 * 1024)})
    r = s.request("PROPPATCH", srv.url_for("f.txt"), data=big, timeout=30)
    assert r.status_code == 207 and "507" in r.text, r.text[:300]
    stored = 0
    for i in range(200):  # many small ones, one request each: bounded in total as well
        r = s.request("PROPPATCH", srv.url_for("f.txt"), data=_proppatch({f"p{i}": "v" * 2000}), timeout=30)
        assert r.status_code == 207
        stored += "507" not in r.text
    assert 0 < stored < 200
    listing = s.request("PROPFIND", srv.url_for("f.txt"), headers={"Depth": "0"}, timeout=30)
    assert listing.status_code == 207
    assert len(listing.content) < 200 * 1024, len(listing.content)
    # removing makes room again
    remove = ('<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:remove><D:prop>'
              '<Z:p0 xmlns:Z="urn:qa"/></D:prop></D:remove></D:propertyupdate>')  # fmt: skip
    assert "200" in s.request("PROPPATCH", srv.url_for("f.txt"), data=remove, timeout=30).text
    r = s.request("PROPPATCH", srv.url_for("f.txt"), data=_proppatch({"again": "v" * 1000}), timeout=30)
    assert "507" not in r.text and "200 OK" in r.text, r.text[:300]


def test_propfind_depth_infinity_is_bounded(server_factory):
    """PROPFIND with Depth infinity (or without Depth, which means the same) costs time and
    memory in proportion to the whole tree below it (4,000 files: 3 MB built in memory). Over
    HFDAV_MAX_PROPFIND_INFINITY members it is refused with 403 and the propfind-finite-depth
    precondition (RFC 4918 §9.1); a smaller tree, and Depth 1 anywhere, are still answered."""
    srv = server_factory.start("cheroot", env={"HFDAV_MAX_PROPFIND_INFINITY": "10"})
    s = srv.session()
    s.request("MKCOL", srv.url_for("small"), timeout=30).raise_for_status()
    s.request("MKCOL", srv.url_for("big"), timeout=30).raise_for_status()
    for i in range(3):
        s.put(srv.url_for(f"small/{i}.txt"), data=b"x", timeout=30).raise_for_status()
    for i in range(12):
        s.put(srv.url_for(f"big/{i}.txt"), data=b"x", timeout=30).raise_for_status()
    for path, headers in (("big", {"Depth": "infinity"}), ("big", {}), ("", {"Depth": "infinity"})):
        r = s.request("PROPFIND", srv.url_for(path), headers=headers, timeout=30)
        assert r.status_code == 403, (path, headers, r.status_code)
        assert "propfind-finite-depth" in r.text, r.text[:300]
    assert s.request("PROPFIND", srv.url_for("small"), headers={"Depth": "infinity"}, timeout=30).status_code == 207
    listing = s.request("PROPFIND", srv.url_for("big"), headers={"Depth": "1"}, timeout=30)
    assert listing.status_code == 207 and listing.text.count("<D:response") == 13


def test_copy_of_a_tree_is_bounded(server_factory):
    """COPY of a folder costs a database row (and time) per member: 4,000 files took 13 s,
    and each COPY can double the tree, so a few requests grew the database without bound
    (files of 0 bytes do not count towards the quota). Over HFDAV_MAX_COPY_MEMBERS members the
    COPY is refused with 507 before anything is copied; a smaller one, and MOVE, still work."""
    srv = server_factory.start("cheroot", env={"HFDAV_MAX_COPY_MEMBERS": "10"})
    s = srv.session()
    for folder, n in (("small", 3), ("big", 12)):
        s.request("MKCOL", srv.url_for(folder), timeout=30).raise_for_status()
        for i in range(n):
            s.put(srv.url_for(f"{folder}/{i}.txt"), data=b"", timeout=30).raise_for_status()
    r = s.request("COPY", srv.url_for("big"), headers={"Destination": srv.url_for("big2")}, timeout=30)
    assert r.status_code == 507, (r.status_code, r.text[:200])
    assert s.request("PROPFIND", srv.url_for("big2"), headers={"Depth": "0"}, timeout=30).status_code == 404
    r = s.request("COPY", srv.url_for("small"), headers={"Destination": srv.url_for("small2")}, timeout=30)
    assert r.status_code == 201
    r = s.request("MOVE", srv.url_for("big"), headers={"Destination": srv.url_for("moved")}, timeout=30)
    assert r.status_code == 201
