"""The request front: the one WSGI layer in front of WsgiDAV that decodes and checks what a
request carries in its URL and headers, before authentication and before WsgiDAV parses anything.

Why a layer of its own: WsgiDAV decodes in the wrong order or not at all in a few places, and
each such place loses data or drops the connection:

* a request path that is not UTF-8 once percent-decoded (``/caf%e9.txt``) makes WsgiDAV raise
  while it re-encodes ``PATH_INFO``: the connection dropped without an answer. Here: 400.
* names are stored in Unicode NFC (:mod:`gateway.paths`), so ``café`` spelled NFD (macOS) and
  NFC is one resource; but WsgiDAV compares paths as given (lock checks, ``If`` tags, "onto
  itself"): a file locked under one spelling could be overwritten or deleted under the other
  without the token, and a MOVE from one spelling to the other deleted the file as an existing
  destination, then failed. ``PATH_INFO``, the ``Destination`` path and the ``If`` tags are
  brought to NFC here, so every layer behind sees one spelling.
* ``Destination`` was percent-decoded *before* being split into path and query, so
  ``report%3F.txt`` became the path ``/report`` (COPY/MOVE overwrote an unrelated file), and a
  ``;`` cut the name as well. Here it is split first (RFC 3986), then only the path is decoded,
  strictly as UTF-8; the result goes to :data:`DESTINATION_KEY`, which the COPY/MOVE handler of
  :mod:`gateway.dav.server` reads instead of the raw header. A destination with a query or a
  fragment, a relative one, or a malformed one is a 400; one on another scheme, host or port
  is a 502 (RFC 4918 §9.8.5). A ``user:password@`` in it is ignored, as Apache mod_dav does
  (git http-push sends it).
* an HTTP/1.1 request needs exactly one well-formed ``Host`` (RFC 9112 §3.2): the one a
  Destination is checked against.
* a path must start with ``/``; ``OPTIONS *`` is answered as an OPTIONS of the share's root
  (gunicorn passes the bare ``*`` on, on which WsgiDAV fails an assertion: a 500).
* ``Depth`` and ``Overwrite`` must be one of their few values (RFC 4918 §10.2, §10.6), ``Timeout``
  of a LOCK a list of ``Second-N``/``Infinite`` (§10.7), ``Lock-Token`` of an UNLOCK a coded URL
  (§10.5): a 400 otherwise.
* ``If`` (§10.4) must follow its grammar (WsgiDAV skipped what it could not read, so a garbled
  header imposed no condition), and its resource tags are decoded like a Destination and
  re-spelled as WsgiDAV's lookup key: a tag written as an absolute URL, as clients do, used to
  match nothing, and the conditions tagged with it were silently not applied.
* a request body that cannot be read to its end (the client went away in a chunked PUT, or the
  framing is broken) became a 500 with a traceback. Reads of ``wsgi.input`` go through
  :class:`_GuardedBody`, which turns that into a 400 (:class:`BrokenBody`) and one warning line.

On the way out, the status pages WsgiDAV renders (an HTML page naming the library and its
version, also for a 201) are replaced by an empty body for success and redirect statuses and
by the plain status line for errors. XML error bodies (RFC 4918 §16 preconditions), the HTML
folder listing and files (200 or 206, an HTML file included) pass unchanged.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable
from urllib.parse import quote, unquote_to_bytes, urlsplit

from wsgidav import util
from wsgidav.dav_error import HTTP_BAD_REQUEST, DAVError

log = logging.getLogger(__name__)

#: environ key: the decoded absolute path of a COPY/MOVE ``Destination`` (e.g. ``/a/b?.txt``).
DESTINATION_KEY = "hfdav.destination"

_DEPTHS = frozenset({"0", "1", "infinity"})
#: RFC 4918 §10.7: ``Second-N`` or ``Infinite``, in a comma-separated list.
_TIMEOUT_TYPE = re.compile(r"(?i)second-\d{1,20}|infinite")
#: A Coded-URL (RFC 4918 §10.1): ``<`` absolute-URI ``>``.
_CODED_URL = re.compile(r"<[^<>\s]+>")
#: A lock token sent without the brackets of a coded URL: an absolute URI, nothing else.
_BARE_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^<>\s]+")
#: The tokens of an If header (RFC 4918 §10.4): Coded-URL or Resource-Tag, list brackets, an
#: entity tag in square brackets, ``Not``; anything else makes the header malformed.
_IF_TOKEN = re.compile(
    r'\s*(?:(?P<url><[^<>\s]+>)|(?P<open>\()|(?P<close>\))|(?P<etag>\[(?:W/)?"[^"]*"\])|(?P<not>(?i:not)))'
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: A Host header (RFC 9112 §3.2): a host name, IPv4 or bracketed IPv6 address, and a port; no
#: list (a second Host line is joined to the first with a comma by cheroot).
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+;=-]*)(?::[0-9]*)?")


class BadHeader(Exception):
    """A request the front answers itself: ``status`` (400 or 502) with ``reason``."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class BrokenBody(DAVError):
    """The request body could not be read to its end (a 400: a client error, not ours)."""

    def __init__(self, reason: str):
        super().__init__(HTTP_BAD_REQUEST, context_info=reason)


