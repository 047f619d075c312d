"""The HTTP side of the Hub adapter: timeouts, call accounting, the API budget, the Hub's health.

Part of the Hub store (:mod:`gateway.store.hub` is its only user). huggingface_hub sends every
request through one shared ``httpx2.Client`` built by a factory the library lets us replace
(``set_client_factory``); its default client has no timeout at all, so a Hub that accepts a
connection and never answers blocks a call forever. :func:`install` replaces the factory with
one whose transport is :class:`_Transport`, the one place every request of the library passes:

* **timeouts by kind**: API calls (``/api/…``, the LFS batch) get ``api_timeout``, commits
  ``commit_timeout`` (the Hub may take up to a minute to answer a large commit), transfers
  (LFS PUTs and GETs on the storage origin) ``transfer_timeout``; each is a bound on one
  connect, one read or one write (inactivity), not on a whole body. A timeout the library
  passes itself (e.g. ``HF_HUB_ETAG_TIMEOUT``) is left alone. Ranged reads (urllib3, in
  :mod:`gateway.store.hub`) keep the library's download timeout (``HF_HUB_DOWNLOAD_TIMEOUT``,
  10 s) and are counted and watched here too.
* **accounting**: every request is counted by kind (``hfdav_hub_requests_total{kind}``);
  API calls also in the current 5-minute window (:class:`ApiBudget`).
* **the API budget**: the Hub limits API calls per 5-minute window (1,000 for a free account)
  and says where a client stands in ``RateLimit: "api";r=<left>;t=<reset s>`` headers, with
  429 beyond. :class:`ApiBudget` keeps hfdav's own count below ``budget`` calls per window and
  obeys the Hub's word (remaining calls, ``Retry-After``, 429): a call that would overrun waits
  (sleeps, no busy loop). Background work (uploads, commits, collection) is *non-urgent* and
  stops at ``budget`` minus a reserve; calls made under :func:`urgent` (start-up, a PUT waiting
  for its commit in sync durability) may use the reserve.
* **health** (:class:`HubHealth`): when the Hub last answered, since when calls have been
  failing (connection errors, timeouts, 5xx, 429), the last error, and the oldest request still
  waiting for an answer (a frozen Hub shows as calls that never end).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx2

from gateway import metrics

log = logging.getLogger(__name__)

#: The Hub's API rate-limit window (seconds) and the calls a free account may make in one.
API_WINDOW_S = 300.0
DEFAULT_API_BUDGET = 1000
#: Share of the budget kept for urgent calls (start-up, a PUT waiting for its commit).
URGENT_RESERVE = 0.1
#: Default timeouts (seconds): an API call, a commit, one read/write of a transfer.
DEFAULT_API_TIMEOUT_S = 20.0
DEFAULT_COMMIT_TIMEOUT_S = 120.0
DEFAULT_TRANSFER_TIMEOUT_S = 45.0
#: A connection that is not established after this long will not be (any kind).
CONNECT_TIMEOUT_MAX_S = 10.0
#: Longest single sleep of a call waiting for budget (it looks again after it).
BUDGET_SLEEP_MAX_S = 5.0
#: A call without an answer counts as a problem after the watch's threshold, times this for
#: kinds the Hub may take long to answer (a commit of 100 operations); transfers only fail by
#: their timeout (their body is on its way all along).
STALL_FACTOR = {"commit": 1.5}
NO_STALL = frozenset({"transfer"})
#: Pause after a 429 that said nothing about how long to wait (seconds).
DEFAULT_429_PAUSE_S = 30.0

metrics.describe("hfdav_hub_requests_total", "HTTP requests to the Hub (API and storage), by kind")
metrics.describe("hfdav_hub_budget_waits_total", "Hub API calls delayed to stay within the API budget")

_RATELIMIT_RE = re.compile(r'"?api"?\s*;\s*r=(\d+)\s*;\s*t=(\d+)')
_POLICY_QUOTA_RE = re.compile(r'"?api"?\s*;\s*q=(\d+)')
_urgent: contextvars.ContextVar[bool] = contextvars.ContextVar("hfdav_hub_urgent", default=False)

#: (method or None, regex on the path) -> kind, first match wins. Paths of huggingface_hub 2.x.
_KINDS: tuple[tuple[str | None, re.Pattern[str], str], ...] = tuple(
    (method, re.compile(pattern), kind)
    for method, pattern, kind in (
        ("POST", r"^/api/repos/create$", "create_repo"),
        (None, r"^/api/[a-z]+s/.+/revision/", "repo_info"),
        (None, r"^/api/[a-z]+s/.+/preupload/", "preupload"),
        (None, r"^/api/[a-z]+s/.+/commit/", "commit"),
        (None, r"^/api/[a-z]+s/.+/paths-info/", "paths_info"),
        (None, r"^/api/[a-z]+s/.+/tree/", "list_tree"),
        (None, r"^/api/[a-z]+s/.+/super-squash/", "super_squash"),
        (None, r"^/api/[a-z]+s/.+/xet-(write|read)-token/", "xet_token"),
        (None, r"^/api/", "api_other"),
        (None, r"\.git/info/lfs/objects/batch$", "lfs_batch"),
        (None, r"/resolve/", "resolve"),
    )
)
#: Kinds the Hub counts against the "api" window.
API_KINDS = frozenset(
    {"create_repo", "repo_info", "preupload", "commit", "paths_info", "list_tree", "super_squash",
     "xet_token", "api_other", "lfs_batch"}
)  # fmt: skip


def kind_of(method: str, url: str, endpoint_netloc: str | None) -> str:
    """The kind of a Hub request: one of the names above, or ``transfer`` for storage traffic
    (LFS PUTs and GETs, verify calls on another origin)."""
    parts = urlsplit(url)
    if endpoint_netloc is not None and parts.netloc != endpoint_netloc:
        return "transfer"
    for want, pattern, kind in _KINDS:
        if (want is None or want == method) and pattern.search(parts.path):
            return kind
    return "transfer"


@contextlib.contextmanager
def urgent() -> Iterator[None]:
    """Hub calls made inside may use the budget's reserve (someone waits for them)."""
    token = _urgent.set(True)
    try:
        yield
    finally:
        _urgent.reset(token)


