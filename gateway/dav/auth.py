"""The one authentication layer: who a request comes from, for WebDAV, /metrics and /healthz.

:class:`Authenticator` reads the ``Authorization`` header (Basic, and Digest unless turned off),
checks it against the configured users, throttles failed logins per client address and per
user (:mod:`gateway.dav.throttle`), checks Digest nonces (:mod:`gateway.dav.digest`), logs each
failed login in one line for fail2ban (logger ``hfdav.auth``, see docs/AUTH.md), and builds the
401 / 429 answers. :class:`AuthGate` puts it in front of the WebDAV application (which runs
without WsgiDAV's own authenticator), behind the request front that rejects malformed requests
with 400 first; :class:`gateway.web.WebFront` uses it for /metrics and /healthz.

A 401 offers every accepted scheme: ``Digest`` (with a fresh nonce) and ``Basic``. A header that
cannot be parsed (bad base64, no colon, an unknown scheme, Digest without ``qop=auth``) is a
failed login like a wrong password: 401, never an error.

Anonymous access (``HFDAV_ANONYMOUS``): ``rw`` admits requests without credentials as writers,
``ro`` admits reading methods without credentials; credentials that are sent are always
checked, never downgraded to anonymous. Write permission itself is enforced by the provider's
request handler from the role set here (``wsgidav.auth.roles``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes, urlsplit

import bcrypt

from gateway import metrics
from gateway.config import Settings, User
from gateway.dav.digest import NonceBook, NonceState, expected_response, ha1, parse_params
from gateway.dav.throttle import LoginThrottle

log = logging.getLogger("hfdav.auth")

ROLE_WRITE = "editor"
ROLE_READ = "reader"
REALM = "hfdav"

#: Methods that change something; refused for read-only users and read-only anonymous access.
WRITE_METHODS = frozenset({"PUT", "DELETE", "MKCOL", "COPY", "MOVE", "PROPPATCH", "LOCK", "UNLOCK", "POST", "PATCH"})
#: Passwords shorter than this are accepted with a warning at start.
MIN_PASSWORD_LENGTH = 12
#: Failed answers delayed at the same time, at most: a delay holds a request thread, so beyond
#: this failures are answered at once (they still count towards the block).
MAX_DELAYED = 4
#: Successful checks remembered (seconds, entries): clients send their password with every
#: request, and one bcrypt check costs milliseconds of CPU. A Basic token checked lately is
#: found again by its keyed hash (HMAC with a per-process key), never kept in the clear.
HASH_CACHE_SECONDS = 300.0
HASH_CACHE_ENTRIES = 1024
#: Longest Authorization header looked at; a longer one is a failed login.
MAX_HEADER = 8192


metrics.describe("hfdav_login_failures_total", "failed logins, by reason")
metrics.describe("hfdav_login_throttled_total", "login attempts refused with 429 (client or user blocked)")


@dataclass(frozen=True)
class Account:
    name: str
    can_write: bool
    password: str | None = field(default=None, repr=False)
    password_hash: bytes | None = field(default=None, repr=False)

    @property
    def roles(self) -> tuple[str, ...]:
        return (ROLE_WRITE,) if self.can_write else (ROLE_READ,)


def accounts(settings: Settings) -> dict[str, Account]:
    """Every user of the settings by name; ``admin`` is the SYS_TOKEN user."""
    users: list[User] = list(settings.users)
    if settings.admin_password:
        users.append(User("admin", settings.admin_password, True))
    return {
        u.name: Account(u.name, u.can_write, u.password, u.password_hash.encode() if u.password_hash else None)
        for u in users
    }


def weak_password_warnings(table: Mapping[str, Account]) -> list[str]:
    """One line per clear-text password shorter than :data:`MIN_PASSWORD_LENGTH`."""
    return [
        f"the password of user {a.name!r} has fewer than {MIN_PASSWORD_LENGTH} characters: "
        "anyone on the internet can try passwords (slowly); use a long random one"
        for a in table.values()
        if a.password is not None and len(a.password) < MIN_PASSWORD_LENGTH
    ]


@dataclass(frozen=True)
class Refusal:
    """An answer instead of the application's: status line, headers, body."""

    status: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class Identity:
    """A request admitted: the user (None for anonymous access) and its roles."""

    user: str | None
    roles: tuple[str, ...]


