"""hdav, the command-line client of Haskell's DAV library (the library git-annex's WebDAV
special remote is built on), through the shared client scenario (tests/e2e/clients/scenario.py)
on cheroot and on gunicorn, and the request it depends on: an OPTIONS of the very resource
before every COPY, MOVE and DELETE, which must describe that resource even when its name is
percent-encoded.

The library locks around writes only when the Allow header of that OPTIONS lists ``LOCK``
and ``UNLOCK`` with no space after the comma (it splits on ``,`` alone, as Apache writes
the header); hfdav writes ``, `` like most servers, so hdav does not lock here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import requests

from tests.e2e.clients import scenario
from tests.e2e.support import BOTH_SERVERS, SERVER_KINDS, ServerFactory

pytestmark = pytest.mark.e2e


def _allowed(response: requests.Response) -> set[str]:
    return {m.strip() for m in response.headers.get("Allow", "").split(",")}


@BOTH_SERVERS
def test_options_of_an_encoded_name_describes_that_resource(server):
    """cheroot does not percent-decode the path of an OPTIONS request (only of other methods):
    ``OPTIONS /x%20y.txt`` described the missing ``/x%20y.txt``, and below a folder whose name
    needs encoding answered 404, so hdav refused to copy, move or delete such files."""
    s = server.session()
    assert s.request("MKCOL", server.url_for("folder #1 目录")).status_code == 201
    assert s.put(server.url_for("folder #1 目录/x y;1 😀.txt"), data=b"x").status_code == 201
    assert s.put(server.url_for("plain.txt"), data=b"x").status_code == 201

    file_methods = _allowed(s.options(server.url_for("plain.txt")))
    assert {"GET", "PROPFIND", "DELETE", "MOVE", "LOCK"} <= file_methods, file_methods  # the reference
    encoded = s.options(server.url_for("folder #1 目录/x y;1 😀.txt"))
    assert encoded.status_code == 200 and _allowed(encoded) == file_methods
    folder = s.options(server.url_for("folder #1 目录") + "/")
    assert folder.status_code == 200 and "PROPFIND" in _allowed(folder) and "PUT" not in _allowed(folder)
    missing = s.options(server.url_for("folder #1 目录/not here.txt"))
    assert missing.status_code == 200 and "GET" not in _allowed(missing) and "PUT" in _allowed(missing)


DRIVER = Path(__file__).parent / "clients" / "hdav" / "driver.py"

#: Known server defects, as (name, operation) -> reason; each flips to a failure once fixed.
#: hdav copies through the client (GET, then PUT), so only its MOVE sends a Destination.
KNOWN: dict = {}


@pytest.fixture(scope="module", params=SERVER_KINDS)
def run(request, tmp_path_factory):
    scenario.require_client("hdav", "hdav")
    factory = ServerFactory(tmp_path_factory.mktemp(f"hdav-servers-{request.param}"))
    try:
        server = factory.start(request.param)
        workdir = tmp_path_factory.mktemp(f"hdav-{request.param}")
        yield scenario.ClientRun(server, workdir, [sys.executable, str(DRIVER)], can_lock=False)
    finally:
        problems = factory.close()
    if problems:
        pytest.fail("; ".join(problems))


#: hdav has no download command, its copy (GET, then PUT) is for files only, and it always
#: overwrites.
WITHOUT = ("download", *scenario.TREE_OPS, *scenario.GUARD_OPS)


@pytest.mark.slow
@pytest.mark.parametrize(("key", "op"), scenario.cases(KNOWN, lock=False, without=WITHOUT))
def test_hdav(run, key, op):
    scenario.check(run, key, op)
