"""The tree: nodes, versions, extents and paths (lookups, mkdir, put, delete, move, copy)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, literal, select, update
from sqlalchemy import exc as sa_exc

from gateway.errors import AlreadyExists, Conflict, HfdavError, NotFound
from gateway.meta import db
from gateway.meta import versions as file_versions
from gateway.meta.base import (
    NODE_COLS,
    PHYSICAL_EXTENT_COLS,
    RepositoryBase,
    inserted_id,
    node_of,
    node_select,
    physical_extent,
    split_path,
    to_node,
)
from gateway.meta.records import NO_CHECKSUMS, Checksums, Extent, NewObject, Node, ObjectState, version_etag
from gateway.meta.schema import extents, nodes, objects, properties, versions

log = logging.getLogger(__name__)

# Statements of the per-request paths, built once: building a statement costs SQLAlchemy more
# CPU than SQLite needs to run it (the compiled form is cached either way). Bind parameters are
# named b_* (a name equal to a column's is reserved in VALUES and SET clauses).
_NODE_BY_PATH = node_select().where(nodes.c.path == bindparam("b_path"))
_NODE_BY_PATH_LOCKED = _NODE_BY_PATH.with_for_update(of=nodes)
_NODES_BY_PATHS = node_select().where(nodes.c.path.in_(bindparam("b_paths", expanding=True)))
_NODE_WITH_EXTENTS = (
    select(*NODE_COLS, *PHYSICAL_EXTENT_COLS)
    .select_from(
        nodes.outerjoin(versions, versions.c.id == nodes.c.version_id)
        .outerjoin(extents, extents.c.version_id == nodes.c.version_id)
        .outerjoin(objects, objects.c.id == extents.c.object_id)
    )
    .where(nodes.c.path == bindparam("b_path"))
    .order_by(extents.c.seq)
)
_INSERT_NODE = insert(nodes)
_INSERT_VERSION = insert(versions)
_INSERT_EXTENTS = insert(extents)
_TOUCH = update(nodes).where(nodes.c.id == bindparam("b_id")).values(modified_at=bindparam("b_now"))
_SET_VERSION = (
    update(nodes)
    .where(nodes.c.id == bindparam("b_id"))
    .values(version_id=bindparam("b_vid"), modified_at=bindparam("b_mtime"))
)
_SET_VERSION_AND_TYPE = _SET_VERSION.values(content_type=bindparam("b_type"))
_ADD_REFS = (
    update(objects)
    .where(objects.c.id == bindparam("b_oid"))
    .values(refcount=objects.c.refcount + bindparam("b_n"), orphaned_at=None)
)
_DROP_REFS = (
    update(objects).where(objects.c.id == bindparam("b_oid")).values(refcount=objects.c.refcount - bindparam("b_n"))
)
_STAMP_ORPHAN = (
    update(objects)
    .where(and_(objects.c.id == bindparam("b_oid"), objects.c.refcount <= 0, objects.c.orphaned_at.is_(None)))
    .values(orphaned_at=bindparam("b_now"))
)
_EXTENT_COUNTS = (
    select(extents.c.object_id, func.count())
    .where(extents.c.version_id.in_(bindparam("b_vids", expanding=True)))
    .group_by(extents.c.object_id)
    .order_by(extents.c.object_id)
)
_DELETE_EXTENTS = delete(extents).where(extents.c.version_id.in_(bindparam("b_vids", expanding=True)))
_DELETE_VERSIONS = delete(versions).where(versions.c.id.in_(bindparam("b_vids", expanding=True)))


def _checksum_fields(sums: Checksums) -> dict[str, str]:
    """The journal fields of known checksums (absent ones are left out)."""
    return {k: v for k, v in (("md5", sums.md5), ("sha1", sums.sha1)) if v}


class TreeMixin(RepositoryBase):
    """Reads and writes of the file tree."""

    if TYPE_CHECKING:  # provided by the consistency part

        def register_strays(self, found: Sequence[NewObject], *, state: str) -> None: ...

    # ------------------------------------------------------------------ lookups
    def get(self, path: str) -> Node | None:
        with self._read_one() as c:
            row = c.execute(_NODE_BY_PATH, {"b_path": path}).first()
            return to_node(row) if row else None

    def get_many(self, paths: Sequence[str]) -> dict[str, Node]:
        """The nodes at ``paths`` that exist, by path, in one query (a path and its parent)."""
        with self._read_one() as c:
            rows = c.execute(_NODES_BY_PATHS, {"b_paths": list(paths)})
            return {n.path: n for n in map(to_node, rows)}

    def get_with_extents(self, path: str) -> tuple[Node, list[Extent]] | None:
        """The node at ``path`` and its current version's physical extents, in one statement
        (so both belong to the same version even on PostgreSQL's READ COMMITTED)."""
        with self._read_one() as c:
            rows = c.execute(_NODE_WITH_EXTENTS, {"b_path": path}).all()
        if not rows:
            return None
        return to_node(rows[0]), [physical_extent(r) for r in rows if r.file_offset is not None]

    def get_by_id(self, node_id: int) -> Node | None:
        with self._read() as c:
            row = c.execute(node_select().where(nodes.c.id == node_id)).first()
            return to_node(row) if row else None

    def children(self, node_id: int) -> list[Node]:
        """All children of a folder in one query, sorted by name."""
        with self._read() as c:
            rows = c.execute(node_select().where(nodes.c.parent_id == node_id).order_by(nodes.c.name))
            return [to_node(r) for r in rows]

    def children_page(self, node_id: int, *, after: str | None, limit: int) -> list[Node]:
        """At most ``limit`` children of a folder whose names sort after ``after`` (None: from
        the first), sorted by name: a listing read a page at a time, in bounded memory."""
        stmt = node_select().where(nodes.c.parent_id == node_id)
        if after is not None:
            stmt = stmt.where(nodes.c.name > after)
        with self._read_one() as c:
            rows = c.execute(stmt.order_by(nodes.c.name).limit(limit)).all()
        return [node_of(*r) for r in rows]

    def extents(self, version_id: int, *, physical: bool = True) -> list[Extent]:
        """The extents of a version in file order. ``physical``: where the bytes are stored,
        i.e. a packed object's extent names its pack and the offset inside the pack."""
        with self._read() as c:
            if not physical:
                rows = c.execute(
                    select(extents.c.file_offset, extents.c.object_id, extents.c.object_offset, extents.c.length)
                    .where(extents.c.version_id == version_id)
                    .order_by(extents.c.seq)
                )
                return [Extent(*r) for r in rows]
            rows = c.execute(
                select(*PHYSICAL_EXTENT_COLS)
                .select_from(extents.outerjoin(objects, objects.c.id == extents.c.object_id))
                .where(extents.c.version_id == version_id)
                .order_by(extents.c.seq)
            )
            return [physical_extent(r) for r in rows]

    def used_bytes(self) -> int:
        """Bytes of all current file versions (what the user sees, before dedup)."""
        with self._read() as c:
            total = c.execute(
                select(func.coalesce(func.sum(versions.c.size), 0)).select_from(
                    nodes.join(versions, versions.c.id == nodes.c.version_id)
                )
            ).scalar()
            return int(total or 0)

    def stored_bytes(self) -> int:
        """Bytes of all live objects (after dedup)."""
        with self._read() as c:
            return int(c.execute(select(func.coalesce(func.sum(objects.c.size), 0))).scalar() or 0)

    def walk(self, path: str) -> list[Node]:
        """The node at ``path`` and everything below it, parents before children."""
        with self._read() as c:
            rows = c.execute(node_select().where(self._subtree(path)).order_by(nodes.c.path))
            return [to_node(r) for r in rows]

    def count_subtree(self, path: str, limit: int) -> int:
        """Nodes at ``path`` and below it, counted up to ``limit + 1`` at most (a bounded scan)."""
        with self._read() as c:
            found = select(nodes.c.id).where(self._subtree(path)).limit(limit + 1).subquery()
            return int(c.execute(select(func.count()).select_from(found)).scalar_one())

    def count_nodes(self) -> int:
        with self._read() as c:
            return int(c.execute(select(func.count()).select_from(nodes)).scalar_one())

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _subtree(path: str):
        """SQL condition: the node at ``path`` or below it. Collation-independent."""
        if path == "":
            return literal(True)
        prefix = path + "/"
        return (nodes.c.path == path) | (func.substr(nodes.c.path, 1, len(prefix)) == prefix)

    def _node_in(self, c: Connection, path: str, *, lock: bool = False) -> Node | None:
        """``lock``: take a row lock (PostgreSQL) so concurrent writers of the same node
        serialize; SQLite write transactions are serialized already."""
        stmt = _NODE_BY_PATH_LOCKED if lock and not self._is_sqlite else _NODE_BY_PATH
        row = c.execute(stmt, {"b_path": path}).first()
        return to_node(row) if row else None

    def _existing(self, c: Connection, path: str) -> Node:
        """The node at ``path``, which the transaction knows to exist (it made it or checked it)."""
        node = self._node_in(c, path)
        assert node is not None, path
        return node

    def _node_and_parent_in(self, c: Connection, path: str) -> tuple[Node | None, Node | None]:
        """The nodes at ``path`` and at its parent. SQLite: one query (its write transactions
        are serialized already); PostgreSQL: the node's row lock first, then the parent's, as
        :meth:`_node_in` and :meth:`_parent_dir` take them."""
        parent_path, _ = split_path(path)
        if not self._is_sqlite:
            node = self._node_in(c, path, lock=True)
            return node, (None if node is not None else self._node_in(c, parent_path, lock=True))
        found = {n.path: n for n in map(to_node, c.execute(_NODES_BY_PATHS, {"b_paths": [path, parent_path]}))}
        return found.get(path), found.get(parent_path)

    def _parent_dir(self, c: Connection, path: str, parent: Node | None = None) -> Node:
        if parent is None:
            parent = self._node_in(c, split_path(path)[0], lock=True)
        if parent is None:
            raise Conflict(f"parent folder of {path!r} does not exist")
        if not parent.is_dir:
            raise Conflict(f"parent of {path!r} is a file")
        return parent

    def _touch(self, c: Connection, node_id: int, now: float) -> None:
        c.execute(_TOUCH, {"b_id": node_id, "b_now": now})

    def _add_refs(self, c: Connection, counts: dict[str, int]) -> None:
        for oid, n in sorted(counts.items()):  # id order: concurrent writers lock rows alike
            c.execute(_ADD_REFS, {"b_oid": oid, "b_n": n})

    def _release_versions(self, c: Connection, version_ids: Sequence[int], now: float) -> None:
        """Drop versions and their extents; decrement refcounts, stamping new orphans."""
        if not version_ids:
            return
        for start in range(0, len(version_ids), 500):
            batch = {"b_vids": list(version_ids[start : start + 500])}
            counts = c.execute(_EXTENT_COUNTS, batch).all()
            for oid, n in counts:
                c.execute(_DROP_REFS, {"b_oid": oid, "b_n": n})
                c.execute(_STAMP_ORPHAN, {"b_oid": oid, "b_now": now})
            c.execute(_DELETE_EXTENTS, batch)
            c.execute(_DELETE_VERSIONS, batch)

    def _insert_version(
        self, c: Connection, node_id: int, parts: Sequence[Extent], now: float, sums: Checksums = NO_CHECKSUMS
    ) -> int:
        size = sum(p.length for p in parts)
        etag = version_etag((p.object_id, p.object_offset, p.length) for p in parts)
        vid = inserted_id(
            c.execute(
                _INSERT_VERSION,
                {"node_id": node_id, "size": size, "etag": etag, "created_at": now, "md5": sums.md5, "sha1": sums.sha1},
            )
        )
        if parts:
            c.execute(
                _INSERT_EXTENTS,
                [
                    dict(
                        version_id=vid,
                        seq=i,
                        file_offset=p.file_offset,
                        object_id=p.object_id,
                        object_offset=p.object_offset,
                        length=p.length,
                    )
                    for i, p in enumerate(parts)
                ],
            )
        counts: dict[str, int] = {}
        for p in parts:
            counts[p.object_id] = counts.get(p.object_id, 0) + 1
        self._add_refs(c, counts)
        return vid

    def _register_objects(self, c: Connection, new_objects: Iterable[NewObject], state: str, now: float) -> None:
        for obj in sorted(new_objects, key=lambda o: o.id):
            c.execute(
                self._register_object,
                {"id": obj.id, "size": obj.size, "state": state, "refcount": 0, "created_at": now, "orphaned_at": now},
            )

    @property
    def _register_object(self):
        """The upsert of a new object (built once per repository: it depends on the dialect).
        An id being collected ("deleting") is revived: the writer stored its bytes again."""
        stmt = getattr(self, "_register_object_stmt", None)
        if stmt is None:
            ins = self._upsert(objects)
            stmt = self._register_object_stmt = ins.on_conflict_do_update(
                index_elements=["id"], set_={"state": ins.excluded.state}, where=objects.c.state == ObjectState.DELETING
            )
        return stmt

    # ------------------------------------------------------------------ writes
    @db.retrying
    def mkdir(self, path: str, *, mtime: float | None = None) -> Node:
        now = self._clock()
        mtime = now if mtime is None else mtime
        with self._write() as c:
            parent = self._parent_dir(c, path)
            if self._node_in(c, path) is not None:
                raise AlreadyExists(path)
            _, name = split_path(path)
            c.execute(
                insert(nodes).values(
                    parent_id=parent.id, name=name, path=path, is_dir=True, created_at=now, modified_at=mtime
                )
            )
            self._touch(c, parent.id, now)
            self._journal(c, "mkdir", at=now, path=path, mtime=mtime)
            return self._existing(c, path)

    def put_version(
        self,
        path: str,
        parts: Sequence[Extent],
        *,
        new_objects: Sequence[NewObject] = (),
        object_state: str = ObjectState.COMMITTED,
        content_type: str | None = None,
        mtime: float | None = None,
        checksums: Checksums = NO_CHECKSUMS,
        create_only: bool = False,
        keep_versions: int | None = None,
    ) -> Node:
        """Make ``parts`` the current content of the file at ``path``, in one transaction.

        Creates the file if needed (the parent must exist). The previous version, if any, is
        released, or kept as an earlier version (``keep_versions``, None: the repository's
        ``keep_versions``; see :mod:`gateway.meta.versions`). ``new_objects`` are registered
        first (existing ids are kept: dedup).
        ``mtime``: the modification time the client set (None: now); ``checksums``: digests of
        the content, stored with the version.
        Raises Conflict if ``path`` is a folder, AlreadyExists with ``create_only`` if it exists.
        Two writers creating the same new file race on the unique path; the loser retries once
        and then overwrites, as if it had come second (last writer wins, like an overwrite).
        When the version cannot be made (the parent folder went away meanwhile, ...), the
        ``new_objects`` the caller stored are recorded as orphans, so that the collector removes
        them instead of leaving bytes the database does not know.
        """
        try:
            for attempt in range(3):
                try:
                    return self._put_version(
                        path,
                        parts,
                        new_objects,
                        object_state,
                        content_type,
                        mtime,
                        checksums,
                        create_only,
                        self.keep_versions if keep_versions is None else keep_versions,
                    )
                except AlreadyExists:
                    if create_only or attempt == 2:
                        raise
            raise AssertionError("unreachable")
        except HfdavError:
            if new_objects:
                try:
                    self.register_strays(new_objects, state=object_state)
                except (HfdavError, sa_exc.DBAPIError) as exc:  # fsck finds them as strays then
                    log.warning("could not record %d orphaned objects: %s", len(new_objects), exc)
            raise

    @db.retrying
    def _put_version(
        self, path, parts, new_objects, object_state, content_type, mtime, checksums, create_only, keep=0
    ) -> Node:
        now = self._clock()
        mtime = now if mtime is None else mtime
        with self._write() as c:
            node, parent = self._node_and_parent_in(c, path)
            if node is not None and node.is_dir:
                raise Conflict(f"{path!r} is a folder")
            if node is not None and create_only:
                raise AlreadyExists(path)
            if node is None:
                parent = self._parent_dir(c, path, parent)
                _, name = split_path(path)
                node_id = inserted_id(
                    c.execute(
                        _INSERT_NODE,
                        {
                            "parent_id": parent.id,
                            "name": name,
                            "path": path,
                            "is_dir": False,
                            "created_at": now,
                            "modified_at": mtime,
                            "content_type": content_type,
                        },
                    )
                )
                self._touch(c, parent.id, now)
                result = Node(node_id, parent.id, name, path, False, now, mtime, content_type, None, 0, None)
            else:
                node_id = node.id
                result = replace(node, content_type=content_type or node.content_type)
            self._register_objects(c, new_objects, object_state, now)  # objects after nodes
            vid = self._insert_version(c, node_id, parts, now, checksums)
            if content_type:
                params = {"b_id": node_id, "b_vid": vid, "b_mtime": mtime, "b_type": content_type}
                c.execute(_SET_VERSION_AND_TYPE, params)
            else:
                c.execute(_SET_VERSION, {"b_id": node_id, "b_vid": vid, "b_mtime": mtime})
            if node is not None and node.version_id is not None:
                file_versions.keep_or_release(self, c, node_id, node.version_id, keep, now)
            self._journal(
                c,
                "put",
                at=now,
                path=path,
                mtime=mtime,
                content_type=content_type,
                extents=[[p.object_id, p.object_offset, p.length] for p in parts],
                **_checksum_fields(checksums),
                **({"keep": keep} if keep else {}),
            )
            # what a read of the row would give, without the read
            return replace(
                result,
                modified_at=mtime,
                version_id=vid,
                size=sum(p.length for p in parts),
                etag=version_etag((p.object_id, p.object_offset, p.length) for p in parts),
                checksums=Checksums(checksums.md5, checksums.sha1),
            )

    @db.retrying
    def delete(self, path: str, *, empty_only: bool = False) -> list[Node]:
        """Remove the node at ``path`` and its subtree; returns the removed nodes.
        ``empty_only``: only a file or an empty folder (Conflict otherwise, in the same
        transaction: a member added meanwhile is never removed with it)."""
        if path == "":
            raise Conflict("the root folder cannot be deleted")
        now = self._clock()
        with self._write() as c:
            self._node_in(c, split_path(path)[0], lock=True)  # the parent first: it is touched
            stmt = node_select().where(self._subtree(path)).order_by(nodes.c.path)
            if not self._is_sqlite:
                stmt = stmt.with_for_update(of=nodes)
            rows = c.execute(stmt).all()
            if not rows:
                raise NotFound(path)
            if empty_only and len(rows) > 1:
                raise Conflict(f"{path!r} is not empty")
            removed = [to_node(r) for r in rows]
            vids = [n.version_id for n in removed if n.version_id is not None]
            ids = [n.id for n in removed]
            top = next(n for n in removed if n.path == path)
            for start in range(0, len(ids), 500):
                batch = ids[start : start + 500]
                c.execute(delete(properties).where(properties.c.node_id.in_(batch)))
            self._release_versions(c, vids, now)
            file_versions.release_all(self, c, ids, now)
            c.execute(delete(nodes).where(self._subtree(path)))
            assert top.parent_id is not None  # not the root
            self._touch(c, top.parent_id, now)
            self._journal(c, "delete", at=now, path=path)
            return removed

    @db.retrying
    def move(self, src: str, dst: str) -> Node:
        """Rename ``src`` (and its subtree) to ``dst``; metadata only. ``dst`` must not exist."""
        if dst == src or dst.startswith(src + "/"):
            raise Conflict("cannot move a folder into itself")
        now = self._clock()
        with self._write() as c:
            if not self._is_sqlite:  # every row this changes, in path order (see the module doc)
                parents = nodes.c.path.in_([split_path(src)[0], split_path(dst)[0]])
                c.execute(
                    select(nodes.c.id).where(parents | self._subtree(src)).order_by(nodes.c.path).with_for_update()
                ).all()
            node = self._node_in(c, src)
            if node is None:
                raise NotFound(src)
            if self._node_in(c, dst) is not None:
                raise AlreadyExists(dst)
            parent = self._parent_dir(c, dst)
            _, name = split_path(dst)
            if node.is_dir:
                prefix = src + "/"
                c.execute(
                    update(nodes)
                    .where(func.substr(nodes.c.path, 1, len(prefix)) == prefix)
                    .values(path=dst + "/" + func.substr(nodes.c.path, len(prefix) + 1))
                )
            c.execute(update(nodes).where(nodes.c.id == node.id).values(parent_id=parent.id, name=name, path=dst))
            self._touch(c, parent.id, now)
            if node.parent_id is not None and node.parent_id != parent.id:
                self._touch(c, node.parent_id, now)
            self._journal(c, "move", at=now, src=src, dst=dst)
            return self._existing(c, dst)

    @db.retrying
    def copy(self, src: str, dst: str, *, recursive: bool = True) -> Node:
        """Copy ``src`` to ``dst`` (absent); files share the objects (refcounts go up)."""
        if dst == src or dst.startswith(src + "/"):
            raise Conflict("cannot copy a folder into itself")
        now = self._clock()
        with self._write() as c:
            top = self._node_in(c, src)
            if top is None:
                raise NotFound(src)
            if self._node_in(c, dst) is not None:
                raise AlreadyExists(dst)
            self._parent_dir(c, dst)
            if top.is_dir and recursive:
                subtree = [
                    to_node(r) for r in c.execute(node_select().where(self._subtree(src)).order_by(nodes.c.path))
                ]
            else:
                subtree = [top]
            new_ids: dict[int, int] = {}
            for n in subtree:
                new_path = dst + n.path[len(src) :]
                parent_path, name = split_path(new_path)
                if n.id == top.id:  # the subtree's rows are other objects than ``top``
                    parent_id = self._existing(c, parent_path).id
                else:
                    assert n.parent_id is not None  # below top
                    parent_id = new_ids[n.parent_id]
                nid = inserted_id(
                    c.execute(
                        insert(nodes).values(
                            parent_id=parent_id,
                            name=name,
                            path=new_path,
                            is_dir=n.is_dir,
                            created_at=now,
                            modified_at=n.modified_at,
                            content_type=n.content_type,
                        )
                    )
                )
                new_ids[n.id] = nid
                if n.version_id is not None:
                    parts = [
                        Extent(*r)
                        for r in c.execute(
                            select(
                                extents.c.file_offset, extents.c.object_id, extents.c.object_offset, extents.c.length
                            )
                            .where(extents.c.version_id == n.version_id)
                            .order_by(extents.c.seq)
                        )
                    ]
                    vid = self._insert_version(c, nid, parts, now, n.checksums)
                    c.execute(update(nodes).where(nodes.c.id == nid).values(version_id=vid))
                props = c.execute(
                    select(properties.c.name, properties.c.value).where(properties.c.node_id == n.id)
                ).all()
                if props:
                    c.execute(insert(properties), [dict(node_id=nid, name=k, value=v) for k, v in props])
            self._journal(c, "copy", at=now, src=src, dst=dst, recursive=recursive)
            return self._existing(c, dst)

    @db.retrying
    def set_mtime(self, path: str, mtime: float) -> None:
        with self._write() as c:
            if c.execute(update(nodes).where(nodes.c.path == path).values(modified_at=mtime)).rowcount == 0:
                raise NotFound(path)
            self._journal(c, "mtime", path=path, mtime=mtime)
