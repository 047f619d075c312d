"""Progress in bytes with rate and ETA: human sizes and durations, the log cadence of long work
and of long uploads, the bar on a terminal."""

from __future__ import annotations

import io
import logging
import re

import pytest

from gateway import progress
from gateway.progress import Progress, human_size, parse_duration, upload_reporter

MiB = 1 << 20


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_human_sizes_and_durations():
    assert human_size(0) == "0 B" and human_size(1023) == "1023 B"
    assert human_size(1536) == "1.5 KiB" and human_size(10 * (1 << 30)) == "10.0 GiB"
    assert parse_duration("90") == 90 and parse_duration("90s") == 90 and parse_duration("15m") == 900
    assert parse_duration("6h") == 21600 and parse_duration("2d") == 172800 and parse_duration("1.5H") == 5400
    for bad in ("6x", "", "h", "-1h", "6 hours"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def test_a_10_gib_upload_logs_a_line_per_tenth_or_ten_seconds(caplog):
    """400 chunks of 25 MiB arriving at 50 MiB/s (0.5 s each): ~20 lines, not 400, each with
    bytes, rate and time left."""
    clock = Clock()
    report = upload_reporter(clock=clock)
    total = 400 * 25 * MiB
    with caplog.at_level(logging.INFO, logger="hfdav.progress"):
        for i in range(1, 401):
            clock.now += 0.5
            report("/big.bin", i, 400, i * 25 * MiB, total)
    lines = [r.getMessage() for r in caplog.records]
    assert 10 <= len(lines) <= 30
    assert re.match(r"stored /big\.bin: 9\.8 GiB of 9\.8 GiB \(100%\), 5\d\.\d MiB/s \(chunk 400/400\)$", lines[-1])
    tenth = next(line for line in lines if "(10%)" in line)
    assert re.search(r"5\d\.\d MiB/s, 2m5\ds left \(chunk 40/400\)$", tenth), tenth  # 9 GiB at 50 MiB/s: ~3 min


def test_one_chunk_uploads_log_nothing(caplog):
    report = upload_reporter(clock=Clock())
    with caplog.at_level(logging.INFO, logger="hfdav.progress"):
        report("/small.txt", 1, 1, 10, 10)
    assert caplog.records == []


def test_progress_logs_off_a_terminal(caplog, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress, "LOG_EVERY_S", 10.0)
    with caplog.at_level(logging.INFO, logger="hfdav.progress"), Progress("verifying", 100 * MiB, tty=False,
                                                                          clock=clock) as p:  # fmt: skip
        for _ in range(100):
            clock.now += 1
            p.update(MiB)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10  # nine tenths while running, and the last line
    assert lines[0] == "verifying: 10.0 MiB of 100.0 MiB (10%), 1.0 MiB/s, 1m30s left"
    assert lines[-1] == "verifying: done, 100.0 MiB of 100.0 MiB (100%), 1.0 MiB/s"


def test_progress_draws_a_bar_on_a_terminal(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    with Progress("verifying", 4 * MiB, tty=True) as p:
        p.update(4 * MiB)
    text = err.getvalue()
    assert "verifying: 100%" in text and "4.00M/4.00M" in text
