"""What sync clients use to keep a tree in step: client-set modification times and checksums.

These follow ownCloud/Nextcloud, whose conventions rclone (vendors ``owncloud`` and
``nextcloud``), the ownCloud/Nextcloud desktop clients and many libraries speak:

* ``X-OC-Mtime: <epoch seconds>`` on a PUT sets the new version's modification time; the
  answer carries ``X-OC-Mtime: accepted``, as ownCloud's does. (On COPY and MOVE the header is
  not taken: both keep the source's time, and rclone sets another with a PROPPATCH when it
  sees no ``accepted``.)
* PROPPATCH of ``{DAV:}lastmodified`` (epoch seconds; what rclone sends to set a time),
  ``{DAV:}getlastmodified`` (RFC 1123, ``mutable_live_props``) or Windows'
  ``{urn:schemas-microsoft-com:}Win32LastModifiedTime`` (WsgiDAV's ``emulate_win32_lastmod``).
* ``OC-Checksum: SHA1:<hex>`` (or ``MD5:``) on a PUT: the digest of the body as the client
  computed it; a body that does not match is refused (400) and changes nothing, as ownCloud
  does. Other algorithms (``ADLER32``) are not checked.
* ``{http://owncloud.org/ns}checksums``: ``<oc:checksum>SHA1:<hex> MD5:<hex></oc:checksum>``,
  read by rclone (owncloud: MD5 and SHA-1; nextcloud: SHA-1) for ``check``/``md5sum`` and to
  compare files in a ``sync``. Answered when asked for by name only (in ``<prop>``, or in the
  ``<include>`` of an ``<allprop>``; allprop alone lists RFC 4918 properties).

rclone with vendor ``other`` sends no time at all and reads no checksum: nothing a server can
do makes it keep times (it compares sizes only).
"""

from __future__ import annotations

import math
from email.utils import parsedate_to_datetime

from wsgidav.dav_error import HTTP_BAD_REQUEST, HTTP_CONFLICT, DAVError
from wsgidav.xml_tools import etree

from gateway.meta.records import Checksums

OC_NS = "http://owncloud.org/ns"
#: ownCloud's checksum property (Clark notation) and the element inside it
OC_CHECKSUMS = f"{{{OC_NS}}}checksums"
OC_CHECKSUM = f"{{{OC_NS}}}checksum"
#: The writable modification time of ownCloud/Nextcloud (sabre/dav): epoch seconds
DAV_LASTMODIFIED = "{DAV:}lastmodified"
#: environ key of the X-OC-Mtime request header, and the answer ownCloud gives when it took it
OC_MTIME_ENVIRON = "HTTP_X_OC_MTIME"
OC_MTIME_HEADER = "X-OC-Mtime"
OC_MTIME_ACCEPTED = "accepted"
#: environ key of the OC-Checksum request header
OC_CHECKSUM_ENVIRON = "HTTP_OC_CHECKSUM"
#: environ key: headers a resource adds to the response WsgiDAV builds (see gateway.dav.app)
RESPONSE_HEADERS_KEY = "hfdav.response_headers"


def add_response_header(environ: dict, name: str, value: str) -> None:
    environ.setdefault(RESPONSE_HEADERS_KEY, []).append((name, value))


#: Times a listing can show: years 1 to 9999 (an HTTP date of year 10000 cannot be formatted,
#: and a file with such a time would break every PROPFIND of its folder)
EARLIEST_TIME = -62_135_596_800
LATEST_TIME = 253_402_300_799


def _epoch(value: str) -> float:
    """Seconds since the epoch (integer or decimal) within the years 1 to 9999, else ValueError."""
    seconds = float(value.strip())
    if not (math.isfinite(seconds) and EARLIEST_TIME <= seconds <= LATEST_TIME):
        raise ValueError(value)
    return seconds


def request_mtime(environ: dict) -> float | None:
    """The modification time an ``X-OC-Mtime`` header sets; None without one; 400 if malformed."""
    raw = environ.get(OC_MTIME_ENVIRON)
    if raw is None:
        return None
    try:
        return _epoch(raw)
    except ValueError:
        raise DAVError(HTTP_BAD_REQUEST, context_info="X-OC-Mtime must be seconds since the epoch") from None


def announced_checksums(environ: dict) -> Checksums | None:
    """The MD5/SHA-1 an ``OC-Checksum`` header announces (``ALGO:hex``, several separated by
    spaces); None without one. Digests of other algorithms are ignored."""
    raw = environ.get(OC_CHECKSUM_ENVIRON)
    if not raw:
        return None
    found: dict[str, str] = {}
    for item in raw.split():
        algo, _, digest = item.partition(":")
        if algo.lower() in ("md5", "sha1") and digest:
            found[algo.lower()] = digest.lower()
    return Checksums(**found) if found else None


def parse_timestamp(value) -> float:
    """A time a PROPPATCH (or WsgiDAV) sets: epoch seconds or an RFC 1123 date; 409 (the
    value does not fit the property, RFC 4918 §9.2) if it is neither."""
    text = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    text = text.strip() if isinstance(text, str) else ""
    try:
        return _epoch(text)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        raise DAVError(HTTP_CONFLICT, context_info=f"not a time: {text[:40]!r}") from None


def checksums_element(sums: Checksums):
    """The ``oc:checksums`` property element, or None if no checksum is known."""
    known = [f"{name}:{digest}" for name, digest in (("SHA1", sums.sha1), ("MD5", sums.md5)) if digest]
    if not known:
        return None
    prop = etree.Element(OC_CHECKSUMS)
    etree.SubElement(prop, OC_CHECKSUM).text = " ".join(known)
    return prop
