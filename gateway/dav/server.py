"""WsgiDAV's request server with the two handlers it gets wrong for us replaced, and one bounded:

* GET/HEAD of a file: byte ranges as :mod:`gateway.dav.ranges` describes (WsgiDAV served only
  the last of several ranges, answered 416 when one of several was unsatisfiable, and 206 for
  an invalid ``bytes=10-5``). The body is streamed from the file's seekable reader, part by part.
* GET/HEAD of a file also carry ``Content-Security-Policy: sandbox`` and
  ``X-Content-Type-Options: nosniff`` (:data:`FILE_HEADERS`). A file is served with the type its
  name or its uploader gave it, so an HTML or SVG file opened in a browser would run its script
  in the share's origin, with the credentials the browser holds for the reader. WebDAV clients
  ignore both headers; a browser still shows the page, without script.
* PROPFIND: the body is read as RFC 4918 §9.1 has it. WsgiDAV looked for a ``<name/>`` element
  instead of ``<propname/>``, so a propname request got responses without any property, and it
  ignored ``<include/>``, so ``<allprop/>`` with included properties (quota, checksums) lacked
  them. A ``<propfind/>`` naming none of the three is taken as allprop, like an empty body.
* COPY/MOVE: the destination is the path :mod:`gateway.dav.front` decoded from the
  ``Destination`` header (WsgiDAV decodes before splitting, so ``%3F`` or ``;`` in a name cut it
  short and the request hit another file). The algorithm is WsgiDAV's (RFC 4918 §9.8, §9.9),
  written for a provider whose resources all move recursively in one step.
* PROPFIND with Depth 0 or 1: answered by :mod:`gateway.dav.propfind` (the same answer, streamed
  and read from the database a page at a time).
* The HTTP preconditions (If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since) are
  evaluated as RFC 9110 §13.2.2 orders them (:func:`http_precondition`). WsgiDAV answered 412
  to a GET whose If-None-Match matched when its If-Modified-Since was later than the file's
  time (davfs2 revalidates its cache that way, and then failed the read with EINVAL). A 304
  carries the ETag, as RFC 9110 §15.4.5 asks. A PUT with If-Match to a name that does not
  exist is 412 (WsgiDAV created the file).
* PROPFIND with Depth infinity (or no Depth): refused with 403 ``propfind-finite-depth`` over
  ``HFDAV_MAX_PROPFIND_INFINITY`` members (its cost grows with the whole tree below it); a
  COPY of a folder over ``HFDAV_MAX_COPY_MEMBERS`` members likewise with 507.

Everything else (preconditions, lock checks, multi-status answers) is WsgiDAV's, through the
helpers of :class:`~wsgidav.request_server.RequestServer`. :class:`RequestResolver` is the last
middleware of the WsgiDAV stack and hands every share request to this server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from wsgidav import util, xml_tools
from wsgidav.dav_error import (
    HTTP_BAD_GATEWAY,
    HTTP_BAD_REQUEST,
    HTTP_CONFLICT,
    HTTP_CREATED,
    HTTP_FORBIDDEN,
    HTTP_INSUFFICIENT_STORAGE,
    HTTP_NO_CONTENT,
    HTTP_NOT_FOUND,
    HTTP_NOT_MODIFIED,
    HTTP_PRECONDITION_FAILED,
    HTTP_RANGE_NOT_SATISFIABLE,
    DAVError,
    PRECONDITION_CODE_PropfindFiniteDepth,
    as_DAVError,
)
from wsgidav.mw.base_mw import BaseMiddleware
from wsgidav.request_resolver import RequestResolver as StockResolver
from wsgidav.request_server import RequestServer

from gateway.dav.front import DESTINATION_KEY
from gateway.dav.propfind import PropfindStream
from gateway.dav.ranges import MAX_RANGES, ByteRange, Multipart, parse_range, resolve
from gateway.paths import InvalidPath, normalize

log = logging.getLogger(__name__)


#: Sent with every file (see the module docstring)
FILE_HEADERS = [("Content-Security-Policy", "sandbox"), ("X-Content-Type-Options", "nosniff")]


def if_range_holds(value: str, etag: str, last_modified: float | None) -> bool:
    """RFC 9110 §13.1.5: an entity tag matches by strong comparison (a weak one never does),
    a date matches the exact Last-Modified second; anything else does not match."""
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == f'"{etag}"'
    when = util.parse_time_string(value)
    return when is not None and last_modified is not None and int(last_modified) == when


#: The request headers :func:`http_precondition` evaluates (WSGI names).
HTTP_CONDITIONALS = ("HTTP_IF_MATCH", "HTTP_IF_UNMODIFIED_SINCE", "HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE")


def http_precondition(environ, etag: str | None, last_modified: float | None) -> int | None:
    """The status a failed HTTP precondition answers with (412, or 304 for GET/HEAD), or None
    when the request may go on. RFC 9110 §13.2.2: If-Match, else If-Unmodified-Since; then
    If-None-Match, else (GET/HEAD only) If-Modified-Since. Dates compare at the second
    Last-Modified is sent with; entity tags strongly for If-Match, weakly for If-None-Match.
    A resource without an entity tag ignores the tag conditions, as WsgiDAV did."""
    method = environ["REQUEST_METHOD"]
    modified = None if last_modified is None else int(last_modified)
    if "HTTP_IF_MATCH" in environ:
        value = environ["HTTP_IF_MATCH"].strip()
        if value != "*" and etag is not None and f'"{etag}"' not in [t.strip() for t in value.split(",")]:
            return HTTP_PRECONDITION_FAILED
    elif "HTTP_IF_UNMODIFIED_SINCE" in environ:
        when = util.parse_time_string(environ["HTTP_IF_UNMODIFIED_SINCE"])
        if when is not None and modified is not None and modified > when:
            return HTTP_PRECONDITION_FAILED
    if "HTTP_IF_NONE_MATCH" in environ:
        value = environ["HTTP_IF_NONE_MATCH"].strip()
        if value == "*" or (etag is not None and etag in util.parse_if_match_header(value)):
            return HTTP_NOT_MODIFIED if method in ("GET", "HEAD") else HTTP_PRECONDITION_FAILED
    elif "HTTP_IF_MODIFIED_SINCE" in environ and method in ("GET", "HEAD"):
        when = util.parse_time_string(environ["HTTP_IF_MODIFIED_SINCE"])
        # 304 only for a date after the file's second: two writes within one second share
        # the Last-Modified, and a client holding the first must not be told it is current
        if when is not None and modified is not None and modified < when:
            return HTTP_NOT_MODIFIED
    return None


class HfdavRequestServer(RequestServer):
    """See the module docstring."""

    def _evaluate_if_headers(self, res, environ):
        """The HTTP preconditions by :func:`http_precondition`, then WsgiDAV's ``If:`` (locks
        and state tokens) with those headers hidden from it."""
        if res is not None:
            status = http_precondition(environ, res.get_etag(), res.get_last_modified())
            if status is not None:
                raise DAVError(status)
        elif "HTTP_IF_MATCH" in environ:
            # no current representation: If-Match is false, even "*" (RFC 9110 §13.1.1), so a
            # client updating the version it knows does not bring back a file deleted meanwhile
            raise DAVError(HTTP_PRECONDITION_FAILED, "If-Match: the resource does not exist")
        hidden = {k: environ.pop(k) for k in HTTP_CONDITIONALS if k in environ}
        try:
            super()._evaluate_if_headers(res, environ)
        finally:
            environ.update(hidden)

    # -- PROPFIND ---------------------------------------------------------------------------

    def _refuse_big_infinity(self, environ) -> None:
        """Depth infinity (the default without a Depth header) costs in proportion to the whole
        tree below: over the provider's ``max_propfind_infinity`` members it is refused with
        403 propfind-finite-depth (RFC 4918 §9.1), before anything is listed."""
        if environ.setdefault("HTTP_DEPTH", "infinity") == "infinity":
            provider = self._davProvider
            try:
                key = normalize(environ["PATH_INFO"])
            except InvalidPath:
                key = None  # WsgiDAV answers a bad path itself
            limit = provider.max_propfind_infinity
            if key is not None and provider.files.repo.count_subtree(key, limit) > limit:
                self._fail(HTTP_FORBIDDEN, context_info=f"Depth infinity lists at most {limit} members here; "
                           "use Depth 1", err_condition=PRECONDITION_CODE_PropfindFiniteDepth)  # fmt: skip

    # -- GET / HEAD -----------------------------------------------------------------------

    def do_GET(self, environ, start_response):
        return self._send_file(environ, start_response, head=False)

    def do_HEAD(self, environ, start_response):
        return self._send_file(environ, start_response, head=True)

    def _send_file(self, environ, start_response, *, head: bool) -> Iterable[bytes]:
        res = self._davProvider.get_resource_inst(environ["PATH_INFO"], environ)
        if (res is None or res.is_collection or util.get_content_length(environ) != 0
                or environ.get("HTTP_DEPTH", "0") != "0"):  # fmt: skip
            # WsgiDAV's answers: 404, 403, 415, 400
            return self._send_resource(environ, start_response, is_head_method=head)
        etag = res.get_etag()
        modified = res.get_last_modified()
        try:
            self._evaluate_if_headers(res, environ)
        except DAVError as e:
            if e.value != HTTP_NOT_MODIFIED:
                raise
            # WsgiDAV's error answer would drop the validators a 304 carries (RFC 9110 §15.4.5)
            headers = [("Date", util.get_rfc1123_time()), ("ETag", f'"{etag}"'), ("Content-Length", "0")]
            if modified is not None:
                headers.append(("Last-Modified", util.get_rfc1123_time(modified)))
            start_response("304 Not Modified", headers)
            return [b""]
        size = res.get_content_length()
        ctype = res.get_content_type()
        headers = [("Date", util.get_rfc1123_time()), ("ETag", f'"{etag}"'), ("Accept-Ranges", "bytes"), *FILE_HEADERS]
        if modified is not None:
            headers.append(("Last-Modified", util.get_rfc1123_time(modified)))

        ranges = self._wanted_ranges(environ, size, etag, modified)
        plan: list[tuple[bytes, ByteRange | None]]
        if ranges is None:
            status = "200 OK"
            headers += [("Content-Type", ctype), ("Content-Length", str(size))]
            plan = [(b"", ByteRange(0, size - 1))] if size else []
        elif not ranges:
            raise DAVError(HTTP_RANGE_NOT_SATISFIABLE, add_headers=[("Content-Range", f"bytes */{size}")])
        elif len(ranges) == 1:
            status = "206 Partial Content"
            headers += [("Content-Type", ctype), ("Content-Length", str(ranges[0].length)),
                        ("Content-Range", ranges[0].content_range(size))]  # fmt: skip
            plan = [(b"", ranges[0])]
        else:
            status = "206 Partial Content"
            parts = Multipart.new(ranges, size, ctype)
            headers += [("Content-Type", parts.content_type), ("Content-Length", str(parts.content_length))]
            plan = [(parts.head(i), r) for i, r in enumerate(ranges)] + [(parts.tail, None)]
        res.finalize_headers(environ, headers)
        start_response(status, headers)
        if head:
            return [b""]
        return self._stream(res, plan)

    @staticmethod
    def _wanted_ranges(environ, size: int, etag: str, modified) -> list[ByteRange] | None:
        """The ranges to send; None for the whole file (no usable Range, or If-Range fails)."""
        specs = parse_range(environ.get("HTTP_RANGE"))
        if specs is None or size == 0:
            return None
        if_range = environ.get("HTTP_IF_RANGE")
        if if_range is not None and not if_range_holds(if_range, etag, modified):
            return None
        ranges = resolve(specs, size)
        if len(ranges) > MAX_RANGES:
            log.info("Range with %d parts ignored (more than %d): sending the whole file", len(ranges), MAX_RANGES)
            return None
        return ranges

    def _stream(self, res, plan: list[tuple[bytes, ByteRange | None]]) -> Iterator[bytes]:
        if not plan:
            return
        reader = res.get_content()
        try:
            for lead, part in plan:
                if lead:
                    yield lead
                if part is None:
                    continue
                reader.seek(part.start)
                left = part.length
                while left > 0:
                    data = reader.read(min(left, self.block_size))
                    if not data:
                        return  # shorter than announced: the client sees the short body
                    left -= len(data)
                    yield data
        finally:
            reader.close()

    # -- PROPFIND -------------------------------------------------------------------------

    def do_PROPFIND(self, environ, start_response):
        """WsgiDAV's checks and answer, with the body read by :meth:`_propfind_request`."""
        self._refuse_big_infinity(environ)
        path = environ["PATH_INFO"]
        res = self._davProvider.get_resource_inst(path, environ)
        depth = environ.setdefault("HTTP_DEPTH", "infinity")  # RFC 4918 §9.1: the default
        if depth not in ("0", "1", "infinity"):
            self._fail(HTTP_BAD_REQUEST, context_info=f"Invalid Depth header: {depth!r}")
        if depth == "infinity" and not self.allow_propfind_infinite:
            self._fail(HTTP_FORBIDDEN, context_info="PROPFIND with Depth infinity is disabled",
                       err_condition=PRECONDITION_CODE_PropfindFiniteDepth)  # fmt: skip
        if res is None:
            self._fail(HTTP_NOT_FOUND, context_info=path)
        self._evaluate_if_headers(res, environ)
        mode, names = self._propfind_request(environ)
        if depth != "infinity":
            return PropfindStream(environ, res, depth, mode, names).start(start_response)

        multistatus = xml_tools.make_multistatus_el()
        for child in res.get_descendants(depth=depth, add_self=True):
            if mode == "allprop" and names:
                listed = child.get_property_names(is_allprop=True)
                props = child.get_properties("named", name_list=listed + [n for n in names if n not in listed])
            else:
                props = child.get_properties(mode, name_list=names if mode == "named" else None)
            util.add_property_response(multistatus, child.get_href(), props)
        return util.send_multi_status_response(environ, start_response, multistatus)

    def _propfind_request(self, environ) -> tuple[str, list[str]]:
        """``(mode, names)`` of the PROPFIND body: WsgiDAV's modes ``"allprop"`` (``names`` are
        the included ones), ``"name"`` (propname) or ``"named"``. 400 for a body that is not a
        propfind or that combines the modes."""
        body = util.parse_xml_body(environ, allow_empty=True)
        if body is None:
            return "allprop", []
        if body.tag != "{DAV:}propfind":
            self._fail(HTTP_BAD_REQUEST, context_info="The PROPFIND body is not a DAV:propfind")
        modes = {"{DAV:}allprop": "allprop", "{DAV:}propname": "name", "{DAV:}prop": "named"}
        found = [modes[el.tag] for el in body if el.tag in modes]
        if len(set(found)) > 1:
            self._fail(HTTP_BAD_REQUEST, context_info="allprop, propname and prop are mutually exclusive")
        mode = found[0] if found else "allprop"
        wanted = {"allprop": "{DAV:}include", "named": "{DAV:}prop"}.get(mode)
        names = [prop.tag for el in body if el.tag == wanted for prop in el if isinstance(prop.tag, str)]
        return mode, names

    # -- COPY / MOVE ----------------------------------------------------------------------

    def _copy_or_move(self, environ, start_response, is_move):
        provider = self._davProvider
        src_path = environ["PATH_INFO"]
        src_res = provider.get_resource_inst(src_path, environ)
        if src_res is None:
            self._fail(HTTP_NOT_FOUND, context_info=src_path)
        if DESTINATION_KEY not in environ:
            self._fail(HTTP_BAD_REQUEST, context_info="Missing Destination header")
        overwrite = environ.setdefault("HTTP_OVERWRITE", "T") == "T"
        if util.get_content_length(environ):  # RFC 2518's <propertybehavior>: dropped by RFC 4918
            environ["wsgi.input"].read(util.get_content_length(environ))
            environ["wsgidav.all_input_read"] = 1
        depth = self._copy_depth(environ, src_res, is_move)
        if not is_move and depth == "infinity":
            # a row (and time) per member, and every COPY may double the tree: bounded
            limit = provider.max_copy_members
            if provider.files.repo.count_subtree(src_res.node.path, limit) > limit:
                self._fail(HTTP_INSUFFICIENT_STORAGE, context_info=f"a COPY copies at most {limit} members")

        dest_path = self._share_path(environ, environ[DESTINATION_KEY])
        if src_res.is_collection:
            dest_path = dest_path.rstrip("/") + "/"
        dest_res = provider.get_resource_inst(dest_path, environ)
        dest_parent = provider.get_resource_inst(util.get_uri_parent(dest_path), environ)
        if dest_parent is None or not dest_parent.is_collection:
            self._fail(HTTP_CONFLICT, context_info="Destination parent must be a collection")

        self._evaluate_if_headers(src_res, environ)
        self._evaluate_if_headers(dest_res, environ)
        if is_move:
            self._check_write_permission(src_res, "infinity", environ)
            src_parent = provider.get_resource_inst(util.get_uri_parent(src_path), environ)
            if src_parent is not None:
                self._check_write_permission(src_parent, "0", environ)
        if dest_res is None:
            self._check_write_permission(dest_parent, "0", environ)
        self._check_write_permission(dest_res, "infinity", environ)

        if util.is_equal_or_child_uri(src_path, dest_path):
            self._fail(HTTP_FORBIDDEN, context_info="Cannot copy or move a resource onto or below itself")
        if dest_res is not None and not overwrite:
            self._fail(HTTP_PRECONDITION_FAILED, context_info="Destination exists and Overwrite is F")

        success = HTTP_NO_CONTENT if dest_res is not None else HTTP_CREATED
        sources = [src_res] if depth == "0" else src_res.get_descendants(add_self=True)
        errors: list[tuple[str, DAVError]] = []
        for sres in sources:  # the If header must hold for every resource touched
            try:
                self._evaluate_if_headers(sres, environ)
            except DAVError as exc:
                errors.append((sres.get_href(), exc))
        if not errors:
            if dest_res is not None:
                self._clear_destination(src_res, dest_res, sources, src_path, dest_path, is_move)
            if is_move:
                errors = self._guarded(src_res, lambda: src_res.move_recursive(dest_path) or [])
            else:
                errors = self._copy_tree(sources, src_path, dest_path)
        return self._send_response(environ, start_response, src_res, success, errors)

    def _copy_depth(self, environ, src_res, is_move: bool) -> str:
        """RFC 4918 §9.8.3, §9.9.2: a collection copies with Depth 0 or infinity (the default)
        and moves with infinity only; a file ignores Depth."""
        if not src_res.is_collection:
            return "0"
        depth = environ.setdefault("HTTP_DEPTH", "infinity")
        if depth not in ("0", "infinity") or (is_move and depth != "infinity"):
            self._fail(HTTP_BAD_REQUEST, context_info=f"Depth {depth} not allowed here")
        return depth

    def _share_path(self, environ, absolute: str) -> str:
        """The share-relative path of a decoded Destination path; 502 outside this share."""
        provider = self._davProvider
        path = util.normalize_path(absolute)
        _share, dest_provider = environ["wsgidav.app"].resolve_provider(path)
        prefix = provider.mount_path + provider.share_path
        if dest_provider is not provider or not (path + "/").startswith(prefix + "/"):
            self._fail(HTTP_BAD_GATEWAY, context_info="Destination outside this share")
        return path[len(prefix) :] or "/"

    @staticmethod
    def _guarded(res, action) -> list[tuple[str, DAVError]]:
        try:
            return list(action())
        except Exception as exc:  # a failed step is reported in the answer, as WsgiDAV does
            if not isinstance(exc, DAVError):
                log.exception("COPY/MOVE of %s failed", res.path)
            return [(res.get_href(), as_DAVError(exc))]

    @staticmethod
    def _clear_destination(src_res, dest_res, sources, src_path, dest_path, is_move) -> None:
        """Overwrite: the destination goes first (RFC 4918 §9.9.3), except that a collection
        copied onto a collection only loses the members the source lacks (§9.8.4: no merge)."""
        if is_move or not (src_res.is_collection and dest_res.is_collection):
            dest_res.delete()
            return
        kept = {s.path[len(src_path) :].strip("/") for s in sources}
        for member in dest_res.get_descendants(depth_first=True, add_self=False):
            if member.path[len(dest_path) :].strip("/") not in kept:
                member.delete()

    def _copy_tree(self, sources, src_path: str, dest_path: str) -> list[tuple[str, DAVError]]:
        """Top-down copy; the members of a resource that failed are skipped."""
        errors: list[tuple[str, DAVError]] = []
        failed: list[str] = []
        for sres in sources:
            if any(util.is_equal_or_child_uri(f, sres.path) for f in failed):
                continue
            target = dest_path.rstrip("/") + "/" + sres.path[len(src_path) :].strip("/")
            if sres is sources[0]:
                target = dest_path
            step = self._guarded(sres, lambda s=sres, t=target: s.copy_move_single(t, is_move=False) or [])
            if step:
                failed.append(sres.path)
                errors += step
        return errors


class RequestResolver(BaseMiddleware):
    """The last middleware of the WsgiDAV stack: share requests go to :class:`HfdavRequestServer`;
    ``OPTIONS *`` and paths outside every share go to WsgiDAV's own resolver."""

    def __init__(self, wsgidav_app, next_app, config):
        super().__init__(wsgidav_app, next_app, config)
        self._stock = StockResolver(wsgidav_app, next_app, config)

    def __call__(self, environ, start_response):
        provider = environ["wsgidav.provider"]
        if provider is None or environ["PATH_INFO"] == "*":
            return self._stock(environ, start_response)
        return HfdavRequestServer(provider)(environ, start_response)
