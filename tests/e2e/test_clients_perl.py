"""Perl's HTTP::DAV (the library of the ``dave`` client) through the shared client scenario
(tests/e2e/clients/scenario.py), on cheroot and on gunicorn. HTTP::DAV is the lock-heavy one:
it PROPFINDs before every PUT, GET, COPY and MOVE and sends the tokens of the locks it holds
in a tagged If header (``If: <url> (<token>)``) with every write to a locked URL."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.clients import scenario
from tests.e2e.support import SERVER_KINDS, ServerFactory

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DRIVER = Path(__file__).parent / "clients" / "perl" / "driver.pl"

#: Known server defects, as (name, operation) -> reason; each flips to a failure once fixed.
KNOWN: dict = {}


def _require_http_dav() -> None:
    perl = scenario.require_client("perl", "perl")
    if subprocess.run([perl, "-MHTTP::DAV", "-e1"], capture_output=True).returncode != 0:
        pytest.skip("Perl module HTTP::DAV not installed: apt-get install libhttp-dav-perl (or scripts/test.sh)")


@pytest.fixture(scope="module", params=SERVER_KINDS)
def run(request, tmp_path_factory):
    _require_http_dav()
    factory = ServerFactory(tmp_path_factory.mktemp(f"perl-servers-{request.param}"))
    try:
        server = factory.start(request.param)
        yield scenario.ClientRun(server, tmp_path_factory.mktemp(f"perl-{request.param}"), ["perl", str(DRIVER)])
    finally:
        problems = factory.close()
    if problems:
        pytest.fail("; ".join(problems))


@pytest.mark.parametrize(("key", "op"), scenario.cases(KNOWN, without=("put_no_overwrite",)))
def test_perl_http_dav(run, key, op):
    scenario.check(run, key, op)