@dataclass(frozen=True)
class HubLimits:
    """Timeouts (seconds) and the API budget (calls per ``window`` seconds)."""

    api_timeout: float = DEFAULT_API_TIMEOUT_S
    commit_timeout: float = DEFAULT_COMMIT_TIMEOUT_S
    transfer_timeout: float = DEFAULT_TRANSFER_TIMEOUT_S
    api_budget: int = DEFAULT_API_BUDGET
    window: float = API_WINDOW_S

    def __post_init__(self):
        if min(self.api_timeout, self.commit_timeout, self.transfer_timeout, self.window) <= 0 or self.api_budget < 1:
            raise ValueError("Hub timeouts and the window must be > 0, the budget >= 1")

    def fallback(self) -> httpx2.Timeout:
        """The client's default timeout: the longest of the kinds. Requests that bypass the
        transport below (through a proxy from ``HTTPS_PROXY``) still get it; the others get
        their kind's."""
        longest = max(self.api_timeout, self.commit_timeout, self.transfer_timeout)
        return httpx2.Timeout(longest, connect=min(longest, CONNECT_TIMEOUT_MAX_S))

    def timeout_for(self, kind: str) -> httpx2.Timeout:
        seconds = (
            self.commit_timeout
            if kind == "commit"
            else self.api_timeout
            if kind in API_KINDS
            else self.transfer_timeout
        )
        return httpx2.Timeout(seconds, connect=min(seconds, CONNECT_TIMEOUT_MAX_S))


