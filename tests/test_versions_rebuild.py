"""Earlier versions survive a rebuild from the dataset repo alone (journal replay), also
with client-side encryption."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from gateway import versions as fv
from tests.hub_emulator import HubEmulator
from tests.hub_fixtures import (  # noqa: F401  (emulator_fixture provides the emulator fixture)
    emulator_fixture,
    hub_env,
    hub_sync,
    in_process_gateway,
)

pytestmark = pytest.mark.timeout(180)
MiB = 1 << 20


@pytest.mark.parametrize("encrypted", [False, True], ids=["clear", "encrypted"])
def test_versions_survive_a_rebuild(emulator: HubEmulator, tmp_path: Path, encrypted: bool):
    extra = {"HFDAV_ENCRYPTION_KEY": "ab" * 32} if encrypted else {}
    contents = [os.urandom(MiB + 100 * i) for i in range(6)]  # the original and 5 overwrites
    with in_process_gateway(hub_env(emulator, tmp_path / "data", HFDAV_VERSIONS="3", **extra)) as gw:
        for data in contents:
            gw.files.write_bytes("/ckpt.bin", data)
        assert hub_sync(gw).flush(120)
        before = [(v.size, v.etag) for v in fv.list_versions(gw.files, "/ckpt.bin")]
    assert len(before) == 3
    shutil.rmtree(tmp_path / "data")
    # the journal says how many were kept, whatever the rebuilding gateway's setting
    with in_process_gateway(hub_env(emulator, tmp_path / "data", HFDAV_VERSIONS="0", **extra)) as gw:
        assert gw.files.read_bytes("/ckpt.bin") == contents[5]
        assert [(v.size, v.etag) for v in fv.list_versions(gw.files, "/ckpt.bin")] == before
        for n, want in zip((1, 2, 3), (contents[4], contents[3], contents[2]), strict=True):
            assert fv.read_version(gw.files, "/ckpt.bin", n) == want
        with fv.open_version(gw.files, "/ckpt.bin", 2) as r:
            r.seek(MiB - 5)
            assert r.read(50) == contents[3][MiB - 5 : MiB + 45]
        fv.restore_version(gw.files, "/ckpt.bin", 3)
        assert gw.files.read_bytes("/ckpt.bin") == contents[2]
