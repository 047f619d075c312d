"""DAV resources: thin views of :class:`gateway.meta.records.Node` that call the file service.

WsgiDAV creates resource objects many times per request (WEBDAV_NOTES §1.1); they hold a
node already loaded, so getters never query the database. Modification times and checksums
for sync clients follow :mod:`gateway.dav.syncprops`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_FORBIDDEN,
    HTTP_LOCKED,
    HTTP_NOT_FOUND,
    DAVError,
    DAVErrorCondition,
    PRECONDITION_CODE_LockConflict,
)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection

from gateway.dav.errors import to_dav_error, translated
from gateway.dav.syncprops import (
    DAV_LASTMODIFIED,
    OC_CHECKSUMS,
    OC_MTIME_ACCEPTED,
    OC_MTIME_HEADER,
    add_response_header,
    announced_checksums,
    checksums_element,
    parse_timestamp,
    request_mtime,
)
from gateway.errors import HfdavError
from gateway.files import FileService, WriteSession
from gateway.meta.records import EMPTY_ETAG, Node
from gateway.paths import HIDDEN_ROOT_NAMES, normalize

if TYPE_CHECKING:
    from gateway.dav.provider import HfdavProvider

log = logging.getLogger(__name__)

#: environ keys used as per-request caches
NODES_KEY = "hfdav.nodes"
EXTENTS_KEY = "hfdav.extents"
USED_KEY = "hfdav.used_bytes"


def forget_cached(environ: dict) -> None:
    """Drop the per-request caches after a change to the tree."""
    environ.pop(NODES_KEY, None)
    environ.pop(EXTENTS_KEY, None)
    environ.pop(USED_KEY, None)


def expected_length(environ: dict) -> int | None:
    """The body length a PUT announces: Content-Length, or Finder's X-Expected-Entity-Length."""
    for key in ("CONTENT_LENGTH", "HTTP_X_EXPECTED_ENTITY_LENGTH"):
        raw = environ.get(key)
        if raw not in (None, ""):
            try:
                return int(raw)
            except ValueError:
                raise DAVError(400, context_info=f"bad {key}") from None
    return None


#: RFC 4331 quota properties and the methods that give their values (None: not defined here)
QUOTA_PROPS = {"{DAV:}quota-used-bytes": "get_used_bytes", "{DAV:}quota-available-bytes": "get_available_bytes"}


class _Common:
    node: Node
    provider: HfdavProvider

    @property
    def files(self) -> FileService:
        return self.provider.files

    def get_creation_date(self):
        return self.node.created_at

    def get_last_modified(self):
        return self.node.modified_at

    def get_display_name(self):
        return self.name

    def _changed(self):
        forget_cached(self.environ)

    @translated
    def set_last_modified(self, dest_path, time_stamp, *, dry_run):
        """PROPPATCH of getlastmodified or Win32LastModifiedTime (WsgiDAV calls this)."""
        mtime = parse_timestamp(time_stamp)  # a bad value fails the dry run too
        if not dry_run:
            self.files.set_mtime(dest_path, mtime)
            self._changed()
        return True

    def get_property_value(self, name):
        # WsgiDAV answers a quota property asked for by name with an empty value when there is
        # none (a file, or no HFDAV_QUOTA); clients read that as "0 bytes free". RFC 4331 §3:
        # a property the resource does not have is 404.
        if name in QUOTA_PROPS and getattr(self, QUOTA_PROPS[name])() is None:
            raise DAVError(HTTP_NOT_FOUND)
        return super().get_property_value(name)

    def set_property_value(self, name, value, dry_run=False):
        if name == DAV_LASTMODIFIED:
            if value is None:
                raise DAVError(HTTP_FORBIDDEN, context_info="the modification time cannot be removed")
            return self.set_last_modified(self.path, value.text, dry_run=dry_run)
        if name == OC_CHECKSUMS:
            # rclone sends what it computed beside a new time; the server's own digests of the
            # bytes it stored are the ones that count: accepted, not stored
            return None
        return super().set_property_value(name, value, dry_run=dry_run)

    def support_recursive_move(self, dest_path):
        return True

    @translated
    def move_recursive(self, dest_path):
        """MOVE: one metadata update, whatever the size of the tree (dead properties follow the node)."""
        self.files.move(self.path, dest_path)
        self._changed()


