"""The bandwidth limiter's arithmetic, on a fake clock (no timing in tests: bench/bandwidth.py
measures the real rate)."""

from __future__ import annotations

import io
import threading

import pytest

from gateway.bandwidth import Bandwidth, ThrottledReader, throttled


class FakeTime:
    def __init__(self):
        self.now = 0.0
        self.lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def limiter(rate, burst=None):
    t = FakeTime()
    return Bandwidth(rate, burst, clock=t.clock, sleep=t.sleep), t


def test_burst_passes_at_once_then_the_rate_holds():
    bw, t = limiter(1000, burst=500)
    assert bw.take(500) == 0  # the full bucket
    for _ in range(10):
        bw.take(100)
    # 1,500 bytes, 500 of them the burst: one more second at 1,000 B/s
    assert t.now == pytest.approx(1.0)


def test_a_charge_larger_than_the_burst_is_paid_off():
    bw, t = limiter(10_000_000, burst=1_000_000)
    for _ in range(4):  # four 50 MB chunks handed whole to a library
        bw.take(50_000_000)
    # 200 MB at 10 MB/s less the first megabyte of burst; the last charge is waited off too
    assert t.now == pytest.approx((200_000_000 - 1_000_000) / 10_000_000)


def test_quiet_time_refills_up_to_the_burst_only():
    bw, t = limiter(1000, burst=200)
    bw.take(200)
    t.now += 100  # a long pause refills 200, not 100,000
    assert bw.take(200) == 0
    assert bw.take(100) == pytest.approx(0.1)


def test_transfers_share_one_limit():
    bw, t = limiter(1_000_000, burst=1)
    readers = [ThrottledReader(io.BytesIO(b"x" * 500_000), bw) for _ in range(4)]
    while any([r.read(10_000) for r in readers]):  # interleaved, as concurrent transfers are
        pass
    # 2 MB in total through one 1 MB/s bucket: two seconds, not the half second of one reader
    assert t.now == pytest.approx(2.0)


def test_throttled_reader_charges_what_it_reads():
    bw, t = limiter(1000, burst=1)
    reader = ThrottledReader(io.BytesIO(b"x" * 3001), bw)
    assert len(reader.read(1000)) == 1000
    assert len(reader.read()) == 2001
    assert reader.read(10) == b""
    assert t.now == pytest.approx(3.0)


def test_no_limit_is_the_stream_itself():
    raw = io.BytesIO(b"abc")
    assert throttled(raw, None) is raw


@pytest.mark.parametrize("rate", [0, -5])
def test_a_limit_must_be_positive(rate):
    with pytest.raises(ValueError, match="positive"):
        Bandwidth(rate)


def test_settings_and_summary(tmp_path):
    from gateway.config import load_settings
    from gateway.errors import ConfigError
    from gateway.startup import bandwidth_lines

    base = {"HFDAV_DATA_DIR": str(tmp_path), "SYS_TOKEN": "a-long-enough-admin-password"}
    plain = load_settings(base)
    assert plain.upload_limit is None and bandwidth_lines(plain) == []
    limited = load_settings({**base, "HFDAV_UPLOAD_LIMIT": "10MiB/s", "HFDAV_BANDWIDTH_BURST": "2M"})
    assert limited.upload_limit == 10 << 20 and limited.download_limit is None
    assert bandwidth_lines(limited) == ["bandwidth: upload 10.0 MiB/s (bursts of 2.0 MiB), download unlimited"]
    with pytest.raises(ConfigError, match="HFDAV_DOWNLOAD_LIMIT"):
        load_settings({**base, "HFDAV_DOWNLOAD_LIMIT": "fast"})
    with pytest.raises(ConfigError, match="stall"):
        load_settings({**base, "HFDAV_UPLOAD_LIMIT": "100"})
