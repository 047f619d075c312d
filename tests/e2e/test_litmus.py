"""litmus, the WebDAV conformance suite: all five groups, every test passing, on both servers."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.e2e.support import BOTH_SERVERS, require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.requires_tool("litmus")]

GROUPS = ("basic", "copymove", "props", "locks", "http")
#: ``<- summary for `basic': of 16 tests run: 16 passed, 0 failed. 100.0%``
SUMMARY_RE = re.compile(r"summary for `(\w+)': of (\d+) tests run: (\d+) passed, (\d+) failed\. ([\d.]+)%")
LITMUS_TIMEOUT_S = 300


@BOTH_SERVERS
def test_litmus_all_groups_pass(server, tmp_path):
    litmus = require_tool("litmus")
    # litmus writes debug.log and child.log into its working directory
    proc = subprocess.run(
        [litmus, "-k", server.url, server.user, server.password],
        cwd=tmp_path, capture_output=True, text=True, timeout=LITMUS_TIMEOUT_S,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    results = {m.group(1): m.groups()[1:] for m in SUMMARY_RE.finditer(out)}
    print(f"litmus on {server.kind}: " + ", ".join(f"{g} {p}/{n}" for g, (n, p, _f, _pct) in results.items()))
    assert set(results) == set(GROUPS), f"groups reported: {sorted(results)}\n{out}"
    for group, (run, passed, failed, pct) in results.items():
        assert failed == "0" and run == passed and pct == "100.0", f"{group}: {passed}/{run} passed\n{out}"
    assert "FAIL" not in out, out
    assert "skipped" not in out, f"litmus skipped tests (a missing capability):\n{out}"
    assert proc.returncode == 0, out
