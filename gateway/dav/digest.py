"""HTTP Digest (RFC 7616, MD5, ``qop=auth``) with nonces the server checks.

A nonce is ``base64url(time ‖ random ‖ HMAC-SHA256(key, time ‖ random)[:16])`` (time in µs): any process
holding the key can tell a nonce it issued from one it did not, and how old it is, without a
shared table. The key is a random file in the data directory (``digest-nonce-key``, created
once), so every gunicorn worker and every restart agree on it.

A request is accepted only if its response hash is right *and* its nonce is one of ours, at
most :data:`NONCE_LIFETIME` seconds old, and its ``nc`` (nonce count) was not used before with
that nonce. Counts are remembered per nonce in a window of :data:`NC_WINDOW` (so requests of one
client sent in parallel may arrive out of order). A right hash with an expired, unknown or
replayed nonce is answered 401 with ``stale=true``: the client computes a new answer with a
fresh nonce without asking its user again, and a captured header cannot be played back.

The used-count table is per process, bounded (:data:`MAX_NONCES`, least recently used dropped;
a dropped nonce counts as stale afterwards). With several gunicorn workers a captured header
can be replayed at most once on each other worker within the nonce lifetime.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from enum import Enum
from pathlib import Path

#: Seconds a nonce is accepted for; then the client gets ``stale=true`` and a new one.
NONCE_LIFETIME = 1800
#: How far in the future a nonce's time may be (clock steps between processes).
CLOCK_SKEW = 60
#: Counts below the highest one seen that are still accepted (out-of-order parallel requests).
NC_WINDOW = 64
#: Nonces whose used counts are remembered, at most (~200 bytes each).
MAX_NONCES = 10_000
KEY_FILE = "digest-nonce-key"

_TIME = struct.Struct(">Q")
_RANDOM_BYTES = 12
_MAC_BYTES = 16
_NONCE_BYTES = _TIME.size + _RANDOM_BYTES + _MAC_BYTES

# One auth-param: token = token / quoted-string, then a comma or the end (RFC 9110 §11.2).
_PARAM_RE = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s",]*)\s*(?:,|$)')
_NC_RE = re.compile(r"^[0-9a-fA-F]{8}$")


class NonceState(Enum):
    OK = "ok"
    STALE = "stale"  # too old, or forgotten by this process
    UNKNOWN = "unknown"  # not issued by this server (bad signature or format)
    REPLAYED = "replayed"  # this nc was used before with this nonce


def load_key(data_dir: Path) -> bytes:
    """The nonce key of ``data_dir``, created (mode 0600) the first time. Processes starting
    together agree: the key is written to a private temporary file and linked into place, so
    only one can win and the others read its key."""
    path = data_dir / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return bytes.fromhex(path.read_text().strip())


def parse_params(value: str) -> dict[str, str] | None:
    """The auth-params after ``Digest``: lower-case names → unquoted values; None when the
    text is not a list of ``name=value`` or names one parameter twice."""
    params: dict[str, str] = {}
    pos, end = 0, len(value)
    while pos < end:
        m = _PARAM_RE.match(value, pos)
        if m is None or m.end() == pos:
            return None
        name, raw = m.group(1).lower(), m.group(2)
        if name in params:
            return None
        params[name] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
        pos = m.end()
    return params


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def ha1(user: str, realm: str, password: str) -> str:
    return _md5(f"{user}:{realm}:{password}")


def expected_response(ha1_hex: str, method: str, params: dict[str, str]) -> str:
    """The ``response`` a client knowing the password sends (``qop=auth``)."""
    ha2 = _md5(f"{method}:{params['uri']}")
    return _md5(f"{ha1_hex}:{params['nonce']}:{params['nc']}:{params['cnonce']}:auth:{ha2}")


class NonceBook:
    """Issues nonces and checks them (see the module docstring). Thread-safe."""

    def __init__(self, key: bytes, *, lifetime: float = NONCE_LIFETIME, max_nonces: int = MAX_NONCES,
                 clock: Callable[[], float] = time.time):  # fmt: skip
        self._key = key
        self.lifetime = lifetime
        self._max = max_nonces
        self._clock = clock
        self._lock = threading.Lock()
        #: nonce -> (highest nc seen, bit i set: nc = highest - i was used)
        self._used: OrderedDict[str, tuple[int, int]] = OrderedDict()
        #: nonces issued at or before this time that are not in ``_used`` were dropped from it
        self._forgotten_until = 0

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_BYTES]

    def issue(self) -> str:
        body = _TIME.pack(int(self._clock() * 1e6)) + secrets.token_bytes(_RANDOM_BYTES)
        return base64.urlsafe_b64encode(body + self._mac(body)).decode().rstrip("=")

    def _issued_at(self, nonce: str) -> int | None:
        """The time (µs) a nonce of ours was issued; None if it is not one of ours."""
        if len(nonce) != (_NONCE_BYTES * 4 + 2) // 3:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except ValueError:
            return None
        body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if len(raw) != _NONCE_BYTES or not hmac.compare_digest(mac, self._mac(body)):
            return None
        return _TIME.unpack_from(body)[0]

    def use(self, nonce: str, nc: str) -> NonceState:
        """Check ``nonce`` with count ``nc`` (8 hex digits) and, if fine, mark the count used.
        Call it only once the response hash was found right."""
        issued = self._issued_at(nonce)
        if issued is None or not _NC_RE.match(nc):
            return NonceState.UNKNOWN
        age = self._clock() - issued / 1e6
        if age < -CLOCK_SKEW:
            return NonceState.UNKNOWN
        if age > self.lifetime:
            return NonceState.STALE
        count = int(nc, 16)
        with self._lock:
            entry = self._used.get(nonce)
            if entry is None:
                if issued <= self._forgotten_until:
                    return NonceState.STALE
                entry = (count, 0)
            highest, mask = entry
            if count > highest:
                mask = (mask << (count - highest)) & ((1 << NC_WINDOW) - 1)
                highest = count
            offset = highest - count
            if offset >= NC_WINDOW or mask >> offset & 1:
                return NonceState.REPLAYED
            self._used[nonce] = (highest, mask | 1 << offset)
            self._used.move_to_end(nonce)
            while len(self._used) > self._max:
                dropped, _ = self._used.popitem(last=False)
                self._forgotten_until = max(self._forgotten_until, self._issued_at(dropped) or 0)
        return NonceState.OK

    def __len__(self) -> int:
        return len(self._used)