class Authenticator:
    """See the module docstring. ``client`` arguments are client addresses as
    :func:`gateway.web.client_address` finds them."""

    def __init__(self, table: Mapping[str, Account], *, anonymous: str = "none", digest: NonceBook | None = None,
                 throttle: LoginThrottle | None = None):  # fmt: skip
        self._accounts = dict(table)
        self.anonymous = anonymous
        self._nonces = digest
        self.throttle = throttle if throttle is not None else LoginThrottle()
        self._delay_slots = threading.BoundedSemaphore(MAX_DELAYED)
        self._cache_salt = secrets.token_bytes(16)
        self._hash_cache: OrderedDict[bytes, float] = OrderedDict()
        #: keyed hash of a Basic token -> (its account, when it was checked)
        self._basic_cache: OrderedDict[bytes, tuple[Account, float]] = OrderedDict()
        self._cache_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, nonce_key: bytes | None) -> Authenticator:
        table = accounts(settings)
        for line in weak_password_warnings(table):
            log.warning("%s", line)
        hashed = sorted(a.name for a in table.values() if a.password is None)
        if settings.digest and hashed:
            log.warning("users %s have password hashes: they can log in with Basic only (clients that prefer "
                        "Digest, e.g. davfs2, fail for them unless HFDAV_DIGEST=off)", ", ".join(hashed))  # fmt: skip
        nonces = NonceBook(nonce_key) if settings.digest and nonce_key else None
        return cls(table, anonymous=settings.anonymous, digest=nonces,
                   throttle=LoginThrottle(settings.login_failures))  # fmt: skip

    def account(self, name: str) -> Account | None:
        """The configured user of that name (the web front checks its rights per request)."""
        return self._accounts.get(name)

    # -- the gate -------------------------------------------------------------------------

    def admit(self, environ: dict, client: str) -> Identity | Refusal:
        """The identity a WebDAV request runs as, or the 401/429 to answer instead."""
        if not environ.get("HTTP_AUTHORIZATION"):
            if self.anonymous == "rw":
                return Identity(None, (ROLE_WRITE,))
            if self.anonymous == "ro" and environ.get("REQUEST_METHOD") not in WRITE_METHODS:
                return Identity(None, (ROLE_READ,))
        return self.identify(environ, client)

    def identify(self, environ: Mapping[str, str], client: str) -> Identity | Refusal:
        """The user named by the credentials of the request, or the answer when there are
        none (401), they are wrong (401, after a delay once there were several failures) or
        the client or user is blocked (429)."""
        header = environ.get("HTTP_AUTHORIZATION") or ""
        if not header:
            return self.challenge()
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        offered = ("basic", "digest") if self._nonces is not None else ("basic",)
        if len(header) > MAX_HEADER or scheme not in offered:
            return self._failed(client, None, scheme if scheme in ("basic", "digest") else "other", "malformed-header")
        if scheme == "basic":
            return self._basic(value.strip(), client)
        return self._digest(value, environ, client)

    def challenge(self, *, stale: bool = False) -> Refusal:
        headers = []
        if self._nonces is not None:
            digest = f'Digest realm="{REALM}", nonce="{self._nonces.issue()}", algorithm=MD5, qop="auth"'
            headers.append(("WWW-Authenticate", digest + (", stale=true" if stale else "")))
        headers.append(("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'))
        return Refusal("401 Unauthorized", headers, b"credentials required\n")

    # -- Basic ------------------------------------------------------------------------------

    def _basic(self, token: str, client: str) -> Identity | Refusal:
        # credentials checked lately: found by their keyed hash (the cache holds no password)
        key = hmac.new(self._cache_salt, token.encode("latin-1", "replace"), hashlib.sha256).digest()
        now = time.monotonic()
        with self._cache_lock:
            seen = self._basic_cache.get(key)
        if seen is not None and now - seen[1] < HASH_CACHE_SECONDS:
            account = seen[0]
            refusal = self._blocked(client, account)
            return refusal if refusal is not None else self._succeeded(client, account)
        outcome, checked = self._basic_check(token, client)
        if isinstance(outcome, Identity) and checked is not None:
            with self._cache_lock:
                self._basic_cache[key] = (checked, now)
                self._basic_cache.move_to_end(key)
                while len(self._basic_cache) > HASH_CACHE_ENTRIES:
                    self._basic_cache.popitem(last=False)
        return outcome

    def _basic_check(self, token: str, client: str) -> tuple[Identity | Refusal, Account | None]:
        """The outcome of checking a Basic token, and the account it names (if known)."""
        try:
            raw = base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError):
            return self._failed(client, None, "basic", "malformed-header"), None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")  # what clients without charset support send
        name, colon, password = text.partition(":")
        if not colon:
            return self._failed(client, None, "basic", "malformed-header"), None
        account = self._accounts.get(name)
        refusal = self._blocked(client, account)
        if refusal is not None:
            return refusal, account
        if account is None:
            return self._failed(client, None, "basic", "unknown-user"), None
        if not self._password_ok(account, password):
            return self._failed(client, account, "basic", "wrong-password"), account
        return self._succeeded(client, account), account

    def _password_ok(self, account: Account, password: str) -> bool:
        if account.password is not None:
            return hmac.compare_digest(account.password.encode(), password.encode())
        if account.password_hash is None:
            return False
        key = hashlib.sha256(self._cache_salt + account.name.encode() + b"\0" + password.encode()).digest()
        now = time.monotonic()
        with self._cache_lock:
            seen = self._hash_cache.get(key)
            if seen is not None and now - seen < HASH_CACHE_SECONDS:
                return True
        try:
            ok = bcrypt.checkpw(password.encode(), account.password_hash)
        except ValueError:
            ok = False
        if ok:
            with self._cache_lock:
                self._hash_cache[key] = now
                self._hash_cache.move_to_end(key)
                while len(self._hash_cache) > HASH_CACHE_ENTRIES:
                    self._hash_cache.popitem(last=False)
        return ok

    # -- Digest -----------------------------------------------------------------------------

    def _digest(self, value: str, environ: Mapping[str, str], client: str) -> Identity | Refusal:
        params = parse_params(value)
        needed = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
        if (params is None or any(not params.get(k) for k in needed) or params["qop"] != "auth"
                or params.get("algorithm", "MD5").upper() != "MD5" or params["realm"].lower() != REALM
                or not _uri_matches(params["uri"], environ)):  # fmt: skip
            return self._failed(client, None, "digest", "malformed-header")
        account = self._accounts.get(params["username"])
        refusal = self._blocked(client, account)
        if refusal is not None:
            return refusal
        if account is None:
            return self._failed(client, None, "digest", "unknown-user")
        if account.password is None:
            return self._failed(client, account, "digest", "digest-needs-clear-password")
        method = environ.get("REQUEST_METHOD", "GET")
        expected = expected_response(ha1(account.name, REALM, account.password), method, params)
        if not hmac.compare_digest(expected, params["response"].lower()):
            return self._failed(client, account, "digest", "wrong-password")
        assert self._nonces is not None  # Digest is offered only with a nonce book
        state = self._nonces.use(params["nonce"], params["nc"])
        if state is not NonceState.OK:
            # the password is right, the nonce is not: a replay, or a client that kept an old
            # nonce; stale=true lets a real client retry with a fresh one without a prompt
            level = logging.INFO if state is NonceState.STALE else logging.WARNING
            log.log(level, "digest nonce refused: client=%s user=%s reason=nonce-%s", client, account.name,
                    state.value)  # fmt: skip
            return self.challenge(stale=True)
        return self._succeeded(client, account)

    # -- outcomes ---------------------------------------------------------------------------

    def _blocked(self, client: str, account: Account | None) -> Refusal | None:
        wait = self.throttle.retry_after(client, account.name if account else None)
        if wait <= 0:
            return None
        seconds = max(1, math.ceil(wait))
        log.warning("login throttled: client=%s user=%s retry_after=%ds", client, _shown(account), seconds)
        metrics.inc("hfdav_login_throttled_total")
        return Refusal("429 Too Many Requests", [("Retry-After", str(seconds))],
                       b"too many failed logins; try again later\n")  # fmt: skip

    def _failed(self, client: str, account: Account | None, scheme: str, reason: str) -> Refusal:
        """Count and log a failed login; the 401 to answer (after the throttle's delay), or
        the 429 when the client or user is blocked already."""
        refusal = self._blocked(client, account)
        if refusal is not None:
            return refusal
        log.warning("login failed: client=%s user=%s scheme=%s reason=%s", client, _shown(account), scheme, reason)
        metrics.inc("hfdav_login_failures_total", reason=reason)
        delay = self.throttle.failed(client, account.name if account else None)
        if delay > 0 and self._delay_slots.acquire(blocking=False):
            try:
                time.sleep(delay)
            finally:
                self._delay_slots.release()
        return self.challenge()

    def _succeeded(self, client: str, account: Account) -> Identity:
        self.throttle.succeeded(client, account.name)
        return Identity(account.name, account.roles)


class AuthGate:
    """WSGI middleware: admits a request through :meth:`Authenticator.admit` and sets the
    environ keys WsgiDAV's own authenticator would (``wsgidav.auth.user_name``, ``.roles``,
    ``.realm``, ``.permissions``), or answers the 401/429. The client address is the one
    :class:`gateway.web.WebFront` put in ``environ["hfdav.client"]``."""

    def __init__(self, app, auth: Authenticator):
        self.app = app
        self.auth = auth

    def __call__(self, environ, start_response):
        client = environ.get("hfdav.client") or environ.get("REMOTE_ADDR") or "-"
        verdict = self.auth.admit(environ, client)
        if isinstance(verdict, Refusal):
            headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(verdict.body))),
                       ("Cache-Control", "no-store"), *verdict.headers]  # fmt: skip
            start_response(verdict.status, headers)
            return [] if environ.get("REQUEST_METHOD") == "HEAD" else [verdict.body]
        environ["wsgidav.auth.realm"] = REALM
        environ["wsgidav.auth.user_name"] = verdict.user or ""
        environ["wsgidav.auth.roles"] = verdict.roles
        environ["wsgidav.auth.permissions"] = None
        return self.app(environ, start_response)


def _shown(account: Account | None) -> str:
    """How a user appears in the log: a configured name, never what a client typed (that may
    be a password typed into the wrong field)."""
    return account.name if account is not None else "(unknown)"


def _uri_matches(uri: str, environ: Mapping[str, str]) -> bool:
    """Whether Digest's ``uri`` names the resource of the request line (RFC 7616 §3.4.6):
    same path after percent-decoding (some clients do not encode it), same query. Compared
    with the raw request target the server got (absolute form allowed)."""
    target = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if not target:
        path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1", "replace")
        query = environ.get("QUERY_STRING", "")
    else:
        parts = urlsplit(target)
        path, query = unquote_to_bytes(parts.path), parts.query
    if uri == "*" or target == "*":
        return uri in ("*", "/") and target == "*"
    given = urlsplit(uri)
    return unquote_to_bytes(given.path) == path and given.query == query
