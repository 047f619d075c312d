"""Bandwidth limits for remote traffic: one token bucket per direction, shared by every transfer.

A :class:`Bandwidth` lets ``rate`` bytes per second through on average and up to ``burst``
bytes at once after a quiet spell. Callers charge what they send or received with
:meth:`Bandwidth.take`; it sleeps as long as the bucket is in debt. A charge may exceed the
burst (a whole chunk handed to a library that transfers it by itself): the bucket goes into
debt and the next charges wait it off, so the average over a long transfer is still ``rate``.

Two ways to put a limit on a transfer:

- a stream hfdav reads itself (a download, an upload body it hands on in blocks) is wrapped in
  :class:`ThrottledReader`, which charges each block as it is read;
- a transfer a library makes on its own (hf_xet reads the file itself) is charged whole with
  :meth:`Bandwidth.take` before it starts.

A hand-written bucket rather than a rate-limiting library: the ones on PyPI count requests
(with weights capped at the bucket's size), not bytes with debt, and their blocking waits poll.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from typing import IO, BinaryIO

#: Burst of a limit with none set: one second's worth of traffic, at least one 1 MiB block.
MIN_BURST = 1 << 20


class Bandwidth:
    """A token bucket of ``rate`` bytes per second holding at most ``burst`` bytes."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0:
            raise ValueError(f"a bandwidth limit must be positive, not {rate}")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(self.rate, MIN_BURST)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._stamp = clock()
        self.waited = 0.0  # seconds spent waiting, summed over every caller (status, tests)
        self.charged = 0  # bytes charged since the start

    def take(self, n: int) -> float:
        """Charge ``n`` bytes; sleep while the bucket is in debt. Returns the seconds slept."""
        if n <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n
            self.charged += n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
            self.waited += wait
        if wait > 0:
            self._sleep(wait)
        return wait

    def describe(self) -> str:
        return f"{_human_rate(self.rate)} (bursts of {_human_rate(self.burst, per_second=False)})"


class ThrottledReader(io.BufferedIOBase):
    """A binary stream whose reads are charged to ``limit``; seeks and sizes pass through (an
    HTTP library may rewind it to retry, and read its length from the file)."""

    def __init__(self, raw: IO[bytes], limit: Bandwidth):
        super().__init__()
        self._raw = raw
        self._limit = limit

    def read(self, n: int | None = -1, /) -> bytes:
        data = self._raw.read(-1 if n is None else n)
        if data:
            self._limit.take(len(data))
        return data

    read1 = read

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._raw.seekable()

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def limit_of(rate: int | None, burst: int | None = None) -> Bandwidth | None:
    """The limit a setting asks for: None without a rate."""
    return Bandwidth(rate, burst) if rate else None


def throttled(raw: BinaryIO, limit: Bandwidth | None) -> BinaryIO:
    """``raw`` itself without a limit, else a :class:`ThrottledReader` over it."""
    return raw if limit is None else ThrottledReader(raw, limit)  # type: ignore[return-value]


def _human_rate(value: float, *, per_second: bool = True) -> str:
    unit = "/s" if per_second else ""
    for name, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:.3g} {name}{unit}"
    return f"{value:.0f} B{unit}"