class FolderResource(_Common, DAVCollection):
    def __init__(self, path: str, environ: dict, node: Node):
        super().__init__(path, environ)
        self.node = node

    def get_member_names(self):
        return [n.name for n in self._children()]

    def get_member_list(self):
        return [self.provider.resource_for(util.join_uri(self.path, n.name), n, self.environ) for n in self._children()]

    def get_member(self, name):
        return self.provider.get_resource_inst(util.join_uri(self.path, name), self.environ)

    @translated
    def _children(self) -> list[Node]:
        kids = self.files.list(self.node)
        if self.node.path == "":
            # hidden; reachable by their URLs (the trash; pending S3 multipart uploads)
            kids = [n for n in kids if n.name not in HIDDEN_ROOT_NAMES]
        cache = self.environ.setdefault(NODES_KEY, {})
        base = self.node.path
        for n in kids:
            cache[f"{base}/{n.name}"] = n
        props = self.provider.prop_manager
        if props is not None and self.environ.get("REQUEST_METHOD") == "PROPFIND":
            props.preload_children(self.node.id, base, self.environ)
        return kids

    def get_used_bytes(self):
        if USED_KEY not in self.environ:
            self.environ[USED_KEY] = self.files.used_bytes()
        return self.environ[USED_KEY]

    def get_available_bytes(self):
        avail = self.files.quota
        if avail is None:
            return None
        return max(0, avail - self.get_used_bytes())

    def create_empty_resource(self, name):
        path = util.join_uri(self.path, name)
        if self.environ.get("REQUEST_METHOD") == "PUT":
            # Nothing is stored before the body has arrived: no 0-byte placeholder is ever
            # visible, and a failed upload leaves no trace (WEBDAV_NOTES §5.3).
            return PendingFileResource(path, self.environ)
        try:
            node = self.files.create_empty(normalize(path))
        except HfdavError as exc:
            raise to_dav_error(exc) from exc
        self._changed()
        return FileResource(path, self.environ, node)

    @translated
    def create_collection(self, name):
        self.files.mkdir(util.join_uri(self.path, name))
        self._changed()

    def support_recursive_delete(self):
        return True

    @translated
    def delete(self):
        # WsgiDAV deletes file by file when something below is locked by another, and then
        # calls this for the folders too (its skip of a failed file's ancestors misses them:
        # a folder's path has no trailing slash): a folder with a locked member left in it
        # must stay, or the locked member goes with it
        self._refuse_if_locked_below()
        self.files.delete(self.path)
        self.remove_all_locks(recursive=True)
        self._changed()
        return []

    def _refuse_if_locked_below(self) -> None:
        """423 when a lock in this folder's tree is held without its token in the request.
        (WsgiDAV's own depth-infinity check counts every lock below as a conflict, even one the
        request holds the token of; it is only for its own LOCK and write checks.)"""
        lock_manager = self.provider.lock_manager
        if lock_manager is None:
            return
        tokens = self.environ.get("wsgidav.ifLockTokenList") or []
        user = self.environ.get("wsgidav.user_name")
        url = self.get_ref_url()
        held = lock_manager.storage.get_lock_list(url, include_root=True, include_children=True, token_only=False)
        conflicts = [lock for lock in held if not (lock["principal"] == user and lock["token"] in tokens)]
        if conflicts:
            cond = DAVErrorCondition(PRECONDITION_CODE_LockConflict)
            for lock in conflicts:
                cond.add_href(lock["root"])
            raise DAVError(HTTP_LOCKED, err_condition=cond)

    @translated
    def copy_move_single(self, dest_path, *, is_move):
        dest = self.provider.get_resource_inst(dest_path, self.environ)
        if dest is None:
            self.files.copy(self.path, dest_path, recursive=False)
        self._changed()

    def get_directory_info(self):
        return None


