"""Dead properties in the metadata database, keyed by node id.

WsgiDAV addresses properties by reference URL; this manager resolves the URL to a node, so
a MOVE carries the properties with the node at no cost and a DELETE removes them with it.
Properties of a folder's children are loaded in one query per PROPFIND (see
:meth:`preload_children`).

The dead properties of one resource are bounded (:data:`MAX_PROPERTIES` of them,
:data:`MAX_PROPERTY_BYTES` of names and values together): they are stored outside the quota,
and every PROPFIND of the resource or of its folder carries them. A PROPPATCH beyond the bound
is answered 507 for the property (RFC 4918 §9.2.1) and, PROPPATCH being all or nothing, none
of its changes is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote

from wsgidav.dav_error import HTTP_INSUFFICIENT_STORAGE, DAVError

from gateway.paths import normalize

if TYPE_CHECKING:
    from gateway.meta.repo import MetadataRepository

_CACHE_KEY = "hfdav.props"
#: environ key: the properties a PROPPATCH would leave, by node id (its dry run fills it in).
_PENDING_KEY = "hfdav.props.pending"
#: Dead properties of one resource, at most; and their names and values together, in bytes.
MAX_PROPERTIES = 256
MAX_PROPERTY_BYTES = 64 * 1024


class DbPropertyManager:
    def __init__(self, repo: MetadataRepository, share_path_getter):
        self._repo = repo
        self._share = share_path_getter

    # WsgiDAV checks for this attribute name when installing a property manager
    def copy_properties(self, src_url, dest_url, environ=None):
        src, dst = self._node_id(src_url, environ), self._node_id(dest_url, environ)
        if src is None or dst is None:
            return
        for name, value in self._repo.get_properties(src).items():
            self._repo.set_property(dst, name, value)
        self._forget(environ)

    def move_properties(self, src_url, dest_url, with_children, environ=None):
        """Nothing to do: properties belong to the node, which the move kept."""

    # -- reads --------------------------------------------------------------------------------
    def preload_children(self, folder_id: int, folder_path: str, environ) -> None:
        cache = environ.setdefault(_CACHE_KEY, {})
        if ("children", folder_id) in cache:
            return
        cache[("children", folder_id)] = True
        by_id = self._repo.get_properties_of_children(folder_id)
        nodes = environ.get("hfdav.nodes", {})
        prefix = folder_path + "/"
        for path, node in nodes.items():
            if node is not None and path.startswith(prefix) and "/" not in path[len(prefix) :]:
                cache[node.id] = by_id.get(node.id, {})

    def _props(self, norm_url, environ) -> dict[str, str]:
        node_id = self._node_id(norm_url, environ)
        if node_id is None:
            return {}
        cache = environ.setdefault(_CACHE_KEY, {}) if environ is not None else {}
        if node_id not in cache:
            cache[node_id] = self._repo.get_properties(node_id)
        return cache[node_id]

    def get_properties(self, norm_url, environ=None):
        return list(self._props(norm_url, environ))

    def get_property(self, norm_url, name, environ=None):
        return self._props(norm_url, environ).get(name)

    # -- writes -------------------------------------------------------------------------------
    def write_property(self, norm_url, name, property_value, dry_run=False, environ=None):
        node_id = self._node_id(norm_url, environ)
        if node_id is None:
            return
        if isinstance(property_value, bytes):
            property_value = property_value.decode("utf-8")
        self._check_room(norm_url, node_id, name, property_value, environ)
        if dry_run:
            return
        self._repo.set_property(node_id, name, property_value)
        self._forget(environ)

    def remove_property(self, norm_url, name, dry_run=False, environ=None):
        node_id = self._node_id(norm_url, environ)
        if node_id is None:
            return
        self._pending(norm_url, node_id, environ).pop(name, None)
        if dry_run:
            return
        self._repo.remove_property(node_id, name)
        self._forget(environ)

    def remove_properties(self, norm_url, environ=None):
        node_id = self._node_id(norm_url, environ)
        if node_id is not None:
            self._repo.remove_all_properties(node_id)
        self._forget(environ)

    # -- bounds -------------------------------------------------------------------------------
    def _pending(self, norm_url, node_id: int, environ) -> dict[str, str]:
        """The properties of ``node_id`` as the changes of this request so far leave them."""
        pending = environ.setdefault(_PENDING_KEY, {}) if environ is not None else {}
        if node_id not in pending:
            pending[node_id] = dict(self._props(norm_url, environ))
        return pending[node_id]

    def _check_room(self, norm_url, node_id: int, name: str, value: str, environ) -> None:
        props = self._pending(norm_url, node_id, environ)
        props[name] = value
        size = sum(len(k.encode()) + len(v.encode()) for k, v in props.items())
        if len(props) > MAX_PROPERTIES or size > MAX_PROPERTY_BYTES:
            del props[name]
            limit = f"at most {MAX_PROPERTIES} dead properties of {MAX_PROPERTY_BYTES} bytes together"
            raise DAVError(HTTP_INSUFFICIENT_STORAGE, context_info=limit + " per resource")

    # -- helpers ------------------------------------------------------------------------------
    def _node_id(self, norm_url, environ) -> int | None:
        share = self._share() or ""
        path = unquote(norm_url)
        if share and share != "/" and path.startswith(share):
            path = path[len(share) :]
        path = normalize(path)
        cached = (environ or {}).get("hfdav.nodes", {}).get(path)
        if cached is not None:
            return cached.id
        node = self._repo.get(path)
        return node.id if node else None

    @staticmethod
    def _forget(environ) -> None:
        if environ is not None:
            environ.pop(_CACHE_KEY, None)
