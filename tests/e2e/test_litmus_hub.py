"""litmus, the WebDAV conformance suite, on a gateway whose storage is the Hub emulator: the
Hub backend (write-back store, journal, commits) must answer every litmus test as local mode does."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_litmus import GROUPS, LITMUS_TIMEOUT_S, SUMMARY_RE
from tests.hub_emulator import HubEmulator
from tests.hub_fixtures import PASSWORD, emulator_fixture, hub_env, served  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.requires_tool("litmus"), pytest.mark.timeout(600)]


def test_litmus_all_groups_pass_in_hub_mode(emulator: HubEmulator, tmp_path: Path):
    litmus = shutil.which("litmus")
    if litmus is None:
        pytest.skip("litmus not installed: apt-get install litmus (or scripts/test.sh as root)")
    env = hub_env(emulator, tmp_path / "data", HFDAV_TRASH_DAYS="7")
    with served(env, tmp_path / "server.log") as server:
        proc = subprocess.run(
            [litmus, "-k", server.url + "/", "admin", PASSWORD],
            cwd=tmp_path, capture_output=True, text=True, timeout=LITMUS_TIMEOUT_S,
        )  # fmt: skip
        out = proc.stdout + proc.stderr
        results = {m.group(1): m.groups()[1:] for m in SUMMARY_RE.finditer(out)}
        print("litmus in Hub mode: " + ", ".join(f"{g} {p}/{n}" for g, (n, p, _f, _pct) in results.items()))
        assert set(results) == set(GROUPS), f"groups reported: {sorted(results)}\n{out}"
        for group, (run, passed, failed, pct) in results.items():
            assert failed == "0" and run == passed and pct == "100.0", f"{group}: {passed}/{run} passed\n{out}"
        assert "skipped" not in out, f"litmus skipped tests (a missing capability):\n{out}"
        assert proc.returncode == 0, out
        server.wait_synced()
