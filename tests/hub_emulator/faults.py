"""Fault injection and the hourly commit quota.

A rule matches requests by HTTP method and a regular expression searched in the raw request target
(path and query string, before percent-decoding), and fires for the next ``times`` matching requests
(``times=None``: until removed). Kinds:

- ``status``: answer ``status`` with a JSON ``{"error": ...}`` body, after reading the request body.
  A 429 carries ``RateLimit: "api";r=0;t=<reset>`` and ``RateLimit-Policy`` so that huggingface_hub's
  ``http_backoff`` sleeps ``reset + 1`` seconds and retries; 408/500/502/503/504 are retried with
  exponential backoff (1, 2, 4, 8, 8 s); a commit POST is never retried by the client.
- ``delay``: sleep ``seconds`` and then serve the request normally (client read timeouts are 10 s on
  downloads and none on API calls).
- ``drop_before``: close the connection without reading the body or answering.
- ``drop_after_read``: read the whole body, then close the connection without processing or answering.
- ``drop_after`` (alias ``lost_answer``): serve the request completely (a commit is applied, an LFS PUT is
  stored), then close the connection without sending the answer.

The commit quota mimics the Hub's "hourly quotas for action: commit": once ``per_hour`` commits have
succeeded in the last 3600 s, commit requests get 429 with the Hub's message.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

KINDS = ("status", "delay", "drop_before", "drop_after_read", "drop_after")
_ALIASES = {"lost_answer": "drop_after", "lost_commit_answer": "drop_after", "timeout": "delay"}

COMMIT_QUOTA_MESSAGE = "You have exceeded our hourly quotas for action: commit. We invite you to retry later."


@dataclass(eq=False)
class FaultRule:
    """One injected fault. ``remaining`` is None for a rule that never runs out; ``hits`` counts firings."""

    kind: str
    method: str | None = None
    path: str = ""
    status: int = 500
    seconds: float = 0.0
    reset: int = 1
    message: str | None = None
    remaining: int | None = 1
    hits: int = 0
    _pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._pattern = re.compile(self.path)

    def matches(self, method: str, target: str) -> bool:
        return (self.method is None or self.method == method) and self._pattern.search(target) is not None

    @property
    def error_message(self) -> str:
        if self.message is not None:
            return self.message
        if self.status == 429:
            return f"Rate limited: you have reached your 'api' rate limit. Retry after {self.reset} seconds."
        return f"Injected fault: HTTP {self.status}"

    def headers(self) -> dict[str, str]:
        """Extra response headers for a ``status`` fault."""
        if self.status == 429:
            return {"RateLimit": f'"api";r=0;t={self.reset}', "RateLimit-Policy": '"fixed window";"api";q=1000;w=300'}
        return {}


class CommitQuota:
    """Sliding one-hour window of successful commits (scope: the whole emulator, like a per-user quota)."""

    def __init__(self, per_hour: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_hour = per_hour
        self.clock = clock
        self._lock = threading.Lock()
        self._times: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._times and self._times[0] <= now - 3600:
            self._times.popleft()

    def reserve(self) -> float | None:
        """Count one commit now, or return None if the quota is exhausted (the commit must get 429)."""
        with self._lock:
            now = self.clock()
            self._expire(now)
            if self.per_hour is not None and len(self._times) >= self.per_hour:
                return None
            self._times.append(now)
            return now

    def release(self, reservation: float) -> None:
        """Give back a reservation whose commit was not applied."""
        with self._lock, contextlib.suppress(ValueError):
            self._times.remove(reservation)

    def used(self) -> int:
        """Commits counted in the current window."""
        with self._lock:
            self._expire(self.clock())
            return len(self._times)

    def retry_after(self) -> int:
        """Seconds until the oldest commit of the window leaves it."""
        with self._lock:
            if not self._times:
                return 0
            return max(1, int(self._times[0] + 3600 - self.clock()) + 1)

    def reset(self) -> None:
        with self._lock:
            self._times.clear()


class FaultInjector:
    """Thread-safe list of fault rules plus the commit quota, consulted for every request."""

    def __init__(self, commit_quota_per_hour: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self.commit_quota = CommitQuota(commit_quota_per_hour)

    def add(
        self,
        method: str | None = None,
        path: str = "",
        kind: str = "status",
        *,
        status: int = 500,
        seconds: float = 0.0,
        times: int | None = 1,
        reset: int = 1,
        message: str | None = None,
    ) -> FaultRule:
        """Fail the next ``times`` requests whose method equals ``method`` (None: any) and whose raw target
        matches the regex ``path``. ``kind``: status | delay | drop_before | drop_after_read | drop_after
        (alias lost_answer)."""
        kind = _ALIASES.get(kind, kind)
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {KINDS}")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        rule = FaultRule(
            kind=kind,
            method=method.upper() if method else None,
            path=path,
            status=status,
            seconds=seconds,
            reset=reset,
            message=message,
            remaining=times,
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def lose_commit_answer(self, times: int = 1) -> FaultRule:
        """Apply the next ``times`` commits, then drop their connections without answering."""
        return self.add("POST", r"/api/[a-z]+s/[^/]+/[^/]+/commit/", "drop_after", times=times)

    def take(self, method: str, target: str) -> FaultRule | None:
        """Return the first live rule matching the request and consume one of its uses."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, target):
                    rule.hits += 1
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining <= 0:
                            self._rules.remove(rule)
                    return rule
        return None

    def remove(self, rule: FaultRule) -> None:
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)

    def clear(self) -> None:
        """Remove every rule (the commit quota is left as is)."""
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[FaultRule]:
        """Rules still live, in matching order."""
        with self._lock:
            return list(self._rules)

    def set_commit_quota(self, per_hour: int | None) -> None:
        """Change the hourly commit quota (None: unlimited); commits already counted stay in the window."""
        self.commit_quota.per_hour = per_hour