class ApiBudget:
    """API calls of the last ``window`` seconds (sliding), and what the Hub said about them."""

    def __init__(self, budget: int, window: float = API_WINDOW_S, *, clock: Callable[[], float] = time.monotonic):
        self.budget = budget
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._calls: deque[float] = deque()
        #: the Hub's own count: calls left and when its window resets (monotonic time)
        self._hub_left: int | None = None
        self._hub_reset = 0.0
        self._hub_quota: int | None = None
        self._paused_until = 0.0
        self.waits = 0

    def _expire(self, now: float) -> None:
        while self._calls and self._calls[0] <= now - self.window:
            self._calls.popleft()
        if self._hub_left is not None and now >= self._hub_reset:
            self._hub_left = None

    def used(self) -> int:
        """API calls made in the current window."""
        with self._lock:
            self._expire(self._clock())
            return len(self._calls)

    def wait_time(self, *, urgent: bool = False) -> float:
        """Seconds until an API call may go (0: now)."""
        with self._lock:
            return self._wait_locked(self._clock(), urgent)

    def _wait_locked(self, now: float, urgent: bool) -> float:
        self._expire(now)
        reserve = 0 if urgent else max(1, int(self.budget * URGENT_RESERVE))
        wait = max(0.0, self._paused_until - now)
        if len(self._calls) >= self.budget - reserve and self._calls:
            # the oldest calls leave the window first
            index = len(self._calls) - (self.budget - reserve)
            wait = max(wait, self._calls[min(index, len(self._calls) - 1)] + self.window - now)
        if self._hub_left is not None:
            hub_reserve = 0 if urgent else max(1, int((self._hub_quota or self.budget) * URGENT_RESERVE))
            if self._hub_left <= hub_reserve:
                wait = max(wait, self._hub_reset - now)
        return wait

    def take(self) -> None:
        with self._lock:
            self._take_locked(self._clock())

    def _take_locked(self, now: float) -> None:
        self._calls.append(now)
        if self._hub_left is not None:
            self._hub_left = max(0, self._hub_left - 1)

    def observe(self, status: int, headers) -> None:
        """What an answer says about the limit: ``RateLimit`` (calls left, seconds to reset),
        ``RateLimit-Policy`` (the window's quota), ``Retry-After`` or a bare 429."""
        now = self._clock()
        match = _RATELIMIT_RE.search(headers.get("RateLimit", "") or "")
        quota = _POLICY_QUOTA_RE.search(headers.get("RateLimit-Policy", "") or "")
        with self._lock:
            if quota:
                self._hub_quota = int(quota.group(1))
            if match:
                left, reset = int(match.group(1)), now + int(match.group(2))
                if self._hub_left is not None and abs(reset - self._hub_reset) <= 1.5:
                    # the same window: answers to concurrent calls arrive in any order
                    left = min(left, self._hub_left)
                self._hub_left, self._hub_reset = left, reset
            if status == 429:
                retry_after = headers.get("Retry-After", "")
                if retry_after.strip().isdigit():
                    pause = float(retry_after)
                elif match:
                    pause = float(match.group(2)) + 1
                else:
                    pause = DEFAULT_429_PAUSE_S
                self._paused_until = max(self._paused_until, now + pause)

    def acquire(self, *, urgent: bool = False, sleep: Callable[[float], None] = time.sleep) -> float:
        """Wait until a call may go, then count it. Returns the seconds waited."""
        waited = 0.0
        noted = False
        while True:
            with self._lock:
                now = self._clock()
                wait = self._wait_locked(now, urgent)
                if wait <= 0:
                    self._take_locked(now)  # checked and counted at once: threads do not overrun
                    return waited
            if not noted:
                noted = True
                self.waits += 1
                metrics.inc("hfdav_hub_budget_waits_total")
                log.info("Hub API budget: %d calls in the last %.0f s; waiting %.0f s", self.used(), self.window, wait)
            step = min(wait, BUDGET_SLEEP_MAX_S)
            sleep(step)
            waited += step


