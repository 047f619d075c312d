"""The HTTP front of the gateway process: one WSGI middleware around the WebDAV application.

It does, for every request:

* ``GET /healthz``: 200 when every check (database, store, committer) is ok, 503 otherwise.
  Without credentials (platforms probe it) the body says only ``{"status": "ok"}`` or
  ``{"status": "degraded"}``; with the credentials of any user it is the JSON report of each
  check (version, store kind, commits, byte counts, the Hub's errors). Wrong credentials
  count as a failed login but still get the short answer.
* ``GET /metrics``: every counter and gauge of :mod:`gateway.metrics` in the Prometheus text
  format. Needs the credentials of any configured user unless anonymous access is on.
* every other request goes to ``app``, where :class:`gateway.dav.auth.AuthGate` admits it
  or answers 401/429 (counted and logged here like any other answer); the client address
  (:func:`client_address`) is put in ``environ["hfdav.client"]`` for it and for the logs.
* ``OPTIONS /`` and ``PROPFIND /`` when the share lives under a prefix (``/dav``): the Windows
  Mini-Redirector sends OPTIONS and PROPFIND to the root of the host before it maps a sub-path, so
  the root answers as a read-only collection whose only member is the share.
* requests under the S3 prefix (``/s3``) go to the S3 API (:mod:`gateway.s3`), counted and
  logged like the WebDAV ones;
* everything else goes to the WebDAV application; the request is counted
  (``hfdav_requests_total{method,status}``, ``hfdav_bytes_in_total``, ``hfdav_bytes_out_total``)
  and logged in one line (logger ``hfdav.access``) once the response body is done, with the
  client's address (:func:`client_address`).

``/healthz`` and ``/metrics`` are answered for GET and HEAD only, so with the share at ``/`` a
file of that name can still be written and listed, but not downloaded.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from html import escape

from gateway import __version__, metrics
from gateway.dav.auth import Authenticator, Identity, Refusal
from gateway.server_io import direct_body_reader, request_socket

log = logging.getLogger(__name__)
access_log = logging.getLogger("hfdav.access")

HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"

#: A PROPFIND body sent to the root is read and thrown away; a bigger one is not a real client.
MAX_ROOT_BODY = 64 * 1024
#: Before an error answer (401, 423, 507, ...) the rest of a request body up to this size is read
#: and dropped. A proxy that streams request bodies (nginx with proxy_request_buffering off)
#: closes the client's connection when the answer comes before the body is through, and the
#: client's next request on it fails; Windows' WebClient also gives up on a 401 to a PUT whose
#: body was not read. Bigger bodies are not read only to be thrown away.
MAX_ERROR_DRAIN = 1 << 20
#: ... and for this long at most: beyond, the connection is closed after the answer.
MAX_ERROR_DRAIN_S = 2.0

#: One check: returns a JSON-able dict that has at least ``"ok": bool``; may raise.
HealthCheck = Callable[[], Mapping[str, object]]

metrics.describe("hfdav_requests_total", "HTTP requests answered, by method and status")
metrics.describe("hfdav_bytes_in_total", "request body bytes read")
metrics.describe("hfdav_bytes_out_total", "response body bytes sent")

_ROOT_METHODS = "OPTIONS, PROPFIND, GET, HEAD"


class _CountingInput:
    """Wraps ``wsgi.input`` and counts the bytes the application reads."""

    def __init__(self, raw):
        self._raw = raw
        self.count = 0
        self._direct = direct_body_reader(raw)

    def drain(self, limit: int, seconds: float, sock: socket.socket | None = None) -> None:
        """Read and drop what is left of the body, at most ``limit`` bytes and ``seconds`` in
        all. A client that went away ends the draining (the servers raise OSError or
        ValueError for a broken body). A client that trickles its body is cut off when the
        time is up: the read side of its socket (``sock``, the server's) is shut, so the read
        under way returns at once and the server closes the connection after the answer
        instead of reading on (a per-read timeout would let a byte a second hold this
        thread for as long as the body announced)."""
        cutoff = threading.Timer(seconds, _shut_reading, (sock,)) if sock is not None else None
        if cutoff is not None:
            cutoff.daemon = True
            cutoff.start()
        left = limit
        try:
            while left > 0:
                piece = self.read(min(left, 64 * 1024))
                if not piece:
                    return
                left -= len(piece)
        except (OSError, ValueError):
            return
        finally:
            if cutoff is not None:
                cutoff.cancel()

    def _add(self, data: bytes) -> bytes:
        self.count += len(data)
        return data

    def read(self, *args) -> bytes:
        if self._direct is not None and args and args[0] is not None and args[0] >= 0:
            return self._add(self._direct(args[0]))
        return self._add(self._raw.read(*args))

    def readline(self, *args) -> bytes:
        return self._add(self._raw.readline(*args))

    def readlines(self, *args) -> list[bytes]:
        lines = self._raw.readlines(*args)
        for line in lines:
            self._add(line)
        return lines

    def __iter__(self):
        for line in self._raw:
            yield self._add(line)


def _shut_reading(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)


def _should_drain(environ: Mapping[str, str], counting: _CountingInput) -> bool:
    """Whether the unread rest of the request body is worth reading before an error answer:
    a body of known length up to :data:`MAX_ERROR_DRAIN`, or a chunked one (read up to that
    much). Not when the client waits for ``100 Continue``: it sends nothing after an early answer."""
    if "100-continue" in (environ.get("HTTP_EXPECT") or "").lower():
        return False
    length = environ.get("CONTENT_LENGTH")
    if not length:
        return "chunked" in (environ.get("HTTP_TRANSFER_ENCODING") or "").lower()
    try:
        return 0 < int(length) - counting.count <= MAX_ERROR_DRAIN
    except ValueError:
        return False


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    return getattr(ip, "ipv4_mapped", None) or ip


def client_address(environ: Mapping[str, str], trusted: Networks) -> str:
    """The address of the client that sent the request.

    The TCP peer, unless the peer is a trusted proxy (``HFDAV_TRUSTED_PROXIES``, loopback by
    default: the container's nginx): then the right-most address of ``X-Forwarded-For`` that is
    not itself a trusted proxy, or ``X-Real-IP`` when there is no such header. A header that a
    client sent past the proxies is never believed: each proxy appends the address it saw."""
    peer = environ.get("REMOTE_ADDR") or ""
    ip = _ip(peer)
    if ip is None:
        return peer[:64] or "-"
    if not any(ip in net for net in trusted):
        return str(ip)
    forwarded = [a for a in (environ.get("HTTP_X_FORWARDED_FOR") or "").split(",") if a.strip()]
    for text in reversed(forwarded):
        hop = _ip(text)
        if hop is None:
            break
        ip = hop
        if not any(hop in net for net in trusted):
            return str(hop)
    if not forwarded:
        ip = _ip(environ.get("HTTP_X_REAL_IP") or "") or ip
    return str(ip)


class WebFront:
    """The middleware described in the module docstring. ``trusted_proxies``: the networks
    of :func:`client_address`."""

    def __init__(
        self,
        app,
        *,
        prefix: str,
        auth: Authenticator,
        trusted_proxies: Iterable[str] = ("127.0.0.0/8", "::1/128"),
        checks: Mapping[str, HealthCheck] | None = None,
        s3=None,
    ):
        self.app = app
        self.s3 = s3  # the S3 API (gateway.s3.app.S3App) or None
        self.prefix = prefix
        self.auth = auth
        self._trusted: Networks = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_proxies)
        self._checks: dict[str, HealthCheck] = dict(checks or {})

    # -- dispatch ---------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        environ["hfdav.client"] = client_address(environ, self._trusted)
        if method in ("GET", "HEAD"):
            if path == HEALTH_PATH:
                return self._health(environ, start_response)
            if path == METRICS_PATH:
                return self._metrics(environ, start_response)
        if path == "/" and self.prefix != "/" and method in ("OPTIONS", "PROPFIND"):
            return self._root(environ, start_response, method)
        if self.s3 is not None and self.s3.claims(environ):
            return self._served(environ, start_response, self.s3)
        return self._served(environ, start_response)

    # -- counted and logged WebDAV requests -------------------------------------------------

    def _served(self, environ, start_response, app=None) -> Iterable[bytes]:
        started = time.monotonic()
        method = environ.get("REQUEST_METHOD", "-")
        counting = _CountingInput(environ["wsgi.input"])
        environ["wsgi.input"] = counting
        status_holder: dict[str, str] = {}

        def _start(status, headers, exc_info=None):
            code = status.split(" ", 1)[0]
            status_holder["status"] = code
            if code >= "400" and _should_drain(environ, counting):
                counting.drain(MAX_ERROR_DRAIN, MAX_ERROR_DRAIN_S, request_socket(environ))
            return start_response(status, headers, exc_info)

        sent = 0
        body = (app or self.app)(environ, _start)
        try:
            for piece in body:
                sent += len(piece)
                yield piece
        finally:
            if hasattr(body, "close"):
                body.close()
            status = status_holder.get("status", "-")
            metrics.inc("hfdav_requests_total", method=method, status=status)
            metrics.inc("hfdav_bytes_in_total", counting.count)
            metrics.inc("hfdav_bytes_out_total", sent)
            access_log.info(
                "%s %s %s in=%d out=%d %.3fs user=%s client=%s",
                method,
                environ.get("PATH_INFO"),
                status,
                counting.count,
                sent,
                time.monotonic() - started,
                environ.get("wsgidav.auth.user_name") or "-",
                environ["hfdav.client"],
            )

    def _refuse(self, environ, start_response, refusal: Refusal) -> list[bytes]:
        return self._reply(environ, start_response, refusal.status, refusal.body, "text/plain; charset=utf-8",
                           refusal.headers)  # fmt: skip

    # -- /healthz ---------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict]:
        """Run every check; a check that raises counts as failed (its error class is shown)."""
        report: dict[str, object] = {}
        healthy = True
        for name, check in self._checks.items():
            started = time.monotonic()
            try:
                result = dict(check())
            except Exception as exc:  # a failing check is a health answer, not a server error
                log.warning("health check %s failed: %s", name, exc)
                result = {"ok": False, "error": type(exc).__name__}
            result["ms"] = round((time.monotonic() - started) * 1000, 1)
            healthy = healthy and bool(result.get("ok"))
            report[name] = result
        return healthy, {"status": "ok" if healthy else "degraded", "version": __version__, "checks": report}

    def _health(self, environ, start_response):
        healthy, report = self.health()
        if not (environ.get("HTTP_AUTHORIZATION") and self._identified(environ)):
            report = {"status": report["status"]}
        body = json.dumps(report, sort_keys=True).encode() + b"\n"
        return self._reply(environ, start_response, "200 OK" if healthy else "503 Service Unavailable",
                           body, "application/json")

    # -- /metrics ---------------------------------------------------------------------------

    def _identified(self, environ) -> bool:
        """Whether the request carries the credentials of a user (a failed try counts)."""
        verdict = self.auth.identify(environ, environ["hfdav.client"])
        return isinstance(verdict, Identity) and verdict.user is not None

    def _metrics(self, environ, start_response):
        if self.auth.anonymous == "none":
            verdict = self.auth.identify(environ, environ["hfdav.client"])
            if isinstance(verdict, Refusal):
                return self._refuse(environ, start_response, verdict)
        body = metrics.render().encode()
        return self._reply(environ, start_response, "200 OK", body, "text/plain; version=0.0.4; charset=utf-8")

    # -- the root of the host when the share has a prefix ------------------------------------

    def _root(self, environ, start_response, method: str):
        self._discard_body(environ)
        dav_headers = [("DAV", "1, 2"), ("MS-Author-Via", "DAV"), ("Allow", _ROOT_METHODS)]
        if method == "OPTIONS":
            return self._reply(environ, start_response, "200 OK", b"", "text/plain", dav_headers)
        depth = (environ.get("HTTP_DEPTH") or "infinity").strip().lower()
        members = [self.prefix.rstrip("/") + "/"] if depth != "0" else []
        body = _multistatus(["/", *members])
        return self._reply(environ, start_response, "207 Multi-Status", body,
                           'application/xml; charset="utf-8"', dav_headers)

    @staticmethod
    def _discard_body(environ) -> None:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if 0 < length <= MAX_ROOT_BODY:
            environ["wsgi.input"].read(length)

    @staticmethod
    def _reply(environ, start_response, status: str, body: bytes, content_type: str,
               extra: list[tuple[str, str]] | None = None):
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body))),
                   ("Cache-Control", "no-store"), *(extra or [])]
        start_response(status, headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


def _multistatus(hrefs: list[str]) -> bytes:
    """A PROPFIND answer listing read-only collections (no dates: the root has no history)."""
    parts = ['<?xml version="1.0" encoding="utf-8"?>\n<D:multistatus xmlns:D="DAV:">']
    for href in hrefs:
        name = href.strip("/").rsplit("/", 1)[-1]
        parts.append(
            f"<D:response><D:href>{escape(href)}</D:href><D:propstat><D:prop>"
            f"<D:resourcetype><D:collection/></D:resourcetype>"
            f"<D:displayname>{escape(name)}</D:displayname>"
            f"</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
        )
    parts.append("</D:multistatus>\n")
    return "".join(parts).encode()


def database_check(repo) -> HealthCheck:
    """The metadata database reads and writes (:meth:`MetadataRepository.health`)."""
    return repo.health


def store_check(store) -> HealthCheck:
    """The store's own ``status()`` when it has one (remote stores report their uploads and
    commits there), else just its kind: a local store that opened is usable."""

    def check() -> dict:
        status = store.status()
        if status is None:
            return {"ok": True, "kind": type(store).__name__}
        return {"kind": type(store).__name__, **status}

    return check


def committer_check(files) -> HealthCheck:
    """Uploads and commits to the remote store (``files.write_back``, set when there is one):
    its status, failing while its last attempt failed."""

    def check() -> dict:
        status = getattr(getattr(files, "write_back", None), "status", None)
        if status is None:
            return {"ok": True, "remote": False}
        result = dict(status())
        return {**result, "ok": not result.get("last_error")}

    return check
