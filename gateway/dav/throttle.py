"""Login throttling: failed logins per client address and per user slow down, then block.

Each key (``addr:<client>``, ``user:<name>``) has a failure score: +1 per failed login, halving
every :data:`HALF_LIFE` seconds. While a key's score stays at most ``free`` (half the limit),
failures are answered at once; above it, each failure is answered after a growing delay
(0.25 s, 0.5 s, 1 s, 2 s, ...) up to :data:`MAX_DELAY`; once the next failure would bring the
score past ``limit``, every login attempt on that key gets 429 with the seconds until the
score has decayed enough (``Retry-After``), without its password being checked. A client that
keeps guessing therefore gets about one guess per 90 s per address and per user.

Against an attacker who locks a user out on purpose: a user who logged in from an address
keeps logging in from there while the user's key is blocked (the address's own key still
counts). Only known users get a user key, so names made up by an attacker cost no memory;
addresses are kept in a table of at most ``max_entries`` (least recently failed dropped
first), and IPv6 clients are counted per /64 network, which is what one host usually gets.

The state is per process: under gunicorn with several workers each worker counts on its own,
so a client may get up to ``workers`` times as many guesses (the container runs one worker).
"""

from __future__ import annotations

import functools
import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

#: Seconds for a failure score to halve.
HALF_LIFE = 600.0
#: Longest delay before a failed login's answer, in seconds.
MAX_DELAY = 2.0
#: First delay above the free failures, doubled at each further failure.
FIRST_DELAY = 0.25
#: How long a successful login keeps its (user, address) pair exempt from the user's block.
KNOWN_PAIR_SECONDS = 7 * 24 * 3600.0
#: Entries of each table at most (addresses, known pairs): about 150 bytes each.
MAX_ENTRIES = 10_000


@functools.lru_cache(maxsize=4096)
def address_key(address: str) -> str:
    """The throttle key of a client address: the address itself, IPv6 addresses by /64.
    (Asked twice per request: the answers of the addresses seen last are kept.)"""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "addr:" + address[:64]
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return "addr:" + str(ip.ipv4_mapped)
        return "addr:" + str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return "addr:" + str(ip)


def user_key(name: str) -> str:
    return "user:" + name


class LoginThrottle:
    """The failure table described in the module docstring. Thread-safe."""

    def __init__(self, limit: int = 10, *, half_life: float = HALF_LIFE, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic):  # fmt: skip
        if limit < 2:
            raise ValueError("the failure limit must be at least 2")
        self.limit = limit
        self.free = limit // 2
        self.half_life = half_life
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        #: key -> (score, time of the score)
        self._scores: OrderedDict[str, tuple[float, float]] = OrderedDict()
        #: (user key, address key) -> time of the last successful login
        self._known: OrderedDict[tuple[str, str], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._scores) + len(self._known)

    def _score(self, key: str, now: float) -> float:
        entry = self._scores.get(key)
        if entry is None:
            return 0.0
        score, at = entry
        return score * 0.5 ** ((now - at) / self.half_life)

    def _keys(self, address: str, user: str | None) -> list[str]:
        """The keys a login of ``user`` (a known user, or None) from ``address`` counts on; the
        user's key is left out for a pair that logged in successfully lately."""
        keys = [address_key(address)]
        if user is not None:
            pair = (user_key(user), keys[0])
            seen = self._known.get(pair)
            if seen is None or self._clock() - seen > KNOWN_PAIR_SECONDS:
                keys.append(pair[0])
        return keys

    def retry_after(self, address: str, user: str | None) -> float:
        """0 if a login attempt may be checked now, else the seconds until it may."""
        with self._lock:
            now = self._clock()
            wait = 0.0
            for key in self._keys(address, user):
                score = self._score(key, now)
                if score > self.limit - 1:
                    wait = max(wait, self.half_life * math.log2(score / (self.limit - 1)))
            return wait

    def failed(self, address: str, user: str | None) -> float:
        """Count a failed login; returns the delay its answer should get (seconds)."""
        with self._lock:
            now = self._clock()
            worst = 0.0
            for key in self._keys(address, user):
                score = self._score(key, now) + 1
                self._scores[key] = (score, now)
                self._scores.move_to_end(key)
                worst = max(worst, score)
            self._trim(self._scores)
        over = round(worst) - self.free
        return 0.0 if over <= 0 else min(MAX_DELAY, FIRST_DELAY * 2 ** (over - 1))

    def succeeded(self, address: str, user: str) -> None:
        """Remember that ``user`` logged in from ``address`` (see the module docstring)."""
        with self._lock:
            pair = (user_key(user), address_key(address))
            self._known[pair] = self._clock()
            self._known.move_to_end(pair)
            self._trim(self._known)

    def _trim(self, table: OrderedDict) -> None:
        while len(table) > self.max_entries:
            table.popitem(last=False)

    def scores(self, keys: Iterable[str]) -> dict[str, float]:
        """The current score of each key (for tests and diagnostics)."""
        with self._lock:
            now = self._clock()
            return {k: self._score(k, now) for k in keys}
