"""Signed session cookies and CSRF tokens of the web front.

A session is a cookie ``hfdav_ui=<user>.<expiry>.<nonce>.<mac>`` where ``mac`` is an HMAC-SHA256
over the rest with the data dir's key (``<data dir>/webui-key``, made on first use, mode 0600).
Nothing is kept on the server, so a session survives a restart and works across gunicorn
workers; it lasts :data:`SESSION_SECONDS`. The user's rights are looked up again on every
request (a user removed from the configuration is signed out at once).

The CSRF token is a second HMAC over the cookie's value: the page gets it from ``/api/me``
and sends it as ``X-CSRF-Token`` with every state-changing call. Another site can neither read
it nor (SameSite=Strict) make the browser send the cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

COOKIE = "hfdav_ui"
SESSION_SECONDS = 12 * 3600
KEY_FILE = "webui-key"


def load_key(data_dir: Path) -> bytes:
    path = Path(data_dir) / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    try:
        os.link(tmp, path)  # the first process to get there wins; the others read its key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return bytes.fromhex(path.read_text().strip())


class Signer:
    def __init__(self, key: bytes, *, clock=time.time):
        self._key = key
        self._clock = clock

    def _mac(self, purpose: str, text: str) -> str:
        return hmac.new(self._key, f"{purpose}\0{text}".encode(), hashlib.sha256).hexdigest()

    def sign(self, purpose: str, fields: list[str], seconds: float) -> str:
        """``fields`` (no ``.`` in them) with an expiry and a MAC, as one cookie-safe string."""
        body = ".".join([*fields, str(int(self._clock() + seconds)), secrets.token_hex(8)])
        return body + "." + self._mac(purpose, body)

    def verify(self, purpose: str, value: str | None, n_fields: int) -> list[str] | None:
        """The fields of a value :meth:`sign` made, or None if forged, malformed or expired."""
        if not value:
            return None
        body, _, mac = value.rpartition(".")
        if not body or not hmac.compare_digest(mac, self._mac(purpose, body)):
            return None
        parts = body.split(".")
        if len(parts) != n_fields + 2:
            return None
        try:
            if int(parts[n_fields]) < self._clock():
                return None
        except ValueError:
            return None
        return parts[:n_fields]

    def csrf(self, session_value: str) -> str:
        return self._mac("csrf", session_value)

    def csrf_ok(self, session_value: str, token: str | None) -> bool:
        if not token:
            return False
        return hmac.compare_digest(self.csrf(session_value), token)


def parse_cookies(header: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (header or "").split(";"):
        name, eq, value = part.strip().partition("=")
        if eq and name not in out:
            out[name] = value.strip().strip('"')
    return out


def cookie_header(name: str, value: str, *, path: str, secure: bool, max_age: int | None) -> tuple[str, str]:
    parts = [f"{name}={value}", f"Path={path}", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return ("Set-Cookie", "; ".join(parts))