class QuietBrokenBodies(logging.Filter):
    """For WsgiDAV's request server logger: drops the traceback WsgiDAV logs when a PUT body
    breaks off (:class:`_GuardedBody` has logged one line for it already)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], BrokenBody))


def wsgi_to_utf8(value: str, what: str) -> str:
    """A WSGI string (bytes as latin-1, PEP 3333) decoded as UTF-8; BadHeader if it is not."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise BadHeader(400, f"{what} is not UTF-8") from None


def _host_port(netloc: str, scheme: str, what: str) -> tuple[str, int]:
    """Host (lower case, without brackets and user info) and port of ``netloc``."""
    try:
        parts = urlsplit(f"//{netloc}")
        host, port = parts.hostname or "", parts.port
    except ValueError:
        raise BadHeader(400, f"malformed host in {what}") from None
    return host, port if port is not None else _DEFAULT_PORTS.get(scheme, 0)


def parse_destination(value: str, environ: dict) -> str:
    """The decoded absolute path a ``Destination`` header names, checked against the request's
    own scheme, host and port (or the proxy's ``X-Forwarded-Proto``/``-Host``)."""
    raw = value.strip()
    if not raw or any(ord(c) < 0x21 and c != " " or ord(c) == 0x7F for c in raw):
        raise BadHeader(400, "malformed Destination")
    try:
        parts = urlsplit(raw)
    except ValueError:
        raise BadHeader(400, "malformed Destination") from None
    if parts.query or parts.fragment or "?" in raw or "#" in raw:
        raise BadHeader(400, "Destination with a query or a fragment")
    if parts.scheme or parts.netloc:
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.netloc:
            raise BadHeader(400, "Destination is not an http(s) URL")
        own_scheme = (environ.get("wsgi.url_scheme") or "http").lower()
        forwarded_scheme = (environ.get("HTTP_X_FORWARDED_PROTO") or "").split(",")[0].strip().lower()
        if scheme not in (own_scheme, forwarded_scheme):
            raise BadHeader(502, "Destination on another scheme")
        # a Host without a port means the default port of the scheme the client used, which is
        # the destination's (already checked to be ours or the proxy's)
        dest = _host_port(parts.netloc, scheme, "Destination")
        own = [_host_port(environ.get("HTTP_HOST") or "", scheme, "Host")]
        if environ.get("HTTP_X_FORWARDED_HOST"):
            forwarded = environ["HTTP_X_FORWARDED_HOST"].split(",")[0].strip()
            own.append(_host_port(forwarded, scheme, "X-Forwarded-Host"))
        if dest not in own:
            raise BadHeader(502, "Destination on another server")
    path = parts.path or "/"
    if not path.startswith("/"):
        raise BadHeader(400, "Destination must be an absolute URL or path")
    try:
        return unicodedata.normalize("NFC", unquote_to_bytes(path.encode("latin-1")).decode("utf-8"))
    except UnicodeError:
        raise BadHeader(400, "Destination is not UTF-8") from None


