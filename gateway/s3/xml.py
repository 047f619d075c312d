"""The S3 wire format: error documents, response documents, and the few request bodies S3
clients send (CompleteMultipartUpload, Delete, CORSConfiguration, CreateBucketConfiguration).

:class:`S3Error` carries an S3 error code; its HTTP status comes from :data:`STATUS`. Response
documents are built as strings with every text escaped (:func:`element`); request bodies are
parsed with the standard library's expat parser (which refuses entity expansion bombs), and
their size is bounded by the caller.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from email.utils import formatdate
from xml.sax.saxutils import escape

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'

#: The HTTP status of each error code this server answers.
STATUS = {
    "AccessDenied": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "BadDigest": 400,
    "BucketAlreadyExists": 409,
    "BucketAlreadyOwnedByYou": 409,
    "BucketNotEmpty": 409,
    "EntityTooLarge": 400,
    "EntityTooSmall": 400,
    "IncompleteBody": 400,
    "InternalError": 500,
    "InvalidAccessKeyId": 403,
    "InvalidArgument": 400,
    "InvalidBucketName": 400,
    "InvalidDigest": 400,
    "InvalidObjectName": 400,
    "InvalidPart": 400,
    "InvalidPartOrder": 400,
    "InvalidRange": 416,
    "InvalidRequest": 400,
    "KeyTooLongError": 400,
    "MalformedXML": 400,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "NoSuchBucket": 404,
    "NoSuchCORSConfiguration": 404,
    "NoSuchKey": 404,
    "NoSuchUpload": 404,
    "NoSuchBucketPolicy": 404,
    "NoSuchLifecycleConfiguration": 404,
    "NoSuchTagSet": 404,
    "NotImplemented": 501,
    "PreconditionFailed": 412,
    "QuotaExceeded": 403,
    "RequestTimeTooSkewed": 403,
    "ServiceUnavailable": 503,
    "SignatureDoesNotMatch": 403,
    "SlowDown": 503,
    "XAmzContentSHA256Mismatch": 400,
    "XInsufficientStorage": 507,
}

_REASONS = {
    200: "OK", 204: "No Content", 206: "Partial Content", 304: "Not Modified", 400: "Bad Request",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 411: "Length Required",
    412: "Precondition Failed", 416: "Requested Range Not Satisfiable", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable", 507: "Insufficient Storage",
}  # fmt: skip


def status_line(code: int) -> str:
    return f"{code} {_REASONS.get(code, 'Unknown')}"


class S3Error(Exception):
    """An S3 error answer. ``resource``: the path it concerns; ``headers``: extra response headers."""

    def __init__(self, code: str, message: str = "", *, resource: str = "", headers=None, **extra):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message or code
        self.resource = resource
        self.headers = list(headers or [])
        self.extra = extra

    @property
    def status(self) -> int:
        return STATUS.get(self.code, 400)

    def body(self, request_id: str) -> bytes:
        extra = "".join(element(k[:1].upper() + k[1:].replace("_", ""), str(v)) for k, v in self.extra.items())
        return (
            XML_DECL
            + "<Error>"
            + element("Code", self.code)
            + element("Message", self.message)
            + (element("Resource", self.resource) if self.resource else "")
            + extra
            + element("RequestId", request_id)
            + "</Error>"
        ).encode("utf-8")


def element(name: str, text: str | int | None) -> str:
    return f"<{name}>{escape('' if text is None else str(text))}</{name}>"


def document(root: str, inner: str) -> bytes:
    return f'{XML_DECL}<{root} xmlns="{S3_NS}">{inner}</{root}>'.encode()


def iso_time(epoch: float) -> str:
    """``2009-10-12T17:50:30.000Z``: the timestamps of S3 listings."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch * 1000) % 1000:03d}Z"


def http_time(epoch: float) -> str:
    return formatdate(epoch, usegmt=True)


# -- request bodies ---------------------------------------------------------------------------


def parse(body: bytes) -> ET.Element:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise S3Error("MalformedXML", "The XML you provided was not well-formed or did not validate.") from None
    return root


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def children(elem: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in elem if local(c.tag) == name]


def child_text(elem: ET.Element, name: str) -> str | None:
    for c in elem:
        if local(c.tag) == name:
            return c.text or ""
    return None


def parse_complete(body: bytes) -> list[tuple[int, str]]:
    """``<CompleteMultipartUpload>``: (part number, ETag without quotes) in the given order."""
    root = parse(body)
    if local(root.tag) != "CompleteMultipartUpload":
        raise S3Error("MalformedXML", "expected CompleteMultipartUpload")
    parts = []
    for p in children(root, "Part"):
        number, etag = child_text(p, "PartNumber"), child_text(p, "ETag")
        try:
            parts.append((int(number or ""), (etag or "").strip().strip('"')))
        except ValueError:
            raise S3Error("MalformedXML", "a Part has no valid PartNumber") from None
    if not parts:
        raise S3Error("MalformedXML", "CompleteMultipartUpload lists no parts")
    return parts


def parse_delete(body: bytes) -> tuple[list[str], bool]:
    """``<Delete>``: the keys and whether the answer is quiet."""
    root = parse(body)
    if local(root.tag) != "Delete":
        raise S3Error("MalformedXML", "expected Delete")
    keys = [child_text(o, "Key") or "" for o in children(root, "Object")]
    if len(keys) > 1000:
        raise S3Error("MalformedXML", "at most 1000 keys per DeleteObjects")
    return keys, (child_text(root, "Quiet") or "").strip().lower() == "true"


def parse_cors(body: bytes) -> list[dict]:
    """``<CORSConfiguration>``: its rules as dicts of lists (origins, methods, headers, expose)
    and ``max_age`` (int or None)."""
    root = parse(body)
    if local(root.tag) != "CORSConfiguration":
        raise S3Error("MalformedXML", "expected CORSConfiguration")
    rules = []
    for r in children(root, "CORSRule"):

        def texts(name, r=r):
            return [(c.text or "").strip() for c in children(r, name)]

        methods = texts("AllowedMethod")
        if any(m not in ("GET", "PUT", "POST", "DELETE", "HEAD") for m in methods):
            raise S3Error("InvalidRequest", "Found unsupported HTTP method in CORS config.")
        origins = texts("AllowedOrigin")
        if not methods or not origins:
            raise S3Error("MalformedXML", "a CORSRule needs AllowedMethod and AllowedOrigin")
        age = child_text(r, "MaxAgeSeconds")
        rules.append({
            "origins": origins,
            "methods": methods,
            "headers": texts("AllowedHeader"),
            "expose": texts("ExposeHeader"),
            "max_age": int(age) if age and age.strip().isdigit() else None,
        })  # fmt: skip
    if not rules or len(rules) > 100:
        raise S3Error("MalformedXML", "a CORS configuration holds 1 to 100 rules")
    return rules


def cors_document(rules: list[dict]) -> bytes:
    inner = []
    for r in rules:
        inner.append("<CORSRule>")
        inner += [element("AllowedHeader", h) for h in r["headers"]]
        inner += [element("AllowedMethod", m) for m in r["methods"]]
        inner += [element("AllowedOrigin", o) for o in r["origins"]]
        inner += [element("ExposeHeader", h) for h in r["expose"]]
        if r["max_age"] is not None:
            inner.append(element("MaxAgeSeconds", r["max_age"]))
        inner.append("</CORSRule>")
    return document("CORSConfiguration", "".join(inner))
