"""Fault injection and the hourly commit quota.

A rule matches requests by HTTP method and a regular expression searched in the raw request target
(path and query string, before percent-decoding), and fires for the next ``times`` matching requests
(``times=None``: until removed). Kinds:

- ``status``: answer ``status`` with a JSON ``{"error": ...}`` body, after reading the request body.
  A 429 carries ``RateLimit: "api";r=0;t=<reset>`` and ``RateLimit-Policy`` so that huggingface_hub's
  ``http_backoff`` sleeps ``reset + 1`` seconds and retries; 408/500/502/503/504 are retried with
  exponential backoff (1, 2, 4, 8, 8 s); a commit POST is never retried by the client.
- ``delay``: sleep ``seconds`` and then serve the request normally (huggingface_hub's own read timeouts
  are 10 s on downloads and none on API calls; hfdav sets per-kind ones, ``gateway/store/hubhttp.py``).
- ``drop_before``: close the connection without reading the body or answering.
- ``drop_after_read``: read the whole body, then close the connection without processing or answering.
- ``drop_after`` (alias ``lost_answer``): serve the request completely (a commit is applied, an LFS PUT is
  stored), then close the connection without sending the answer.
- ``hang``: accept the request and never answer (a frozen Hub): the connection is held until the rule
  is removed (or the emulator stops), then closed without an answer.

:meth:`FaultInjector.down` (every request answers 503) and :meth:`FaultInjector.hang` (every request
hangs) stand for a Hub that is down or frozen; :meth:`FaultInjector.clear` ends both.

The API rate limit mimics the Hub's 5-minute windows (``"api"``: 1,000 calls for a free account):
:class:`ApiRateLimit` counts the requests under ``/api/`` in fixed windows, answers each with
``RateLimit: "api";r=<remaining>;t=<seconds to reset>`` and ``RateLimit-Policy``, and once a window's
calls are spent answers 429 until it ends. Off unless a limit is set.

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

KINDS = ("status", "delay", "drop_before", "drop_after_read", "drop_after", "hang")
_ALIASES = {"lost_answer": "drop_after", "lost_commit_answer": "drop_after", "timeout": "delay"}

#: Longest a ``hang`` rule holds one request (a test that forgets to clear it does not leak it forever).
HANG_LIMIT_S = 600.0
#: The Hub's API rate-limit window (seconds) and the free account's calls per window.
API_WINDOW_S = 300
FREE_API_CALLS = 1000
API_LIMITED_MESSAGE = "Rate limited: you have reached your 'api' rate limit for this 5-minute window."

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
    #: Set once the rule is removed: requests held by a ``hang`` rule end then.
    released: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        self._pattern = re.compile(self.path)

    def hold(self, limit: float = HANG_LIMIT_S) -> None:
        """Block (a ``hang`` rule) until the rule is removed, at most ``limit`` seconds."""
        self.released.wait(limit)

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


class ApiRateLimit:
    """Fixed windows of ``window`` seconds, ``limit`` API calls each (None: unlimited, no headers).

    :meth:`admit` counts one request and returns ``(allowed, headers)``; the headers go on the answer
    (the 429 included), as the Hub sends them."""

    def __init__(
        self, limit: int | None = None, window: int = API_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._used = 0
        self.refused = 0

    def _roll(self, now: float) -> None:
        if now - self._start >= self.window:
            self._start += self.window * ((now - self._start) // self.window)
            self._used = 0

    def admit(self) -> tuple[bool, dict[str, str]]:
        with self._lock:
            if self.limit is None:
                return True, {}
            now = self.clock()
            self._roll(now)
            reset = max(1, int(self._start + self.window - now + 0.999))
            allowed = self._used < self.limit
            if allowed:
                self._used += 1
            else:
                self.refused += 1
            headers = {
                "RateLimit": f'"api";r={max(0, self.limit - self._used)};t={reset}',
                "RateLimit-Policy": f'"fixed window";"api";q={self.limit};w={self.window}',
            }
            return allowed, headers

    def set(self, limit: int | None, window: int | None = None) -> None:
        """Change the limit (None: off) and start a new window."""
        with self._lock:
            self.limit = limit
            if window is not None:
                self.window = window
            self._start = self.clock()
            self._used = 0


class FaultInjector:
    """Thread-safe list of fault rules plus the commit quota, consulted for every request."""

    def __init__(self, commit_quota_per_hour: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self.commit_quota = CommitQuota(commit_quota_per_hour)
        self.api_limit = ApiRateLimit()

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

    def down(self, status: int = 503) -> FaultRule:
        """Every request, on both origins, answers ``status`` until the rule is removed."""
        return self.add(None, "", "status", status=status, times=None, message=f"Service unavailable (HTTP {status})")

    def hang(self, path: str = "") -> FaultRule:
        """Every request (matching ``path``) is accepted and never answered until the rule is removed."""
        return self.add(None, path, "hang", times=None)

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
                            if rule.kind != "hang":
                                rule.released.set()
                    return rule
        return None

    def remove(self, rule: FaultRule) -> None:
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)
        rule.released.set()

    def clear(self) -> None:
        """Remove every rule, releasing held requests (the commit quota and API limit are left as is)."""
        with self._lock:
            rules, self._rules = self._rules, []
        for rule in rules:
            rule.released.set()

    @property
    def rules(self) -> list[FaultRule]:
        """Rules still live, in matching order."""
        with self._lock:
            return list(self._rules)

    def set_commit_quota(self, per_hour: int | None) -> None:
        """Change the hourly commit quota (None: unlimited); commits already counted stay in the window."""
        self.commit_quota.per_hour = per_hour
