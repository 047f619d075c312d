"""XML request bodies (PROPFIND, PROPPATCH, LOCK): bounded in size and free of DTDs, checked
before the request has any effect.

WsgiDAV reads such a body with one ``read(Content-Length)`` and parses it with lxml, which
keeps entity references it was told not to resolve. So a client could make the server hold a
body as large as it announces, and a ``LOCK`` whose owner uses an entity declared in a DTD
was granted, then failed with 500 when the lock was written back (nobody held its token).

:func:`read_xml_body` runs first instead: a body longer than the limit is refused with 413
before a byte of it is read; one that is not well-formed XML, or that has a document type
declaration (internal entities, external entities, "billion laughs"; WebDAV never needs one),
is refused with 400. The checked bytes are handed to WsgiDAV, which parses them as before. A
chunked XML body (no Content-Length) is read the same way, up to the limit; WsgiDAV alone
would take it for an empty body.
"""

from __future__ import annotations

import io

from lxml import etree
from wsgidav.dav_error import HTTP_BAD_REQUEST, HTTP_REQUEST_ENTITY_TOO_LARGE, DAVError

#: Methods whose body WsgiDAV parses as XML.
XML_METHODS = frozenset({"PROPFIND", "PROPPATCH", "LOCK"})
#: Default of ``HFDAV_MAX_XML_BODY``: real clients send a few kilobytes at most.
DEFAULT_MAX_XML_BODY = 1 << 20

#: Parses like WsgiDAV, and never loads anything from outside the body.
_PARSER_OPTIONS = dict(resolve_entities=False, no_network=True, load_dtd=False)


def read_xml_body(environ: dict, limit: int) -> None:
    """Read and check the XML body of this request (see the module docstring), then put it
    back as ``wsgi.input`` with its exact ``CONTENT_LENGTH``. Raises DAVError 400/413."""
    raw_length = (environ.get("CONTENT_LENGTH") or "").strip()
    chunked = "chunked" in (environ.get("HTTP_TRANSFER_ENCODING") or "").lower()
    if raw_length:
        try:
            length = int(raw_length)
        except ValueError:
            raise DAVError(HTTP_BAD_REQUEST, context_info="Content-Length is not a number") from None
        if length < 0:
            raise DAVError(HTTP_BAD_REQUEST, context_info="negative Content-Length")
        if length > limit:
            raise _too_large(limit)
        if length == 0:
            return
        body = _read_up_to(environ["wsgi.input"], length)
        if len(body) < length:
            raise DAVError(HTTP_BAD_REQUEST, context_info=f"the body ended after {len(body)} of {length} bytes")
    elif chunked:
        body = _read_up_to(environ["wsgi.input"], limit + 1)
        if len(body) > limit:
            raise _too_large(limit)
        if not body:
            return
    else:
        return  # no body
    check_xml(body)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)


def check_xml(body: bytes) -> None:
    """400 unless ``body`` is well-formed XML without a document type declaration."""
    try:
        tree = etree.fromstring(body, parser=etree.XMLParser(**_PARSER_OPTIONS)).getroottree()
    except etree.XMLSyntaxError as exc:
        raise DAVError(HTTP_BAD_REQUEST, context_info=f"the body is not well-formed XML: {exc}") from None
    info = tree.docinfo
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None:
        raise DAVError(HTTP_BAD_REQUEST, context_info="XML bodies with a document type declaration (DTD) are refused")


def _too_large(limit: int) -> DAVError:
    return DAVError(HTTP_REQUEST_ENTITY_TOO_LARGE, context_info=f"XML request bodies are limited to {limit} bytes")


def _read_up_to(stream, n: int) -> bytes:
    """Up to ``n`` bytes: fewer only if the body ends first."""
    pieces = []
    while n > 0:
        piece = stream.read(min(n, 64 * 1024))
        if not piece:
            break
        pieces.append(piece)
        n -= len(piece)
    return b"".join(pieces)