def if_header_valid(value: str) -> bool:
    """Whether ``value`` follows the If grammar: ``1*No-tag-list`` or ``1*Tagged-list``, a list
    being ``(`` one or more ``[Not] (Coded-URL | [entity-tag])`` ``)``."""
    pos, tagged, lists_since_tag, in_list, conditions = 0, None, 0, False, 0
    value = value.rstrip()
    while pos < len(value):
        m = _IF_TOKEN.match(value, pos)
        if m is None:
            return False
        pos, kind = m.end(), m.lastgroup
        if in_list:
            if kind == "close":
                if conditions == 0:
                    return False
                in_list, lists_since_tag = False, lists_since_tag + 1
            elif kind == "not":
                nxt = _IF_TOKEN.match(value, pos)
                if nxt is None or nxt.lastgroup not in ("url", "etag"):
                    return False
            elif kind in ("url", "etag"):
                conditions += 1
            else:
                return False
        elif kind == "open":
            if tagged is None:
                tagged = False
            in_list, conditions = True, 0
        elif kind == "url":  # a Resource-Tag: only before the first list, or after a list
            if tagged is False or (tagged and lists_since_tag == 0):
                return False
            tagged, lists_since_tag = True, 0
        else:
            return False
    return not in_list and lists_since_tag > 0


def _resource_key(tag: str, environ: dict) -> str:
    """A Resource-Tag of an If header as the key WsgiDAV looks conditions up by (the quoted
    absolute path of ``get_ref_url``). A tag naming another server stays as it is: it matches
    none of our resources."""
    try:
        return quote(parse_destination(tag, environ))
    except BadHeader as exc:
        if exc.status == 502:
            return tag
        raise BadHeader(400, f"malformed resource in If header: {exc.reason}") from None


def parse_if_header(environ: dict) -> None:
    """Check the If header and parse it for WsgiDAV (which caches the result in environ).

    WsgiDAV matches a tagged list only when its tag is spelled exactly like the resource's
    quoted ref URL, so an absolute URL (what clients send), other percent-encoding, or a
    collection without its trailing slash made the conditions silently not apply. The tags are
    rewritten to that key first, and every key also answers for its trailing-slash twin."""
    value = environ["HTTP_IF"]
    if not if_header_valid(value):
        raise BadHeader(400, "malformed If header")
    out, pos, depth = [], 0, 0
    for m in _IF_TOKEN.finditer(value):
        kind = m.lastgroup
        depth += {"open": 1, "close": -1}.get(kind or "", 0)
        if kind == "url" and depth == 0:
            out.append(value[pos : m.start(kind)] + "<" + _resource_key(m.group(kind)[1:-1], environ) + ">")
            pos = m.end()
    environ["HTTP_IF"] = "".join(out) + value[pos:]
    util.parse_if_header_dict(environ)
    conditions = environ["wsgidav.conditions.if"]
    for key in list(conditions):
        if key.startswith("/") and key != "/":
            twin = key[:-1] if key.endswith("/") else key + "/"
            conditions.setdefault(twin, conditions[key])


def check_request(environ: dict) -> None:
    """Validate the path and the URL- or list-valued headers; raises :class:`BadHeader`."""
    path = environ.get("PATH_INFO") or ""
    if path == "*" and environ.get("REQUEST_METHOD") == "OPTIONS":
        # OPTIONS * (RFC 9110 §9.3.7) asks about the server: answered as for the share's root
        # (cheroot turns the target into a path itself, gunicorn passes the bare "*" on)
        environ["PATH_INFO"] = path = ""
    elif path and not path.startswith("/"):
        raise BadHeader(400, "request target must be an absolute path")
    path = wsgi_to_utf8(path, "request path")
    nfc = unicodedata.normalize("NFC", path)
    if nfc != path:
        environ["PATH_INFO"] = nfc.encode("utf-8").decode("latin-1")
    if "HTTP_HOST" not in environ:
        if environ.get("SERVER_PROTOCOL") == "HTTP/1.1":
            raise BadHeader(400, "an HTTP/1.1 request needs a Host")
    elif not _HOST.fullmatch(environ["HTTP_HOST"]):
        raise BadHeader(400, "malformed Host (or more than one)")
    if "HTTP_DEPTH" in environ:
        depth = environ["HTTP_DEPTH"] = environ["HTTP_DEPTH"].strip().lower()
        if depth not in _DEPTHS:
            raise BadHeader(400, "Depth must be 0, 1 or infinity")
    if "HTTP_OVERWRITE" in environ:
        overwrite = environ["HTTP_OVERWRITE"] = environ["HTTP_OVERWRITE"].strip().upper()
        if overwrite not in ("T", "F"):
            raise BadHeader(400, "Overwrite must be T or F")
    if "HTTP_IF" in environ:
        parse_if_header(environ)
    method = environ.get("REQUEST_METHOD")
    if method in ("COPY", "MOVE") and "HTTP_DESTINATION" in environ:
        environ[DESTINATION_KEY] = parse_destination(environ["HTTP_DESTINATION"], environ)
    if method == "LOCK" and "HTTP_TIMEOUT" in environ:
        items = [t.strip() for t in environ["HTTP_TIMEOUT"].split(",") if t.strip()]
        if not items or not all(_TIMEOUT_TYPE.fullmatch(t) for t in items):
            raise BadHeader(400, "Timeout must be Second-N or Infinite")
    token = environ.get("HTTP_LOCK_TOKEN")
    if method == "UNLOCK" and token is not None:
        token = token.strip()
        if _BARE_TOKEN.fullmatch(token):
            # Node's webdav package (and others) send the token without its angle brackets;
            # it is still unambiguous, so it is read as the coded URL it stands for
            environ["HTTP_LOCK_TOKEN"] = token = f"<{token}>"
        if not _CODED_URL.fullmatch(token):
            raise BadHeader(400, "Lock-Token must be a <coded URL>")


