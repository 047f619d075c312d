"""AWS Signature Version 4, as S3 clients sign requests: in the ``Authorization`` header or in
a presigned URL's query, and the payload forms that go with it.

:func:`verify` checks a request's signature and returns a :class:`Signed` saying who signed it
and how the body is to be checked:

* a hex SHA-256 in ``x-amz-content-sha256`` (what the AWS SDKs send over plain HTTP): the body is
  hashed while it streams and compared at its end (:class:`PayloadHash`);
* ``UNSIGNED-PAYLOAD`` (presigned URLs, SDKs over HTTPS): not checked;
* ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`` and ``STREAMING-UNSIGNED-PAYLOAD-TRAILER``: the
  ``aws-chunked`` framing, decoded by :class:`AwsChunkedReader`, each chunk's signature checked
  against the previous one (the seed is the request's own signature).

The canonical request follows the S3 rules: the URI path exactly as it came on the wire (S3
does not normalize it), the query string re-encoded and sorted, the signed headers trimmed.
Dates must lie within :data:`MAX_SKEW_S` of the server's clock; a presigned URL lives at most
:data:`MAX_PRESIGN_S` (seven days) and not past its ``X-Amz-Expires``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from calendar import timegm
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from gateway.s3.xml import S3Error

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING = frozenset({STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER})
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

#: How far a request's date may be from the server's clock.
MAX_SKEW_S = 15 * 60
#: The longest life of a presigned URL (S3's own limit).
MAX_PRESIGN_S = 7 * 24 * 3600
#: Longest chunk header line of an aws-chunked body.
MAX_CHUNK_LINE = 4096
#: Largest aws-chunked chunk accepted (the SDKs send 64 KiB to 8 MiB).
MAX_CHUNK = 64 << 20

_CRED_RE = re.compile(r"^([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    k = _hmac(("AWS4" + secret).encode("utf-8"), day)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def uri_encode(text: str, *, slash: bool = True) -> str:
    """AWS's URI encoding: everything but ``A-Za-z0-9-_.~`` percent-encoded (``/`` kept when
    ``slash``), upper-case hex."""
    return quote(text, safe="-_.~/" if slash else "-_.~")


def canonical_query(query: str, *, drop: str | None = None) -> str:
    pairs = []
    for item in query.split("&") if query else []:
        if not item:
            continue
        name, _, value = item.partition("=")
        name, value = unquote(name.replace("+", "%20")), unquote(value.replace("+", "%20"))
        if drop is not None and name == drop:
            continue
        pairs.append((uri_encode(name, slash=False), uri_encode(value, slash=False)))
    pairs.sort()
    return "&".join(f"{k}={v}" for k, v in pairs)


def raw_path(environ) -> str:
    """The request path as the client sent it (still percent-encoded)."""
    target = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if target:
        if target.startswith(("http://", "https://")):
            target = urlsplit(target).path or "/"
        return target.split("?", 1)[0]
    path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1").decode("utf-8", "replace")
    return uri_encode(path)


def _header(environ, name: str) -> str | None:
    name = name.lower()
    if name == "content-type":
        return environ.get("CONTENT_TYPE")
    if name == "content-length":
        return environ.get("CONTENT_LENGTH")
    return environ.get("HTTP_" + name.upper().replace("-", "_"))


def _canonical_headers(environ, signed: list[str]) -> str:
    lines = []
    for name in signed:
        value = _header(environ, name)
        if value is None:
            if name == "content-length":
                value = ""  # some clients sign an empty Content-Length the server drops
            else:
                raise S3Error("SignatureDoesNotMatch", f"the signed header {name!r} is not in the request")
        lines.append(f"{name}:{' '.join(value.split())}\n")
    return "".join(lines)


def parse_amz_date(text: str) -> float:
    try:
        return float(timegm(time.strptime(text, "%Y%m%dT%H%M%SZ")))
    except (ValueError, TypeError):
        raise S3Error("AccessDenied", "X-Amz-Date is not in the ISO 8601 basic format (20060102T150405Z)") from None


@dataclass
class Signed:
    """A request whose signature checked out."""

    access_key: str
    #: the payload hash the client signed: a hex SHA-256, UNSIGNED-PAYLOAD or a STREAMING-… form
    payload: str
    amz_date: str = ""
    scope: str = ""
    signature: str = ""
    key: bytes = field(default=b"", repr=False)
    presigned: bool = False

    @property
    def streaming(self) -> bool:
        return self.payload in STREAMING


#: ``lookup(access_key) -> secret`` or None for an unknown key.
SecretLookup = Callable[[str], "str | None"]


def is_signed(environ) -> bool:
    """Whether the request carries an S3 signature (header or presigned query)."""
    auth = environ.get("HTTP_AUTHORIZATION") or ""
    if auth.startswith(("AWS4-HMAC-SHA256 ", "AWS ")):
        return True
    query = environ.get("QUERY_STRING") or ""
    return "X-Amz-Signature=" in query or "X-Amz-Credential=" in query or "AWSAccessKeyId=" in query


def verify(environ, lookup: SecretLookup, *, now: float | None = None) -> Signed:
    """Check the request's SigV4 signature; raises :class:`S3Error` (AccessDenied,
    InvalidAccessKeyId, SignatureDoesNotMatch, RequestTimeTooSkewed, ...)."""
    now = time.time() if now is None else now
    auth = environ.get("HTTP_AUTHORIZATION") or ""
    query = environ.get("QUERY_STRING") or ""
    if auth:
        if auth.startswith("AWS "):
            raise S3Error("AccessDenied", "Signature Version 2 is not supported; use Signature Version 4")
        if not auth.startswith(ALGORITHM + " "):
            raise S3Error("AccessDenied", "unsupported Authorization scheme; use AWS Signature Version 4")
        params = {}
        for part in auth[len(ALGORITHM) + 1 :].split(","):
            name, _, value = part.strip().partition("=")
            params[name] = value.strip()
        try:
            credential, signed_names, signature = params["Credential"], params["SignedHeaders"], params["Signature"]
        except KeyError:
            raise S3Error("AuthorizationHeaderMalformed", "the Authorization header lacks a field") from None
        amz_date = environ.get("HTTP_X_AMZ_DATE") or ""
        if not amz_date:
            raise S3Error("AccessDenied", "the request has no X-Amz-Date header")
        payload = environ.get("HTTP_X_AMZ_CONTENT_SHA256") or ""
        if not payload:
            raise S3Error("InvalidRequest", "missing required header for this request: x-amz-content-sha256")
        presigned = False
        canon_query = canonical_query(query)
    else:
        fields = _query_fields(query)
        if fields.get("X-Amz-Algorithm") != ALGORITHM:
            if "AWSAccessKeyId" in fields:
                raise S3Error("AccessDenied", "Signature Version 2 is not supported; use Signature Version 4")
            raise S3Error("AccessDenied", "the request is not signed")
        try:
            credential = fields["X-Amz-Credential"]
            signed_names = fields["X-Amz-SignedHeaders"]
            signature = fields["X-Amz-Signature"]
            amz_date = fields["X-Amz-Date"]
            expires = int(fields["X-Amz-Expires"])
        except (KeyError, ValueError):
            raise S3Error("AuthorizationQueryParametersError", "the presigned URL lacks a field") from None
        if not 0 < expires <= MAX_PRESIGN_S:
            raise S3Error("AuthorizationQueryParametersError",
                          "X-Amz-Expires must be between 1 and 604800 seconds")  # fmt: skip
        payload = fields.get("X-Amz-Content-Sha256") or UNSIGNED
        presigned = True
        canon_query = canonical_query(query, drop="X-Amz-Signature")
    m = _CRED_RE.match(credential)
    if not m:
        raise S3Error("AuthorizationHeaderMalformed", "the credential is not <key>/<date>/<region>/s3/aws4_request")
    access_key, day, region, service = m.groups()
    if service != "s3":
        raise S3Error("AuthorizationHeaderMalformed", f"the credential names the service {service!r}, not s3")
    signed_at = parse_amz_date(amz_date)
    if amz_date[:8] != day:
        raise S3Error("AuthorizationHeaderMalformed", "the credential's date is not the request's date")
    if presigned:
        if signed_at - now > MAX_SKEW_S:
            raise S3Error("AccessDenied", "Request is not valid yet")
        if now > signed_at + expires:
            raise S3Error("AccessDenied", "Request has expired")
    elif abs(now - signed_at) > MAX_SKEW_S:
        raise S3Error("RequestTimeTooSkewed",
                      "The difference between the request time and the server's time is too large.")  # fmt: skip
    if payload not in STREAMING and payload != UNSIGNED and not _HEX64.match(payload):
        raise S3Error("InvalidArgument",
                      "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING- value or a SHA256")  # fmt: skip
    secret = lookup(access_key)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
    names = [n.strip().lower() for n in signed_names.split(";") if n.strip()]
    if "host" not in names:
        raise S3Error("SignatureDoesNotMatch", "the host header must be signed")
    scope = f"{day}/{region}/s3/aws4_request"
    key = signing_key(secret, day, region, "s3")
    headers = _canonical_headers(environ, names)
    # the path as sent; then AWS's encoding of it, for a client that signed that form but sent
    # some characters differently encoded
    sent = raw_path(environ)
    paths = dict.fromkeys([sent, uri_encode(unquote(sent))])
    for path in paths:
        canonical = "\n".join([environ.get("REQUEST_METHOD", "GET"), path, canon_query, headers, ";".join(names),
                                payload])  # fmt: skip
        to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()])
        expected = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, signature.strip().lower()):
            break
    else:
        raise S3Error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
            access_key=access_key,
        )
    return Signed(access_key, payload, amz_date, scope, expected, key, presigned)


def _query_fields(query: str) -> dict[str, str]:
    fields = {}
    for item in query.split("&") if query else []:
        name, _, value = item.partition("=")
        fields[unquote(name.replace("+", "%20"))] = unquote(value.replace("+", "%20"))
    return fields


def presign_url(url: str, access_key: str, secret: str, *, method: str = "GET", region: str = "us-east-1",
                expires: int = 3600, now: float | None = None) -> str:  # fmt: skip
    """A presigned URL for ``url`` (signing only the host), as an SDK makes one (for tools and tests)."""
    now = time.time() if now is None else now
    parts = urlsplit(url)
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    day = amz_date[:8]
    scope = f"{day}/{region}/s3/aws4_request"
    fields = [
        ("X-Amz-Algorithm", ALGORITHM),
        ("X-Amz-Credential", f"{access_key}/{scope}"),
        ("X-Amz-Date", amz_date),
        ("X-Amz-Expires", str(expires)),
        ("X-Amz-SignedHeaders", "host"),
    ]
    query = "&".join(x for x in [parts.query, "&".join(f"{k}={uri_encode(v, slash=False)}" for k, v in fields)] if x)
    canonical = "\n".join(
        [method, parts.path or "/", canonical_query(query), f"host:{parts.netloc}\n", "host", UNSIGNED]
    )
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    sig = hmac.new(signing_key(secret, day, region, "s3"), to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{query}&X-Amz-Signature={sig}"


class PayloadHash:
    """Checks a body against the SHA-256 the client signed (``x-amz-content-sha256``).
    ``pool``: an executor hashing big blocks beside the caller (hashlib releases the GIL), one
    block in flight at a time, which keeps the order; ``update`` then needs immutable bytes."""

    def __init__(self, expected: str, pool=None):
        self._expected = expected
        self._hash = hashlib.sha256()
        self._pool = pool
        self._pending = None

    def update(self, data) -> None:
        self._wait()
        if self._pool is None or len(data) < (64 << 10) or type(data) is not bytes:
            self._hash.update(data)
        else:
            self._pending = self._pool.submit(self._hash.update, data)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def check(self) -> None:
        self._wait()
        if self._hash.hexdigest() != self._expected:
            raise S3Error("XAmzContentSHA256Mismatch",
                          "The provided 'x-amz-content-sha256' header does not match what was computed.")  # fmt: skip


class AwsChunkedReader:
    """The decoded payload of an ``aws-chunked`` body read from ``raw`` (a file-like object
    whose ``read(n)`` returns up to ``n`` bytes, b"" at the end): ``read(n)`` returns decoded
    bytes, b"" after the last chunk. Chunk signatures are checked (signed forms); a broken
    framing or a wrong signature raises :class:`S3Error`. ``limit``: bytes of the encoded body."""

    def __init__(self, raw, signed: Signed, *, limit: int | None = None, block: int = 1 << 20):
        self._raw = raw
        self._signed = signed
        self._check = signed.payload in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER)
        self._trailer = signed.payload in (STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER)
        self._prev = signed.signature
        self._left = limit  # encoded bytes not yet read from raw
        self._block = block
        self._buf = bytearray()
        self._pos = 0
        self._chunk_left = 0
        self._chunk_sig: str | None = None
        self._chunk_hash: hashlib._Hash | None = None
        self._done = False
        self.trailers: dict[str, str] = {}

    # -- raw input: self._buf[self._pos:] is what is buffered and not yet consumed ----------
    def _avail(self) -> int:
        return len(self._buf) - self._pos

    def _fill(self, want: int) -> bool:
        """At least ``want`` bytes buffered (False: the body ended first)."""
        while self._avail() < want:
            n = self._block if self._left is None else min(self._block, self._left)
            if n <= 0:
                return False
            data = self._raw.read(n)
            if not data:
                return False
            if self._left is not None:
                self._left -= len(data)
            if self._pos:
                del self._buf[: self._pos]
                self._pos = 0
            self._buf += data
        return True

    def _take(self, n: int) -> bytes:
        with memoryview(self._buf) as view:
            piece = view[self._pos : self._pos + n].tobytes()
        self._pos += len(piece)
        return piece

    def _line(self) -> bytes:
        while True:
            at = self._buf.find(b"\r\n", self._pos)
            if at >= 0:
                line = bytes(self._buf[self._pos : at])
                self._pos = at + 2
                return line
            if self._avail() > MAX_CHUNK_LINE or not self._fill(self._avail() + 1):
                raise S3Error("IncompleteBody", "the aws-chunked body ended inside a chunk header")

    # -- chunks ---------------------------------------------------------------------------
    def _next_chunk(self) -> None:
        line = self._line().decode("latin-1")
        size_text, _, ext = line.partition(";")
        try:
            size = int(size_text.strip(), 16)
        except ValueError:
            raise S3Error("IncompleteBody", "malformed aws-chunked chunk header") from None
        if size < 0 or size > MAX_CHUNK:
            raise S3Error("InvalidArgument", "aws-chunked chunk too large")
        sig = None
        if ext.strip().startswith("chunk-signature="):
            sig = ext.strip()[len("chunk-signature=") :]
        if self._check and sig is None:
            raise S3Error("SignatureDoesNotMatch", "an aws-chunked chunk has no signature")
        self._chunk_left = size
        self._chunk_sig = sig
        self._chunk_hash = hashlib.sha256() if self._check else None
        if size == 0:
            self._end_chunk(final=True)

    def _end_chunk(self, *, final: bool = False) -> None:
        if self._check:
            assert self._chunk_hash is not None  # made with the chunk when checking
            to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", self._signed.amz_date, self._signed.scope, self._prev,
                                 EMPTY_SHA256, self._chunk_hash.hexdigest()])  # fmt: skip
            expected = hmac.new(self._signed.key, to_sign.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, (self._chunk_sig or "").lower()):
                raise S3Error("SignatureDoesNotMatch", "an aws-chunked chunk signature does not match")
            self._prev = expected
        if final:
            self._read_trailers()
            self._done = True
            return
        if not self._fill(2) or self._take(2) != b"\r\n":
            raise S3Error("IncompleteBody", "an aws-chunked chunk is not followed by CRLF")

    def _read_trailers(self) -> None:
        while True:
            try:
                line = self._line()
            except S3Error:
                if not self._trailer:
                    return  # some clients end the body right after the last chunk header
                raise
            if not line:
                return
            name, _, value = line.decode("latin-1").partition(":")
            self.trailers[name.strip().lower()] = value.strip()

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = 1 << 62
        out = []
        got = 0
        while got < n and not self._done:
            if self._chunk_left == 0:
                self._next_chunk()
                continue
            if not self._avail() and not self._fill(1):
                raise S3Error("IncompleteBody", "the aws-chunked body ended inside a chunk")
            piece = self._take(min(n - got, self._chunk_left, self._avail()))
            if self._chunk_hash is not None:
                self._chunk_hash.update(piece)
            out.append(piece)
            got += len(piece)
            self._chunk_left -= len(piece)
            if self._chunk_left == 0:
                self._end_chunk()
        return out[0] if len(out) == 1 else b"".join(out)
