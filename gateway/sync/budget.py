"""The commit budget: a token bucket that keeps hfdav's commits under the Hub's hourly limit.

The Hub allows roughly 128 commits per hour per user (undocumented; HUB_PROTOCOL.md §9) and
answers 429 beyond. The bucket holds ``burst`` tokens and refills at ``per_hour`` tokens per
hour; each commit attempt takes one. A 429 from the Hub empties the bucket and pauses commits
for the time the Hub asked for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: Default sustained rate: well under the Hub's ~128 commits/hour, leaving room for other tools
#: (the web UI, huggingface-cli) working on the same account.
DEFAULT_COMMITS_PER_HOUR = 90
#: Commits that may go back to back after a quiet period (a burst of small files).
DEFAULT_BURST = 12
#: Pause after a 429 that did not say how long to wait (seconds).
DEFAULT_QUOTA_PAUSE_S = 120.0


class CommitBudget:
    def __init__(
        self,
        per_hour: float = DEFAULT_COMMITS_PER_HOUR,
        burst: int = DEFAULT_BURST,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        if per_hour <= 0 or burst < 1:
            raise ValueError("per_hour must be > 0 and burst >= 1")
        self.rate = per_hour / 3600.0
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._paused_until = 0.0
        self._lock = threading.Lock()
        self.spent = 0

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_time(self) -> float:
        """Seconds until a commit may start (0: now)."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            pause = max(0.0, self._paused_until - now)
            if self._tokens >= 1:
                return pause
            return max(pause, (1 - self._tokens) / self.rate)

    def take(self) -> None:
        """Spend a token (call once :meth:`wait_time` said 0)."""
        with self._lock:
            self._refill(self._clock())
            self._tokens -= 1
            self.spent += 1

    def pause(self, seconds: float | None) -> None:
        """The Hub refused a commit for its quota: no commit for ``seconds``."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._tokens, 0.0)
            self._paused_until = max(self._paused_until, now + (seconds or DEFAULT_QUOTA_PAUSE_S))