class _GuardedBody:
    """``wsgi.input`` whose read errors become :class:`BrokenBody`. cheroot raises ValueError
    for a chunked body cut short or mis-framed, gunicorn an OSError subclass (``NoMoreData``,
    ``InvalidChunkSize``); a reset connection is an OSError on both."""

    def __init__(self, raw, environ: dict):
        self._raw = raw
        self._environ = environ
        self.count = 0

    def _broken(self, exc: Exception) -> BrokenBody:
        env = self._environ
        log.warning(
            "%s %s: request body broken after %d bytes (client gone or bad framing): %s",
            env.get("REQUEST_METHOD"),
            env.get("PATH_INFO"),
            self.count,
            str(exc) or type(exc).__name__,
        )
        return BrokenBody("request body incomplete or malformed")

    def read(self, *args) -> bytes:
        try:
            data = self._raw.read(*args)
        except (OSError, ValueError) as exc:
            raise self._broken(exc) from exc
        self.count += len(data)
        return data

    def readline(self, *args) -> bytes:
        try:
            data = self._raw.readline(*args)
        except (OSError, ValueError) as exc:
            raise self._broken(exc) from exc
        self.count += len(data)
        return data

    def readlines(self, *args) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self):
        return iter(self.readline, b"")


def _header(headers: list[tuple[str, str]], name: str) -> str:
    return next((v for k, v in headers if k.lower() == name), "")


def _neutral_body(status: str) -> bytes:
    code = int(status[:3])
    return b"" if code < 400 else status.encode("latin-1") + b"\n"


class RequestFront:
    """The middleware described in the module docstring, around the WsgiDAV application."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response) -> Iterable[bytes]:
        try:
            check_request(environ)
        except BadHeader as exc:
            log.info("%s: %s", environ.get("REQUEST_METHOD"), exc.reason)
            status = "400 Bad Request" if exc.status == 400 else "502 Bad Gateway"
            body = f"{status}: {exc.reason}\n".encode()
            start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
            return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]
        if "wsgi.input" in environ:
            environ["wsgi.input"] = _GuardedBody(environ["wsgi.input"], environ)
        return self._answer(environ, start_response)

    def _answer(self, environ, start_response) -> Iterable[bytes]:
        replaced: list[bytes] = []

        def _start(status, headers, exc_info=None):
            ctype = _header(headers, "content-type")
            # a file's own bytes come only with 200 or 206, whatever its type
            if status[:3] not in ("200", "206") and ctype.startswith("text/html"):
                body = _neutral_body(status)
                headers = [(k, v) for k, v in headers if k.lower() not in ("content-type", "content-length")]
                if body:
                    headers.append(("Content-Type", "text/plain; charset=utf-8"))
                headers.append(("Content-Length", str(len(body))))
                replaced.append(body)
            return start_response(status, headers, exc_info)

        body = self.app(environ, _start)
        try:
            for piece in body:
                if not replaced:
                    yield piece
            if replaced and environ.get("REQUEST_METHOD") != "HEAD":
                yield replaced[0]
        finally:
            if hasattr(body, "close"):
                body.close()