class FileResource(_Common, DAVNonCollection):
    def __init__(self, path: str, environ: dict, node: Node):
        super().__init__(path, environ)
        self.node = node
        self._session: WriteSession | None = None

    def get_content_length(self):
        return self.node.size

    def get_content_type(self):
        return self.node.content_type or util.guess_mime_type(self.path)

    def get_etag(self):
        return self.node.etag or EMPTY_ETAG

    def support_etag(self):
        return True

    def get_property_value(self, name):
        # WsgiDAV wants get_etag() unquoted (it quotes the ETag header itself) and puts the same
        # bare value in <D:getetag>; RFC 4918 §15.6 makes the property the header's value.
        if name == "{DAV:}getetag":
            return f'"{self.get_etag()}"'
        if name == OC_CHECKSUMS:
            prop = checksums_element(self.node.checksums)
            if prop is None:
                raise DAVError(HTTP_NOT_FOUND)  # written before checksums were kept
            return prop
        return super().get_property_value(name)

    def support_ranges(self):
        return True

    @translated
    def get_content(self):
        extents = self.environ.get(EXTENTS_KEY, {}).get(self.node.path)
        return self.files.open_read(self.node, extents)

    @translated
    def begin_write(self, *, content_type=None):
        if content_type in ("application/octet-stream", "application/x-www-form-urlencoded"):
            content_type = None  # generic: guess from the name on GET instead
        progress = self.provider.upload_progress
        self._session = self.files.open_write(
            self.path,
            current=None if isinstance(self, PendingFileResource) else self.node,
            expected_length=expected_length(self.environ),
            content_type=content_type,
            mtime=request_mtime(self.environ),
            announced=announced_checksums(self.environ),
            progress=progress,
        )
        return _SessionWriter(self._session)

    def end_write(self, *, with_errors):
        session, self._session = self._session, None
        if session is None:
            return
        if with_errors:
            session.abort()
            return
        try:
            self.node = session.commit()
        except HfdavError as exc:
            raise to_dav_error(exc) from exc
        if session.mtime is not None:
            add_response_header(self.environ, OC_MTIME_HEADER, OC_MTIME_ACCEPTED)
        self._changed()

    @translated
    def delete(self):
        self.files.delete(self.path)
        self.remove_all_locks(recursive=False)
        self._changed()
        # WsgiDAV checks that the file is gone right after: a PUT of another client may have
        # created it again meanwhile, which is no failure of this DELETE (it answered 500)
        self.environ.setdefault(NODES_KEY, {})[normalize(self.path)] = None

    @translated
    def copy_move_single(self, dest_path, *, is_move):
        if is_move:  # not reached: support_recursive_move() is True
            raise DAVError(HTTP_FORBIDDEN)
        # WsgiDAV checked ``Overwrite: F`` against the destination a moment ago; the copy itself
        # re-checks it in its transaction, so a file created meanwhile is never replaced (412)
        overwrite = self.environ.get("HTTP_OVERWRITE", "T") == "T"
        self.files.copy(self.path, dest_path, recursive=False, overwrite=overwrite)
        self._changed()


class PendingFileResource(FileResource):
    """The target of a PUT to a new URL: exists only in this request until the body is committed."""

    def __init__(self, path: str, environ: dict):
        now = time.time()
        super().__init__(
            path,
            environ,
            Node(0, None, path.rsplit("/", 1)[-1], path, False, now, now, None, None, 0, EMPTY_ETAG),
        )


class _SessionWriter:
    """The file-like object WsgiDAV writes a PUT body into. ``close()`` does not commit:
    ``end_write`` does, once WsgiDAV says the body was read without errors."""

    def __init__(self, session: WriteSession):
        self._session = session

    def write(self, data: bytes) -> int:
        try:
            return self._session.write(data)
        except HfdavError as exc:
            raise to_dav_error(exc) from exc

    def writelines(self, blocks) -> None:
        """The whole body, as WsgiDAV hands it on (a generator reading ``wsgi.input``). A body the
        server reports broken (bad chunk framing, a client gone mid-body) is a 400 and leaves the
        file as it was: the session is discarded, never committed."""
        it = iter(blocks)
        while True:
            try:
                data = next(it)
            except StopIteration:
                return
            except DAVError:
                self._session.abort()
                raise
            except Exception as exc:  # whatever the server raises for a body it cannot read
                self._session.abort()
                raise DAVError(HTTP_BAD_REQUEST, context_info=f"the request body is malformed: {exc}") from exc
            self.write(data)

    def close(self) -> None:
        pass
