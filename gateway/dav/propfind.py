"""PROPFIND with Depth 0 or 1, streamed and read from the database in bulk.

WsgiDAV builds the whole multistatus tree before sending a byte, and asks each member for each
property through several method calls. Here the folder's members are read a page at a time
(:data:`PAGE_SIZE` rows, ordered by name), with the dead properties of the page in one more
query and the locks below the folder in one query per request, and each page's ``<response>``
elements are sent as soon as they are built. Memory does not grow with the folder, and the
first bytes leave before the last members are read.

The answer is WsgiDAV's, byte for byte: the same properties in the same order, the same hrefs,
the same propstat grouping and status lines, the same namespace prefixes. A member is written
from a template only when WsgiDAV's answer for it is known exactly: no dead properties, no lock
rooted at it, and only properties whose values this module computes (see :func:`_known_value`).
Every other member, and the resource the request names, goes through WsgiDAV's own code
(``get_properties`` and ``add_property_response``), with what the page read handed to the
per-request caches, so it costs no further query.

A listing that fits in one page is sent with a Content-Length, as before; a longer one is sent
without (chunked on HTTP/1.1). Each page is its own read: a member renamed while a long
listing is being sent may show under its old name, its new one, both or neither. A database
error after the first page has been sent can only cut the answer short: the client sees a
truncated body, never a well-formed partial listing.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import quote

from lxml import etree
from wsgidav import util, xml_tools
from wsgidav.dav_error import HTTP_NOT_FOUND, DAVError, get_http_status_string

from gateway.dav.errors import to_dav_error
from gateway.dav.resources import NODES_KEY, USED_KEY
from gateway.dav.syncprops import OC_CHECKSUMS
from gateway.errors import HfdavError
from gateway.meta.records import EMPTY_ETAG, Node
from gateway.paths import HIDDEN_ROOT_NAMES

#: Members read (and answered) per database query.
PAGE_SIZE = 500

#: environ key of the dead-property cache of :class:`gateway.dav.props.DbPropertyManager`
_PROPS_CACHE_KEY = "hfdav.props"

_DECLARATION = b"<?xml version='1.0' encoding='UTF-8'?>\n"
_OPEN = b'<D:multistatus xmlns:D="DAV:">'
_CLOSE = b"</D:multistatus>"
_HREF_SAFE = "/" + "!*'()," + "$-_|."  # as DAVResource.get_href

_OK = "200 OK"
_NOT_FOUND_ERROR = DAVError(HTTP_NOT_FOUND)
_NOT_FOUND = get_http_status_string(_NOT_FOUND_ERROR)
#: the getter of a property no member has (see PropfindStream._value_getters)
_UNKNOWN = (lambda path, node: _NOT_FOUND_ERROR, True)
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_SUPPORTED_LOCK = (
    "<D:supportedlock>"
    "<D:lockentry><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockentry>"
    "<D:lockentry><D:lockscope><D:shared/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockentry>"
    "</D:supportedlock>"
)
_COLLECTION = "<D:resourcetype><D:collection/></D:resourcetype>"
_NO_LOCKS = "<D:lockdiscovery/>"

#: Set while a streamed answer (no Content-Length) starts: see :class:`QuietStreamedAnswers`.
_STREAMING = threading.local()


class QuietStreamedAnswers(logging.Filter):
    """For WsgiDAV's application logger: a streamed multistatus has no Content-Length by design,
    so WsgiDAV's error about it (and its note that it closes the connection, which it does)
    is dropped for those answers; for any other answer it stays."""

    _EXPECTED = ("Missing required Content-Length header in 207-response", "Adding 'Connection: close' header.")

    def filter(self, record: logging.LogRecord) -> bool:
        return not (getattr(_STREAMING, "active", False) and record.getMessage().startswith(self._EXPECTED))


#: Text lxml writes other than as is (besides ``&<>``): a member with such a value is left to
#: WsgiDAV's code, whatever it makes of it.
_SPECIAL_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
#: Namespace URIs and local names written as they are inside a tag.
_PLAIN_NS = re.compile(r"[^\s\"'<>&{}]+")
_PLAIN_LOCAL = re.compile(r"[A-Za-z_][\w.\-]*")


class _Raw(str):
    """A property value that is already XML (the whole element)."""


def http_date(secs: float) -> str:
    """``util.get_rfc1123_time(secs)`` (``email.utils.formatdate(secs, usegmt=True)``), without
    its detour through a time tuple: the same datetime, the same fields."""
    when = datetime.fromtimestamp(secs, UTC)
    return (f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} {when.year:04d} "
            f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} GMT")  # fmt: skip


def _text(value: str) -> str | None:
    if _SPECIAL_TEXT.search(value):
        return None
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class PropfindStream:
    """One PROPFIND answer; :meth:`start` sends the first page and returns the body iterator.

    ``mode`` and ``names`` are those of :meth:`HfdavRequestServer._propfind_request`.
    """

    def __init__(self, environ: dict, res, depth: str, mode: str, names: list[str]):
        self.environ = environ
        self.res = res
        self.depth = depth
        self.mode = mode
        self.names = names
        self.provider = res.provider
        self.files = self.provider.files
        self._href_prefix = self.provider.mount_path + self.provider.share_path
        self._ref_prefix = self.provider.share_path
        self._has_locks = self.provider.lock_manager is not None
        self._quota = self.files.quota
        self._lock_roots: set[str] | None = None
        self._plans: dict[tuple[str, ...], tuple[list[tuple[str, str]], str] | None] = {}
        self._kinds: dict[tuple[bool, bool, bool], tuple[list[tuple[str, str]], str] | None] = {}
        self._values = self._value_getters()

    # -- the answer -----------------------------------------------------------------------
    def start(self, start_response):
        """Read the first page (errors still become a proper error answer), then answer."""
        first = [_DECLARATION + _OPEN, self._generic(self.res)]
        pages = self._pages()
        try:
            first.append(next(pages))
            more = True
        except StopIteration:
            more = False
        headers = [("Content-Type", "application/xml; charset=utf-8"), ("Date", util.get_rfc1123_time())]
        if not more:
            first.append(_CLOSE)
            body = b"".join(first)
            start_response("207 Multi-Status", [*headers, ("Content-Length", str(len(body)))])
            return [body]
        # WsgiDAV's complaint about the missing length is expected; WsgiDAV's error printer
        # passes the headers on only with the first piece of the body, so the flag lasts until then
        _STREAMING.active = True
        start_response("207 Multi-Status", headers)
        return self._rest(b"".join(first), pages)

    @staticmethod
    def _rest(first: bytes, pages: Iterator[bytes]) -> Iterator[bytes]:
        try:
            yield first
        finally:
            _STREAMING.active = False
        yield from pages
        yield _CLOSE

    def _pages(self) -> Iterator[bytes]:
        """The members' ``<response>`` elements, a page at a time (none for Depth 0 or a file)."""
        res = self.res
        if self.depth != "1" or not res.is_collection:
            return
        folder: Node = res.node
        repo = self.files.repo
        after = None
        while True:
            try:
                page = repo.children_page(folder.id, after=after, limit=PAGE_SIZE)
                props = repo.properties_of([n.id for n in page]) if page else {}
                if page and self._lock_roots is None:
                    self._lock_roots = self._read_lock_roots()
            except HfdavError as exc:
                raise to_dav_error(exc) from exc
            if not page:
                return
            after = page[-1].name
            out = []
            for node in page:
                if folder.path == "" and node.name in HIDDEN_ROOT_NAMES:
                    continue  # hidden; reachable by its URL (the trash, pending S3 uploads)
                path = util.join_uri(res.path, node.name)
                piece = None if node.id in props else self._fast(path, node)
                if piece is None:
                    piece = self._generic_member(path, node, props.get(node.id, {}))
                out.append(piece)
            if out:
                yield b"".join(out)
            if len(page) < PAGE_SIZE:
                return

    def _read_lock_roots(self) -> set[str]:
        """Roots of the live locks on the folder's members (one query, none deeper: a member's
        lockdiscovery lists the locks rooted at it, as WsgiDAV's does)."""
        if not self._has_locks:
            return set()
        return self.provider.lock_manager.storage.member_lock_roots(self.res.get_ref_url())

    # -- WsgiDAV's own code ---------------------------------------------------------------
    def _prop_list(self, res) -> list:
        mode, names = self.mode, self.names
        if mode == "allprop" and names:
            listed = res.get_property_names(is_allprop=True)
            return res.get_properties("named", name_list=listed + [n for n in names if n not in listed])
        return res.get_properties(mode, name_list=names if mode == "named" else None)

    def _generic(self, res) -> bytes:
        multistatus = xml_tools.make_multistatus_el()
        util.add_property_response(multistatus, res.get_href(), self._prop_list(res))
        xml = etree.tostring(multistatus, encoding="UTF-8")
        if not (xml.startswith(_OPEN) and xml.endswith(_CLOSE)):
            raise RuntimeError(f"unexpected multistatus serialization: {xml[:80]!r}")
        return xml[len(_OPEN) : -len(_CLOSE)]

    def _generic_member(self, path: str, node: Node, dead: dict[str, str]) -> bytes:
        nodes = self.environ.setdefault(NODES_KEY, {})
        cache = self.environ.setdefault(_PROPS_CACHE_KEY, {})
        nodes[node.path] = node
        cache[node.id] = dead
        try:
            return self._generic(self.provider.resource_for(path, node, self.environ))
        finally:  # kept only while this member is answered: memory stays bounded
            nodes.pop(node.path, None)
            cache.pop(node.id, None)

    # -- the template ---------------------------------------------------------------------
    def _fast(self, path: str, node: Node) -> bytes | None:
        """The member's ``<response>`` as WsgiDAV would write it, or None to leave it to WsgiDAV."""
        is_dir = node.is_dir
        preferred = path + "/" if is_dir and not path.endswith("/") else path
        if self._lock_roots and "/" + quote(self._ref_prefix + preferred).strip("/") in self._lock_roots:
            return None
        kind = (is_dir, node.created_at is None, node.modified_at is None)
        try:
            plan = self._kinds[kind]
        except KeyError:
            plan = self._kinds[kind] = self._plan(self._names_for(node))
        if plan is None:
            return None
        tags, ns = plan
        groups: dict[str, list[str]] = {}
        if self.mode == "name":
            groups[_OK] = [f"<{tag}/>" for _name, tag in tags]
        else:
            values = self._values
            for name, tag in tags:
                getter, plain = values.get(name, _UNKNOWN)
                value = getter(path, node)
                if value is NotImplemented:
                    return None
                if value is _NOT_FOUND_ERROR:
                    groups.setdefault(_NOT_FOUND, []).append(f"<{tag}/>")
                elif type(value) is _Raw:
                    groups.setdefault(_OK, []).append(value)
                else:
                    text = value if plain else _text(value)
                    if text is None:
                        return None
                    groups.setdefault(_OK, []).append(f"<{tag}>{text}</{tag}>")
        href = quote(self._href_prefix + preferred, safe=_HREF_SAFE)
        stats = "".join(
            f"<D:propstat><D:prop>{''.join(parts)}</D:prop><D:status>HTTP/1.1 {status}</D:status></D:propstat>"
            for status, parts in groups.items()
        )
        return f"<D:response{ns}><D:href>{href}</D:href>{stats}</D:response>".encode()

    def _names_for(self, node: Node) -> list[str]:
        """The property names of a member's response (before their values are known)."""
        if self.mode == "named":
            return self.names
        names = self._allprop_names(node)
        if self.mode == "allprop" and self.names:
            names = names + [n for n in self.names if n not in names]
        return names

    def _plan(self, names: list[str]) -> tuple[list[tuple[str, str]], str] | None:
        """``([(name, prefixed tag)], namespace declarations)`` of a response listing ``names``;
        None when one of them is not written from the template."""
        key = tuple(names)
        if key not in self._plans:
            nsmap: dict[str, str] = {}
            tags = []
            for name in names:
                tag = self._tag(name, nsmap)
                if tag is None:
                    self._plans[key] = None
                    break
                tags.append((name, tag))
            else:
                ns = "".join(f' xmlns:{prefix}="{uri}"' for uri, prefix in nsmap.items())
                self._plans[key] = (tags, ns)
        return self._plans[key]

    @staticmethod
    def _tag(name: str, nsmap: dict[str, str]) -> str | None:
        """The prefixed tag of ``name`` in this response (declaring its namespace as
        ``add_property_response`` does: NS1, NS2, ... in order of first use)."""
        ns, local = util.split_namespace(name)
        if not _PLAIN_LOCAL.fullmatch(local):
            return None
        if ns == "DAV:":
            return f"D:{local}"
        if not ns or not _PLAIN_NS.fullmatch(ns):
            return None
        prefix = nsmap.get(ns)
        if prefix is None:
            prefix = nsmap[ns] = f"NS{len(nsmap) + 1}"
        return f"{prefix}:{local}"

    def _allprop_names(self, node: Node) -> list[str]:
        """``get_property_names(is_allprop=True)`` of a member without dead properties."""
        names = ["{DAV:}resourcetype"]
        if node.created_at is not None:
            names.append("{DAV:}creationdate")
        if node.is_dir:
            names.append("{DAV:}quota-used-bytes")
            if self._quota is not None:
                names.append("{DAV:}quota-available-bytes")
        else:
            names += ["{DAV:}getcontentlength", "{DAV:}getcontenttype"]
        if node.modified_at is not None:
            names.append("{DAV:}getlastmodified")
        names.append("{DAV:}displayname")
        if not node.is_dir:
            names.append("{DAV:}getetag")
        if self._has_locks:
            names += ["{DAV:}lockdiscovery", "{DAV:}supportedlock"]
        return names

    def _used_bytes(self) -> int:
        if USED_KEY not in self.environ:
            self.environ[USED_KEY] = self.files.used_bytes()
        return self.environ[USED_KEY]

    def _value_getters(self) -> dict:
        """``name -> getter(path, node)``: what ``get_property_value(name)`` returns for a member
        (a str, a :class:`_Raw` element, ``_NOT_FOUND_ERROR`` for a 404), or NotImplemented
        when only WsgiDAV's code knows. A name missing here is a 404 (an unknown live property,
        or a dead property of a member that has none). Mirrors
        :class:`~gateway.dav.resources.FileResource`, ``FolderResource`` and WsgiDAV's
        ``_DAVResource.get_property_value``; the tests compare the two."""
        nf = _NOT_FOUND_ERROR

        def resourcetype(path, node):
            return _Raw(_COLLECTION) if node.is_dir else ""

        def creationdate(path, node):
            return nf if node.created_at is None else util.get_rfc3339_time(node.created_at)

        def getlastmodified(path, node):
            return nf if node.modified_at is None else http_date(node.modified_at)

        def getcontentlength(path, node):
            return nf if node.is_dir else str(node.size)

        def getcontenttype(path, node):
            return nf if node.is_dir else (node.content_type or util.guess_mime_type(path))

        def getetag(path, node):
            return nf if node.is_dir else f'"{node.etag or EMPTY_ETAG}"'

        def displayname(path, node):
            return util.get_uri_name(path)

        def used(path, node):
            return str(self._used_bytes()) if node.is_dir else nf

        def available(path, node):
            if not node.is_dir or self._quota is None:
                return nf
            return str(max(0, self._quota - self._used_bytes()))

        def checksums(path, node):
            if node.is_dir:
                return nf  # a dead property: the member has none
            if node.checksums.md5 or node.checksums.sha1:
                return NotImplemented  # an element of its own namespace: WsgiDAV writes it
            return nf

        # (getter, whether its text is plain: digits, dates, nothing to escape)
        getters = {
            "{DAV:}resourcetype": (resourcetype, True),
            "{DAV:}creationdate": (creationdate, True),
            "{DAV:}getlastmodified": (getlastmodified, True),
            "{DAV:}getcontentlength": (getcontentlength, True),
            "{DAV:}getcontenttype": (getcontenttype, False),
            "{DAV:}getetag": (getetag, False),
            "{DAV:}displayname": (displayname, False),
            "{DAV:}quota-used-bytes": (used, True),
            "{DAV:}quota-available-bytes": (available, True),
            OC_CHECKSUMS: (checksums, True),
        }
        if self._has_locks:  # a member with a lock rooted at it never gets here
            getters["{DAV:}lockdiscovery"] = (lambda path, node: _Raw(_NO_LOCKS), True)
            getters["{DAV:}supportedlock"] = (lambda path, node: _Raw(_SUPPORTED_LOCK), True)
        return getters
