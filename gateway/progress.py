"""Progress of long work in bytes, with rate and ETA: human sizes, durations, bars and log lines.

* :func:`human_size` / :func:`parse_duration`: ``1.5 GiB``; ``6h`` → 21600 seconds.
* :class:`Progress`: a tqdm bar on a terminal (``sys.stderr`` is a tty), otherwise an INFO log
  line at most every :data:`LOG_EVERY_S` seconds and at every tenth of the total, each with the
  bytes done, the total, the rate and the time left; one last line when it ends.
* :func:`upload_reporter`: the same cadence for the chunks of one upload (the PUT log), so a
  10 GiB upload logs a line every ten seconds or tenth rather than one per chunk.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger("hfdav.progress")

#: Seconds between two progress log lines (besides one per tenth of the total).
LOG_EVERY_S = 10.0

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_DURATION_FACTORS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def human_size(n: float) -> str:
    """``1536`` → ``1.5 KiB`` (binary multiples, as the size settings)."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # not reached


def human_duration(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"15m"``, ``"6h"``, ``"2d"`` → seconds."""
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (examples: 3600, 90s, 15m, 6h, 2d)")
    return float(m.group(1)) * _DURATION_FACTORS[m.group(2).lower()]


def describe(done: int, total: int | None, elapsed: float, unit: str = "B") -> str:
    """``"1.0 GiB of 10.0 GiB (10%), 50.0 MiB/s, 3m04s left"`` (``unit`` other than bytes:
    ``"2 of 5 steps (40%), 3m04s left"``)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    count = human_size if unit == "B" else str
    text = count(done)
    if total:
        text += f" of {count(total)}{'' if unit == 'B' else ' ' + unit + 's'} ({100 * done // total}%)"
    if unit == "B":
        text += f", {human_size(rate)}/s"
    if total and rate > 0 and done < total:
        text += f", {human_duration((total - done) / rate)} left"
    return text


class _Cadence:
    """Whether a log line is due: every :data:`LOG_EVERY_S` seconds or tenth of the total."""

    def __init__(self, total: int | None, clock: Callable[[], float]):
        self.total = total
        self.clock = clock
        self.start = self.last = clock()
        self.tenth = 0

    def due(self, done: int) -> bool:
        now = self.clock()
        tenth = 10 * done // self.total if self.total else 0
        if now - self.last >= LOG_EVERY_S or tenth > self.tenth:
            self.last, self.tenth = now, tenth
            return True
        return False

    @property
    def elapsed(self) -> float:
        return self.clock() - self.start


class Progress:
    """``with Progress("verifying", total) as p: p.update(n)``; thread-safe."""

    def __init__(self, label: str, total: int | None, *, tty: bool | None = None, unit: str = "B",
                 clock=time.monotonic):  # fmt: skip
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self._closed = False
        self._lock = threading.Lock()
        self._cadence = _Cadence(total, clock)
        self._bar = None
        if sys.stderr.isatty() if tty is None else tty:
            from tqdm import tqdm

            scaled = unit == "B"
            self._bar = tqdm(total=total, desc=label, unit=unit, unit_scale=scaled, unit_divisor=1024,
                             file=sys.stderr, leave=True, dynamic_ncols=True)  # fmt: skip

    def step(self, what: str) -> None:
        """One step of work counted in steps: names it on the bar (or in a log line), counts it."""
        if self._bar is not None:
            self._bar.set_postfix_str(what, refresh=False)
        else:
            log.info("%s: %s", self.label, what)
        self.update(1)

    def update(self, n: int) -> None:
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)
            elif (not self.total or self.done < self.total) and self._cadence.due(self.done):
                log.info("%s: %s", self.label, describe(self.done, self.total, self._cadence.elapsed, self.unit))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            else:
                log.info("%s: done, %s", self.label, describe(self.done, self.total, self._cadence.elapsed, self.unit))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def upload_reporter(clock=time.monotonic) -> Callable[[str, int, int | None, int, int | None], None]:
    """A callback ``(path, chunk, chunks, bytes_done, bytes_total)`` for the chunks of uploads
    that logs each upload at the :class:`Progress` cadence (and once when its last chunk is in)."""
    uploads: dict[str, _Cadence] = {}
    lock = threading.Lock()

    def report(path: str, chunk: int, chunks: int | None, done: int, total: int | None) -> None:
        with lock:
            cadence = uploads.get(path)
            if cadence is None or chunk == 1:
                cadence = uploads[path] = _Cadence(total, clock)
            finished = chunks is not None and chunk >= chunks
            due = (cadence.due(done) or finished) and chunks != 1  # one chunk: the access log says it
            if finished:
                uploads.pop(path, None)
        if due:
            word = "stored" if finished else "storing"
            log.info("%s %s: %s (chunk %d/%s)", word, path, describe(done, total, cadence.elapsed),
                     chunk, chunks if chunks is not None else "?")  # fmt: skip

    return report
