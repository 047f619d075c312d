"""The DAV provider: maps share paths to resources, and guards every request before WsgiDAV
handles it (framing, quota, free space, write permission, XML bodies, the reserved trash path),
so that a request refused is refused before it has any effect."""

from __future__ import annotations

import logging
from http import HTTPStatus
from urllib.parse import quote

from wsgidav.dav_error import HTTP_FORBIDDEN, DAVError
from wsgidav.dav_provider import DAVProvider

from gateway.dav.auth import ROLE_WRITE, WRITE_METHODS
from gateway.dav.bodies import DEFAULT_MAX_XML_BODY, XML_METHODS, read_xml_body
from gateway.dav.errors import HTTP_INSUFFICIENT_STORAGE, HTTP_LENGTH_REQUIRED, to_dav_error
from gateway.dav.front import DESTINATION_KEY
from gateway.dav.resources import EXTENTS_KEY, NODES_KEY, FileResource, FolderResource, expected_length
from gateway.errors import HfdavError, InvalidPath
from gateway.files import FileService
from gateway.meta.records import Node
from gateway.paths import normalize

log = logging.getLogger(__name__)

#: Methods whose handler reads the target's parent right after the target: both in one query.
_PARENT_TOO = frozenset({"PUT", "MKCOL", "LOCK"})