class HubHealth:
    """How the Hub has been answering (see the module docstring). Thread-safe."""

    def __init__(self, *, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._lock = threading.Lock()
        self._inflight: dict[int, tuple[str, float]] = {}
        self._next = 0
        self.last_ok: float | None = None
        self.failing_since: float | None = None
        self.failing_kind: str | None = None
        self.last_error: str | None = None

    def begin(self, kind: str) -> int:
        with self._lock:
            self._next += 1
            self._inflight[self._next] = (kind, self._clock())
            return self._next

    def end(self, token: int, error: str | None = None) -> None:
        """The call ``token`` got an answer (``error`` None) or failed."""
        with self._lock:
            now = self._clock()
            kind, started = self._inflight.pop(token, ("?", now))
            if error is None:
                self.last_ok = now
                self.failing_since = None
                self.failing_kind = None
                self.last_error = None
            else:
                if self.failing_since is None:
                    self.failing_since = started  # failing since the failed call was made
                self.failing_kind = kind
                self.last_error = error

    def problem(self, stall_after: float) -> tuple[str, float, str] | None:
        """``(kind, since, error)`` while the Hub fails or a call has had no answer for
        ``stall_after`` seconds (commits: STALL_FACTOR times that; transfers, which send or
        receive a body all along, only by their own timeout); None while it answers."""
        now = self._clock()
        with self._lock:
            if self.failing_since is not None:
                return self.failing_kind or "?", self.failing_since, self.last_error or "failing"
            stalled = [
                (kind, since)
                for kind, since in self._inflight.values()
                if kind not in NO_STALL and now - since >= stall_after * STALL_FACTOR.get(kind, 1.0)
            ]
        if stalled:
            kind, since = min(stalled, key=lambda item: item[1])
            return kind, since, f"no answer to a {kind} call for {now - since:.0f} s"
        return None

    def reset(self) -> None:
        with self._lock:
            self._inflight.clear()
            self.last_ok = self.failing_since = None
            self.failing_kind = self.last_error = None


class HubHttp:
    """The process's Hub HTTP policy: limits, budget, health (huggingface_hub's session is
    process-wide, so this is too; :func:`install` sets it up)."""

    def __init__(self, limits: HubLimits, endpoint: str | None):
        self.limits = limits
        self.endpoint_netloc = urlsplit(endpoint).netloc if endpoint else None
        self.budget = ApiBudget(limits.api_budget, limits.window)
        self.health = HubHealth()

    def classify(self, method: str, url: str) -> str:
        return kind_of(method, url, self.endpoint_netloc)

    def before(self, kind: str) -> None:
        """Count a request about to go; API calls wait for the budget first."""
        metrics.inc("hfdav_hub_requests_total", kind=kind)
        if kind in API_KINDS:
            self.budget.acquire(urgent=_urgent.get())

    def after(self, token: int, status: int | None, headers, error: str | None, *, kind: str = "") -> None:
        if headers is not None and kind in API_KINDS:
            self.budget.observe(status or 0, headers)
        if error is None and status is not None and (status >= 500 or status == 429):
            error = f"HTTP {status}"
        self.health.end(token, error)


class _Transport(httpx2.BaseTransport):
    """Wraps the library's transport: per-kind timeouts, counting, budget, health."""

    def __init__(self, policy: HubHttp, inner: httpx2.BaseTransport):
        self.policy = policy
        self.inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        policy = self.policy
        kind = policy.classify(request.method, str(request.url))
        timeout = request.extensions.get("timeout") or {}
        if timeout == policy.limits.fallback().as_dict() or all(v is None for v in timeout.values()):
            request.extensions = {**request.extensions, "timeout": policy.limits.timeout_for(kind).as_dict()}
        policy.before(kind)
        token = policy.health.begin(kind)
        try:
            response = self.inner.handle_request(request)
        except BaseException as exc:
            policy.after(token, None, None, f"{kind}: {type(exc).__name__}: {exc}", kind=kind)
            raise
        policy.after(token, response.status_code, response.headers, None, kind=kind)
        return response

    def close(self) -> None:
        self.inner.close()


_current: HubHttp | None = None
_install_lock = threading.Lock()


def install(limits: HubLimits, endpoint: str | None) -> HubHttp:
    """Make huggingface_hub's shared client use ``limits`` (and count, budget and watch every
    request). Idempotent for equal limits; the newest call wins otherwise."""
    global _current
    from huggingface_hub.utils import _http as hf_http
    from huggingface_hub.utils import set_client_factory

    with _install_lock:
        if (
            _current is not None
            and _current.limits == limits
            and _current.endpoint_netloc == (urlsplit(endpoint).netloc if endpoint else None)
        ):
            return _current
        policy = HubHttp(limits, endpoint)

        def factory() -> httpx2.Client:
            return httpx2.Client(
                event_hooks={"request": [hf_http.hf_request_event_hook]},
                follow_redirects=True,
                timeout=limits.fallback(),
                transport=_Transport(policy, httpx2.HTTPTransport()),
            )

        set_client_factory(factory)
        _current = policy
        return policy


def current() -> HubHttp | None:
    """The installed policy (None before :func:`install`)."""
    return _current
