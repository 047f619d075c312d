"""The Node.js ``webdav`` package (perry-mitchell/webdav-client, the most used JavaScript WebDAV
client) through the shared client scenario (tests/e2e/clients/scenario.py), on cheroot and on
gunicorn. The package is pinned by tests/e2e/clients/node/package-lock.json and installed
there with ``npm ci`` on first use."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.clients import scenario
from tests.e2e.support import SERVER_KINDS, ServerFactory

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NODE_DIR = Path(__file__).parent / "clients" / "node"
NPM_TIMEOUT_S = 300

#: Known server defects, as (name, operation) -> reason; each flips to a failure once fixed.
KNOWN: dict = {}


def _node_modules() -> None:
    """Install the pinned package once (``npm ci``), or skip saying why it cannot be."""
    scenario.require_client("node", "nodejs")
    if (NODE_DIR / "node_modules" / "webdav" / "package.json").exists():
        return
    npm = scenario.require_client("npm", "npm")
    proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True,
                          timeout=NPM_TIMEOUT_S)  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"npm ci in {NODE_DIR} failed (registry unreachable?): {proc.stderr.strip()[-500:]}")


@pytest.fixture(scope="module", params=SERVER_KINDS)
def run(request, tmp_path_factory):
    _node_modules()
    factory = ServerFactory(tmp_path_factory.mktemp(f"node-servers-{request.param}"))
    try:
        server = factory.start(request.param)
        yield scenario.ClientRun(server, tmp_path_factory.mktemp(f"node-{request.param}"),
                                 ["node", str(NODE_DIR / "driver.mjs")])  # fmt: skip
    finally:
        problems = factory.close()
    if problems:
        pytest.fail("; ".join(problems))


@pytest.mark.parametrize(("key", "op"), scenario.cases(KNOWN))
def test_node_webdav(run, key, op):
    scenario.check(run, key, op)
