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
