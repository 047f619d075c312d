"""Bandwidth limits on the Hub transfers, through the real huggingface_hub (LFS and Xet) against
the emulator. The limiter runs on a fake clock here: what is asserted is which bytes are charged
and how long the transfers are made to wait; bench/bandwidth.py measures the real rate."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from gateway.bandwidth import Bandwidth
from gateway.store.hub import HubClient, HubStore, Upload, object_path
from tests.hub_emulator import HubEmulator
from tests.hub_fixtures import REPO, TOKEN, emulator_fixture  # noqa: F401  (the emulator fixture)
from tests.test_bandwidth import FakeTime

pytestmark = pytest.mark.timeout(120)
MiB = 1 << 20


def limited(rate: float, burst: float) -> tuple[Bandwidth, FakeTime]:
    t = FakeTime()
    return Bandwidth(rate, burst, clock=t.clock, sleep=t.sleep), t


def blobs(tmp_path: Path, count: int, size: int) -> list[tuple[str, Path, bytes]]:
    out = []
    for _ in range(count):
        data = os.urandom(size)
        oid = hashlib.sha256(data).hexdigest()
        path = tmp_path / oid[:12]
        path.write_bytes(data)
        out.append((oid, path, data))
    return out


def test_uploads_are_charged_and_paced(emulator: HubEmulator, hub_transport: str, tmp_path: Path):
    up, t = limited(MiB, burst=MiB)
    client = HubClient(REPO, token=TOKEN, endpoint=emulator.url, upload_limit=up)
    client.ensure_repo()
    items = blobs(tmp_path, 3, 3 * MiB)
    done = client.upload([Upload(object_path(oid), path, oid) for oid, path, _ in items])
    assert all(d.lfs for d in done)
    assert up.charged == 9 * MiB  # every byte sent, each once
    assert t.now == pytest.approx(8.0)  # 9 MiB at 1 MiB/s, the first MiB a burst
    sent = emulator.stats["xet_xorbs" if hub_transport == "xet" else "lfs_puts"]
    assert sent >= 1


def test_reads_are_charged(emulator: HubEmulator, hub_transport: str, tmp_path: Path):
    down, t = limited(2 * MiB, burst=1)
    client = HubClient(REPO, token=TOKEN, endpoint=emulator.url, download_limit=down)
    client.ensure_repo()
    store = HubStore(client, ids_are_sha256=True)
    [(oid, path, data)] = blobs(tmp_path, 1, 4 * MiB)
    store.adopt(oid, path, len(data))
    with store.open_range(oid, MiB, 2 * MiB) as stream:
        assert stream.read() == data[MiB : 3 * MiB]
    assert down.charged == 2 * MiB
    assert t.now == pytest.approx(1.0, abs=1e-6)


def test_no_limit_charges_nothing(emulator: HubEmulator, tmp_path: Path):
    client = HubClient(REPO, token=TOKEN, endpoint=emulator.url)
    client.ensure_repo()
    [(oid, path, _)] = blobs(tmp_path, 1, MiB)
    [done] = client.upload([Upload(object_path(oid), path, oid)])
    assert done.size == MiB and client.upload_limit is None and client.download_limit is None


def test_settings_reach_the_client(tmp_path: Path):
    from gateway.app import hub_client
    from gateway.config import load_settings

    settings = load_settings({
        "HFDAV_DATA_DIR": str(tmp_path), "SYS_TOKEN": "a-long-enough-admin-password", "HF_TOKEN": TOKEN,
        "HF_DATASET_REPO": REPO, "HF_ENDPOINT": "http://127.0.0.1:9", "HFDAV_UPLOAD_LIMIT": "10M",
    })  # fmt: skip
    client = hub_client(settings)
    assert client.upload_limit is not None and client.upload_limit.rate == 10 * MiB
    assert client.upload_limit.burst == 10 * MiB and client.download_limit is None