class HfdavProvider(DAVProvider):
    def __init__(
        self,
        files: FileService,
        *,
        upload_progress=None,
        read_only: bool = False,
        max_xml_body: int = DEFAULT_MAX_XML_BODY,
        max_propfind_infinity: int = 10_000,
        max_copy_members: int = 10_000,
    ):
        super().__init__()
        self.files = files
        self.upload_progress = upload_progress
        self._read_only = read_only
        self.max_xml_body = max_xml_body
        #: members a Depth-infinity PROPFIND may list (see HfdavRequestServer.do_PROPFIND)
        self.max_propfind_infinity = max_propfind_infinity
        #: members a COPY of a folder may copy (HfdavRequestServer._copy_or_move)
        self.max_copy_members = max_copy_members

    def is_readonly(self):
        return self._read_only

    def resource_for(self, path: str, node: Node, environ: dict):
        if node.is_dir:
            return FolderResource(path, environ, node)
        return FileResource(path, environ, node)

    def get_resource_inst(self, path: str, environ: dict):
        try:
            key = normalize(path)
        except InvalidPath as exc:
            raise to_dav_error(exc) from exc
        cache = environ.setdefault(NODES_KEY, {})
        if key in cache:
            node = cache[key]
        else:
            try:
                if environ.get("REQUEST_METHOD") == "GET":
                    # a GET's headers and body must describe the same version: read the node and
                    # its extents together (an overwrite may land between headers and body)
                    found = self.files.stat_for_read(key)
                    node = found[0] if found else None
                    if found:
                        environ.setdefault(EXTENTS_KEY, {})[key] = found[1]
                elif key and environ.get("REQUEST_METHOD") in _PARENT_TOO:
                    # WsgiDAV looks at the parent next (it must be a folder, it may be locked)
                    parent = key.rpartition("/")[0]
                    pair = self.files.repo.get_many([key, parent])
                    node = pair.get(key)
                    cache.setdefault(parent, pair.get(parent))
                else:
                    node = self.files.repo.get(key)
            except HfdavError as exc:
                raise to_dav_error(exc) from exc
            cache[key] = node
        if node is None:
            return None
        return self.resource_for(path, node, environ)

    def custom_request_handler(self, environ, start_response, default_handler):
        """Runs around every request (a generator, like WsgiDAV's handlers)."""
        method = environ.get("REQUEST_METHOD")
        locks = getattr(self.lock_manager, "storage", None)
        if hasattr(locks, "begin_request"):
            locks.begin_request()
        try:
            try:
                self._guard(environ, method)
            except DAVError as err:
                yield from _refusal(environ, start_response, err)
                return
            if method == "LOCK":
                yield from self._lock(environ, start_response, default_handler)
            else:
                yield from default_handler(environ, start_response)
        finally:
            if hasattr(locks, "end_request"):
                locks.end_request()

    def _guard(self, environ, method: str) -> None:
        """The checks made before WsgiDAV acts; a DAVError is the refusal."""
        if method in WRITE_METHODS:
            roles = environ.get("wsgidav.auth.roles") or ()
            if self._read_only or ROLE_WRITE not in roles:
                raise DAVError(HTTP_FORBIDDEN, context_info="read-only access")
        if method in XML_METHODS:
            read_xml_body(environ, self.max_xml_body)
        if method in ("DELETE", "MOVE") and _is_root(environ.get("PATH_INFO", "")):
            raise DAVError(HTTP_FORBIDDEN, context_info="the share's root cannot be deleted or moved")
        if method in ("PUT", "MKCOL", "MOVE", "COPY"):
            self._check_target(environ, method)
        if method == "PUT":
            self._check_put(environ)

    def _check_target(self, environ, method: str) -> None:
        """403 for a write into the reserved trash path, before WsgiDAV does anything (a MOVE with
        ``Overwrite: T`` onto it would first delete the trash)."""
        raw = environ.get("PATH_INFO", "")
        if method in ("MOVE", "COPY"):
            # the destination as the request front decoded it (a bad one it answered itself)
            raw = environ.get(DESTINATION_KEY) or ""
            share = self.share_path or ""
            if share and (raw == share or raw.startswith(share + "/")):
                raw = raw[len(share) :]
            if DESTINATION_KEY in environ and _is_root(raw):
                raise DAVError(HTTP_FORBIDDEN, context_info="the share's root cannot be replaced")
        try:
            self.files.check_writable(normalize(raw))
        except InvalidPath:
            return  # WsgiDAV answers a bad path itself
        except HfdavError as exc:
            raise to_dav_error(exc) from exc

    def _check_put(self, environ) -> None:
        """Refuse what cannot be right before reading a byte (DESIGN §3.1)."""
        length = expected_length(environ)
        chunked = "chunked" in (environ.get("HTTP_TRANSFER_ENCODING") or "").lower()
        if length is None and not chunked:
            raise DAVError(HTTP_LENGTH_REQUIRED, context_info="PUT needs Content-Length or chunked encoding")
        if length is None:
            return  # the write session counts what arrives against quota and disk
        try:
            self.files.check_space(length)
            if self.files.quota is not None:
                res = self.get_resource_inst(environ.get("PATH_INFO", ""), environ)
                existing = res.node if res is not None else None
                self.files.check_quota(length, existing.size if existing and not existing.is_dir else 0)
        except HfdavError as exc:
            err = to_dav_error(exc)
            if err.value == HTTP_INSUFFICIENT_STORAGE:
                raise err from exc

    def _lock(self, environ, start_response, default_handler):
        """A LOCK that fails after WsgiDAV granted the lock (the answer could not be built) takes
        the lock back, and the empty file it created for an unmapped URL: nobody received the
        token, so nobody could ever release it."""
        path = environ.get("PATH_INFO", "")
        storage = getattr(self.lock_manager, "storage", None)
        existed = self.exists(path, environ)
        try:
            yield from default_handler(environ, start_response)
        except BaseException:
            # only the locks this request was granted: another client's lock granted meanwhile
            # (a refused LOCK raises too) is not this request's to take back
            created = storage.created_in_request() if hasattr(storage, "created_in_request") else []
            for token in created:
                self.lock_manager.release(token)
            url = quote((self.share_path or "") + path)  # as WsgiDAV names lock roots (get_ref_url)
            # the empty file of an unmapped URL, unless it is another client's locked one by now
            if not existed and (created or not self.lock_manager.get_url_lock_list(url)):
                self._remove_created(path)
            raise

    def _remove_created(self, path: str) -> None:
        try:
            node = self.files.repo.get(normalize(path))
            if node is not None and not node.is_dir and node.size == 0:
                self.files.repo.delete(node.path)  # never had content: no trash copy
        except HfdavError:
            log.warning("could not remove the empty file of a failed LOCK at %s", path, exc_info=True)


def _refusal(environ, start_response, err: DAVError):
    """A guard's refusal, with its reason as plain text (clients show it; WsgiDAV's HTML error
    page would be replaced by the bare status line)."""
    status = f"{err.value} {HTTPStatus(err.value).phrase}"
    body = (f"{status}: {err.context_info}\n" if err.context_info else f"{status}\n").encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    if environ.get("REQUEST_METHOD") != "HEAD":
        yield body


def _is_root(path: str) -> bool:
    """Whether a share-relative path names the share's root (which has no parent: WsgiDAV's
    DELETE, MOVE and COPY handlers fail on it with a 500)."""
    return not path.strip("/")
