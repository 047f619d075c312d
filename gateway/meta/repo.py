"""MetadataRepository: every query hfdav runs. Returns frozen dataclasses, never rows.

Paths given to this module are normalized by the caller (:func:`gateway.paths.normalize`):
``/a/b`` style, no trailing slash, ``""`` for the root.

Write transactions take the database's write lock up front (SQLite ``BEGIN IMMEDIATE``), so
two writers never deadlock on a lock upgrade; reads never block writers (WAL). With PostgreSQL,
writers take row locks in path order (parents before children), objects after nodes and in id
order; a transaction that still loses a race (deadlock, serialization failure) runs again: every
method holding one write transaction is decorated with :func:`gateway.meta.db.retrying`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

from sqlalchemy import Connection, Engine, and_, bindparam, delete, func, insert, literal, select, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gateway.errors import AlreadyExists, Conflict, HfdavError, InsufficientStorage, NotFound
from gateway.meta import db
from gateway.meta.schema import (
    ROOT_ID,
    extents,
    hub_deletes,
    journal,
    locks,
    nodes,
    objects,
    properties,
    settings_kv,
    versions,
)

log = logging.getLogger(__name__)

#: Seconds a failed write keeps the database health check failing (unless a write succeeds).
WRITE_ERROR_WINDOW_S = 60


@dataclass(frozen=True)
class Checksums:
    """Hex digests of a file's content, as sync clients compare them (None: not known)."""

    md5: str | None = None
    sha1: str | None = None


NO_CHECKSUMS = Checksums()


@dataclass(frozen=True)
class Node:
    """A file or folder as the file service sees it."""

    id: int
    parent_id: int | None
    name: str
    path: str
    is_dir: bool
    created_at: float
    modified_at: float
    content_type: str | None
    version_id: int | None
    size: int
    etag: str | None
    #: digests of the content (files written before checksums were kept have none)
    checksums: Checksums = NO_CHECKSUMS


@dataclass(frozen=True)
class Extent:
    """``length`` bytes of a file starting at ``file_offset``, found at ``object_offset`` in an object."""

    file_offset: int
    object_id: str
    object_offset: int
    length: int


@dataclass(frozen=True)
class NewObject:
    """An object a write created; registered (or its refcount bumped) with the version."""

    id: str
    size: int


@dataclass(frozen=True)
class ObjectRow:
    id: str
    size: int
    state: str
    refcount: int
    orphaned_at: float | None
    pack_id: str | None = None
    pack_offset: int | None = None
    is_pack: bool = False


_OBJ_COLS = (
    objects.c.id,
    objects.c.size,
    objects.c.state,
    objects.c.refcount,
    objects.c.orphaned_at,
    objects.c.pack_id,
    objects.c.pack_offset,
    objects.c.is_pack,
)


@dataclass(frozen=True)
class LockRow:
    token: str
    root: str
    depth: str
    scope: str
    type: str
    owner: str
    principal: str | None
    timeout: float
    expire: float


_LOCK_COLS = (
    locks.c.token,
    locks.c.root,
    locks.c.depth,
    locks.c.scope,
    locks.c.type,
    locks.c.owner,
    locks.c.principal,
    locks.c.timeout,
    locks.c.expire,
)

#: PostgreSQL advisory lock key held by the transaction that grants a lock.
_LOCKS_TX_KEY = 0x68666461760002  # "hfdav" 2


class LockLimitReached(HfdavError):
    """Granting one more lock would pass the limit on locks (in total or per user)."""


def lock_parent(root: str) -> str:
    """The folder holding lock root ``root``: ``/a`` for ``/a/b``, ``/`` for ``/a``, ``""`` for ``/``."""
    if root == "/":
        return ""
    return root.rsplit("/", 1)[0] or "/"


def lock_ancestors(root: str) -> list[str]:
    """``root`` and every folder above it: ``/a/b`` → ``["/a/b", "/a", "/"]``."""
    out = [root]
    while root != "/":
        root = lock_parent(root)
        out.append(root)
    return out


def _lock_subtree(root: str):
    """SQL condition: a lock rooted at ``root`` or below it. Below is the byte-wise range
    ``root/`` … ``root0`` (``0`` follows ``/``), which the index on ``locks.root`` answers."""
    if root == "/":
        return literal(True)
    return (locks.c.root == root) | and_(locks.c.root >= root + "/", locks.c.root < root + "0")


def version_etag(parts: Iterable[tuple[str, int, int]]) -> str:
    """Strong etag of a content made of ``(object_id, offset, length)`` parts.

    Object ids are content hashes, so equal content written the same way gives the same etag,
    and a rebuild from the repo reproduces it.
    """
    h = hashlib.blake2b(digest_size=16)
    for oid, off, length in parts:
        h.update(f"{oid}:{off}:{length};".encode())
    return h.hexdigest()


EMPTY_ETAG = version_etag([])

_NODE_COLS = (
    nodes.c.id,
    nodes.c.parent_id,
    nodes.c.name,
    nodes.c.path,
    nodes.c.is_dir,
    nodes.c.created_at,
    nodes.c.modified_at,
    nodes.c.content_type,
    nodes.c.version_id,
    versions.c.size,
    versions.c.etag,
    versions.c.md5,
    versions.c.sha1,
)


#: An extent with where its object lives (its pack, if packed): read with an outer join on objects.
_PHYSICAL_EXTENT_COLS = (
    extents.c.file_offset,
    extents.c.object_id,
    extents.c.object_offset,
    extents.c.length,
    objects.c.pack_id,
    objects.c.pack_offset,
)


def _physical_extent(row) -> Extent:
    """Where the bytes of an extent row (``_PHYSICAL_EXTENT_COLS``) are stored."""
    if row.pack_id:
        return Extent(row.file_offset, row.pack_id, row.object_offset + row.pack_offset, row.length)
    return Extent(row.file_offset, row.object_id, row.object_offset, row.length)


def _node_select():
    return select(*_NODE_COLS).select_from(nodes.outerjoin(versions, versions.c.id == nodes.c.version_id))


def _node_of(id, parent_id, name, path, is_dir, created_at, modified_at, content_type, version_id, size, etag, md5,
             sha1) -> Node:  # fmt: skip
    """:func:`_to_node` of a row's values (``_NODE_COLS``, in order): for rows read in bulk."""
    return Node(id, parent_id, name, path, bool(is_dir), created_at, modified_at, content_type, version_id, size or 0,
                etag, Checksums(md5, sha1))  # fmt: skip


def _to_node(row) -> Node:
    return Node(
        id=row.id,
        parent_id=row.parent_id,
        name=row.name,
        path=row.path,
        is_dir=bool(row.is_dir),
        created_at=row.created_at,
        modified_at=row.modified_at,
        content_type=row.content_type,
        version_id=row.version_id,
        size=row.size or 0,
        etag=row.etag,
        checksums=Checksums(row.md5, row.sha1),
    )


# Statements of the per-request paths, built once: building a statement costs SQLAlchemy more
# CPU than SQLite needs to run it (the compiled form is cached either way). Bind parameters are
# named b_* (a name equal to a column's is reserved in VALUES and SET clauses).
_NODE_BY_PATH = _node_select().where(nodes.c.path == bindparam("b_path"))
_NODE_BY_PATH_LOCKED = _NODE_BY_PATH.with_for_update(of=nodes)
_NODES_BY_PATHS = _node_select().where(nodes.c.path.in_(bindparam("b_paths", expanding=True)))
_NODE_WITH_EXTENTS = (
    select(*_NODE_COLS, *_PHYSICAL_EXTENT_COLS)
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
_INSERT_JOURNAL = insert(journal)
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
    update(objects)
    .where(objects.c.id == bindparam("b_oid"))
    .values(refcount=objects.c.refcount - bindparam("b_n"))
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
_OBJECT_BY_ID = select(*_OBJ_COLS).where(objects.c.id == bindparam("b_oid"))
_LOCKS_NEAR = select(*_LOCK_COLS).where(
    and_(
        locks.c.root.in_(bindparam("b_roots", expanding=True))
        | (locks.c.parent == bindparam("b_path"))
        | (locks.c.parent == bindparam("b_parent")),
        locks.c.expire >= bindparam("b_now"),
    )
)


def _checksum_fields(sums: Checksums) -> dict[str, str]:
    """The journal fields of known checksums (absent ones are left out)."""
    return {k: v for k, v in (("md5", sums.md5), ("sha1", sums.sha1)) if v}


#: SQLite's SQLITE_FULL, PostgreSQL's disk_full SQLSTATE.
_SQLITE_FULL = 13
_PG_DISK_FULL = "53100"


def _database_full(orig: BaseException | None) -> bool:
    """Whether a driver error says the database's disk is full (nothing was written)."""
    return (
        getattr(orig, "sqlite_errorcode", None) == _SQLITE_FULL
        or getattr(orig, "sqlstate", None) == _PG_DISK_FULL
        or "database or disk is full" in str(orig)
    )


def split_path(path: str) -> tuple[str, str]:
    """``/a/b`` → (``/a``, ``b``); ``/a`` → (``""``, ``a``)."""
    parent, _, name = path.rpartition("/")
    return parent, name


class MetadataRepository:
    """All metadata reads and writes. Thread-safe; one instance per process.

    ``journal_enabled``: every change also appends a JSON record to the ``journal`` table in
    the same transaction (the remote store commits them with the data; see FORMAT.md).
    """

    def __init__(self, engine: Engine, *, journal_enabled: bool = False, clock=time.time):
        self.engine = engine
        self.journal_enabled = journal_enabled
        self._clock = clock
        self._is_sqlite = engine.dialect.name == "sqlite"
        #: ``(when, error)`` of the newest write transaction that failed at the database (not one
        #: that failed for a reason of the tree, e.g. NotFound); None once a write succeeds again.
        self.last_write_error: tuple[float, str] | None = None

    # ------------------------------------------------------------------ set-up
    @classmethod
    def open(cls, url: str, **kwargs) -> MetadataRepository:
        engine = db.make_engine(url)
        repo = cls(engine, **kwargs)
        with db.setup_lock(engine):
            db.migrate(engine)
            repo.ensure_root()
        return repo

    def close(self) -> None:
        self.engine.dispose()

    @db.retrying
    def ensure_root(self) -> None:
        with self._write() as c:
            if c.execute(select(nodes.c.id).where(nodes.c.id == ROOT_ID)).first() is None:
                now = self._clock()
                # no explicit id: PostgreSQL's sequence must hand out ROOT_ID itself, or the next
                # insert would collide with the root
                root_id = c.execute(
                    insert(nodes).values(parent_id=None, name="", path="", is_dir=True, created_at=now, modified_at=now)
                ).inserted_primary_key[0]
                if root_id != ROOT_ID:
                    raise RuntimeError(f"root folder got id {root_id}, expected {ROOT_ID}: database not empty?")

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as c:
            yield c
            c.rollback()

    @contextmanager
    def _read_one(self) -> Iterator[Connection]:
        """A read of one statement (SQLite: without BEGIN and ROLLBACK, see db.SINGLE_STATEMENT)."""
        with self.engine.connect() as c:
            if self._is_sqlite:
                c = c.execution_options(sqlite_begin=db.SINGLE_STATEMENT)
            yield c
            c.rollback()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        conn = self.engine.connect()
        if self._is_sqlite:
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        try:
            with conn.begin():
                yield conn
        except sa_exc.IntegrityError as exc:
            raise AlreadyExists(str(exc.orig)) from exc
        except sa_exc.DBAPIError as exc:
            self.last_write_error = (time.monotonic(), f"{type(exc.orig).__name__}: {exc.orig}")
            if isinstance(exc, sa_exc.OperationalError) and _database_full(exc.orig):
                raise InsufficientStorage(f"the metadata database cannot grow: {exc.orig}") from exc
            raise
        else:
            self.last_write_error = None
        finally:
            conn.close()

    def health(self) -> dict:
        """The database check of ``/healthz``: ok when the root folder reads, a write
        transaction can write now (:meth:`probe_write`; a write lock held by another writer for
        more than :data:`~gateway.meta.db.PROBE_WAIT_MS` is reported as ``busy``, not as a
        failure), and no real write failed in the last :data:`WRITE_ERROR_WINDOW_S` seconds
        without one succeeding since (a failure at commit, e.g. a full disk, is seen only by
        real writes)."""
        report: dict = {"ok": self.get("") is not None}
        try:
            self.probe_write()
        except sa_exc.DBAPIError as exc:
            if db.is_busy(exc):
                report["write_probe"] = "busy"
            else:
                report.update(ok=False, write_probe=str(exc.orig))
        except db.DatabaseBusy as exc:
            report.update(ok=False, write_probe=str(exc))
        last = self.last_write_error
        if last is not None and time.monotonic() - last[0] < WRITE_ERROR_WINDOW_S:
            report.update(ok=False, last_write_error=last[1])
        return report

    @db.retrying
    def probe_write(self) -> None:
        """Raise unless a write transaction can write now. The probe's change is rolled back
        (nothing lands in the database, a backup sees no change); it waits for another writer
        at most :data:`~gateway.meta.db.PROBE_WAIT_MS`."""
        with self.engine.connect() as conn, db.short_lock_wait(conn):
            if self._is_sqlite:
                conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin() as tx:
                if not self._is_sqlite:
                    conn.execute(text(f"SET LOCAL lock_timeout = {db.PROBE_WAIT_MS}"))
                stmt = self._upsert(settings_kv).values(key="health-probe", value=str(self._clock()))
                conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": stmt.excluded.value}))
                tx.rollback()

    def _upsert(self, table):
        return (pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert)(table)

    # ------------------------------------------------------------------ key/value settings
    def get_setting(self, key: str) -> str | None:
        with self._read() as c:
            return c.execute(select(settings_kv.c.value).where(settings_kv.c.key == key)).scalar()

    @db.retrying
    def set_setting(self, key: str, value: str) -> None:
        with self._write() as c:
            stmt = self._upsert(settings_kv).values(key=key, value=value)
            c.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": value}))

    # ------------------------------------------------------------------ lookups
    def get(self, path: str) -> Node | None:
        with self._read_one() as c:
            row = c.execute(_NODE_BY_PATH, {"b_path": path}).first()
            return _to_node(row) if row else None

    def get_many(self, paths: Sequence[str]) -> dict[str, Node]:
        """The nodes at ``paths`` that exist, by path, in one query (a path and its parent)."""
        with self._read_one() as c:
            rows = c.execute(_NODES_BY_PATHS, {"b_paths": list(paths)})
            return {n.path: n for n in map(_to_node, rows)}

    def get_with_extents(self, path: str) -> tuple[Node, list[Extent]] | None:
        """The node at ``path`` and its current version's physical extents, in one statement
        (so both belong to the same version even on PostgreSQL's READ COMMITTED)."""
        with self._read_one() as c:
            rows = c.execute(_NODE_WITH_EXTENTS, {"b_path": path}).all()
        if not rows:
            return None
        return _to_node(rows[0]), [_physical_extent(r) for r in rows if r.file_offset is not None]

    def get_by_id(self, node_id: int) -> Node | None:
        with self._read() as c:
            row = c.execute(_node_select().where(nodes.c.id == node_id)).first()
            return _to_node(row) if row else None

    def children(self, node_id: int) -> list[Node]:
        """All children of a folder in one query, sorted by name."""
        with self._read() as c:
            rows = c.execute(_node_select().where(nodes.c.parent_id == node_id).order_by(nodes.c.name))
            return [_to_node(r) for r in rows]

    def children_page(self, node_id: int, *, after: str | None, limit: int) -> list[Node]:
        """At most ``limit`` children of a folder whose names sort after ``after`` (None: from
        the first), sorted by name: a listing read a page at a time, in bounded memory."""
        stmt = _node_select().where(nodes.c.parent_id == node_id)
        if after is not None:
            stmt = stmt.where(nodes.c.name > after)
        with self._read_one() as c:
            rows = c.execute(stmt.order_by(nodes.c.name).limit(limit)).all()
        return [_node_of(*r) for r in rows]

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
                select(*_PHYSICAL_EXTENT_COLS)
                .select_from(extents.outerjoin(objects, objects.c.id == extents.c.object_id))
                .where(extents.c.version_id == version_id)
                .order_by(extents.c.seq)
            )
            return [_physical_extent(r) for r in rows]

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
            rows = c.execute(_node_select().where(self._subtree(path)).order_by(nodes.c.path))
            return [_to_node(r) for r in rows]

    def count_subtree(self, path: str, limit: int) -> int:
        """Nodes at ``path`` and below it, counted up to ``limit + 1`` at most (a bounded scan)."""
        with self._read() as c:
            found = select(nodes.c.id).where(self._subtree(path)).limit(limit + 1).subquery()
            return int(c.execute(select(func.count()).select_from(found)).scalar())

    def count_nodes(self) -> int:
        with self._read() as c:
            return int(c.execute(select(func.count()).select_from(nodes)).scalar())

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
        return _to_node(row) if row else None

    def _node_and_parent_in(self, c: Connection, path: str) -> tuple[Node | None, Node | None]:
        """The nodes at ``path`` and at its parent. SQLite: one query (its write transactions
        are serialized already); PostgreSQL: the node's row lock first, then the parent's, as
        :meth:`_node_in` and :meth:`_parent_dir` take them."""
        parent_path, _ = split_path(path)
        if not self._is_sqlite:
            node = self._node_in(c, path, lock=True)
            return node, (None if node is not None else self._node_in(c, parent_path, lock=True))
        found = {n.path: n for n in map(_to_node, c.execute(_NODES_BY_PATHS, {"b_paths": [path, parent_path]}))}
        return found.get(path), found.get(parent_path)

    def _parent_dir(self, c: Connection, path: str, parent: Node | None = None) -> Node:
        if parent is None:
            parent = self._node_in(c, split_path(path)[0], lock=True)
        if parent is None:
            raise Conflict(f"parent folder of {path!r} does not exist")
        if not parent.is_dir:
            raise Conflict(f"parent of {path!r} is a file")
        return parent

    def _journal(self, c: Connection, op: str, *, at: float | None = None, **fields) -> None:
        """``at``: the time the change used for its nodes (a replay reproduces them exactly)."""
        if self.journal_enabled:
            entry = json.dumps({"op": op, **fields}, separators=(",", ":"), ensure_ascii=False)
            c.execute(_INSERT_JOURNAL, {"created_at": self._clock() if at is None else at, "entry": entry})

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
        vid = c.execute(
            _INSERT_VERSION,
            {"node_id": node_id, "size": size, "etag": etag, "created_at": now, "md5": sums.md5, "sha1": sums.sha1},
        ).inserted_primary_key[0]
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
                index_elements=["id"], set_={"state": ins.excluded.state}, where=objects.c.state == "deleting"
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
            return self._node_in(c, path)

    def put_version(
        self,
        path: str,
        parts: Sequence[Extent],
        *,
        new_objects: Sequence[NewObject] = (),
        object_state: str = "committed",
        content_type: str | None = None,
        mtime: float | None = None,
        checksums: Checksums = NO_CHECKSUMS,
        create_only: bool = False,
    ) -> Node:
        """Make ``parts`` the current content of the file at ``path``, in one transaction.

        Creates the file if needed (the parent must exist). The previous version, if any, is
        released. ``new_objects`` are registered first (existing ids are kept: dedup).
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
                        path, parts, new_objects, object_state, content_type, mtime, checksums, create_only
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
        self, path, parts, new_objects, object_state, content_type, mtime, checksums, create_only
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
                node_id = c.execute(
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
                ).inserted_primary_key[0]
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
                self._release_versions(c, [node.version_id], now)
            self._journal(
                c,
                "put",
                at=now,
                path=path,
                mtime=mtime,
                content_type=content_type,
                extents=[[p.object_id, p.object_offset, p.length] for p in parts],
                **_checksum_fields(checksums),
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
            stmt = _node_select().where(self._subtree(path)).order_by(nodes.c.path)
            if not self._is_sqlite:
                stmt = stmt.with_for_update(of=nodes)
            rows = c.execute(stmt).all()
            if not rows:
                raise NotFound(path)
            if empty_only and len(rows) > 1:
                raise Conflict(f"{path!r} is not empty")
            removed = [_to_node(r) for r in rows]
            vids = [n.version_id for n in removed if n.version_id is not None]
            ids = [n.id for n in removed]
            top = next(n for n in removed if n.path == path)
            for start in range(0, len(ids), 500):
                batch = ids[start : start + 500]
                c.execute(delete(properties).where(properties.c.node_id.in_(batch)))
            self._release_versions(c, vids, now)
            c.execute(delete(nodes).where(self._subtree(path)))
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
            if node.parent_id != parent.id:
                self._touch(c, node.parent_id, now)
            self._journal(c, "move", at=now, src=src, dst=dst)
            return self._node_in(c, dst)

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
                    _to_node(r) for r in c.execute(_node_select().where(self._subtree(src)).order_by(nodes.c.path))
                ]
            else:
                subtree = [top]
            new_ids: dict[int, int] = {}
            for n in subtree:
                new_path = dst + n.path[len(src) :]
                parent_path, name = split_path(new_path)
                parent_id = new_ids.get(n.parent_id) if n is not top else self._node_in(c, parent_path).id
                nid = c.execute(
                    insert(nodes).values(
                        parent_id=parent_id,
                        name=name,
                        path=new_path,
                        is_dir=n.is_dir,
                        created_at=now,
                        modified_at=n.modified_at,
                        content_type=n.content_type,
                    )
                ).inserted_primary_key[0]
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
            return self._node_in(c, dst)

    @db.retrying
    def set_mtime(self, path: str, mtime: float) -> None:
        with self._write() as c:
            if c.execute(update(nodes).where(nodes.c.path == path).values(modified_at=mtime)).rowcount == 0:
                raise NotFound(path)
            self._journal(c, "mtime", path=path, mtime=mtime)

    # ------------------------------------------------------------------ dead properties
    def get_properties(self, node_id: int) -> dict[str, str]:
        """A node's dead properties, by name (in name order)."""
        with self._read_one() as c:
            rows = c.execute(
                select(properties.c.name, properties.c.value)
                .where(properties.c.node_id == node_id)
                .order_by(properties.c.name)
            )
            return dict(rows.all())

    def properties_of(self, node_ids: Sequence[int]) -> dict[int, dict[str, str]]:
        """Dead properties of several nodes in one query: node id -> name -> value (in name
        order, as :meth:`get_properties`); nodes without any are left out."""
        out: dict[int, dict[str, str]] = {}
        if not node_ids:
            return out
        with self._read_one() as c:
            rows = c.execute(
                select(properties.c.node_id, properties.c.name, properties.c.value)
                .where(properties.c.node_id.in_(list(node_ids)))
                .order_by(properties.c.node_id, properties.c.name)
            )
            for nid, name, value in rows:
                out.setdefault(nid, {})[name] = value
        return out

    def get_properties_of_children(self, parent_id: int) -> dict[int, dict[str, str]]:
        """Dead properties of every child of a folder, in one query (PROPFIND Depth 1)."""
        out: dict[int, dict[str, str]] = {}
        with self._read() as c:
            rows = c.execute(
                select(properties.c.node_id, properties.c.name, properties.c.value)
                .select_from(properties.join(nodes, nodes.c.id == properties.c.node_id))
                .where(nodes.c.parent_id == parent_id)
                .order_by(properties.c.node_id, properties.c.name)
            )
            for nid, name, value in rows:
                out.setdefault(nid, {})[name] = value
        return out

    @db.retrying
    def set_property(self, node_id: int, name: str, value: str) -> None:
        with self._write() as c:
            stmt = self._upsert(properties).values(node_id=node_id, name=name, value=value)
            c.execute(stmt.on_conflict_do_update(index_elements=["node_id", "name"], set_={"value": value}))

    @db.retrying
    def remove_property(self, node_id: int, name: str) -> None:
        with self._write() as c:
            c.execute(delete(properties).where(and_(properties.c.node_id == node_id, properties.c.name == name)))

    @db.retrying
    def remove_all_properties(self, node_id: int) -> None:
        with self._write() as c:
            c.execute(delete(properties).where(properties.c.node_id == node_id))

    # ------------------------------------------------------------------ locks
    # Lock roots are WsgiDAV paths ('/a/b', '/' for the share root). Every lookup is one indexed
    # query that returns only live (unexpired) locks.
    def _live_locks(self, c: Connection, cond) -> list[LockRow]:
        stmt = select(*_LOCK_COLS).where(and_(cond, locks.c.expire >= self._clock()))
        return [LockRow(*r) for r in c.execute(stmt)]

    def locks_near(self, path: str) -> list[LockRow]:
        """Locks rooted at ``path``, at any of its ancestors, at a sibling (a member of the
        same folder) or at a member of ``path``: what a request needs to check ``path`` and, in
        the same answer, the other members of its folder (PROPFIND lists them all) and a new
        member (a PUT checks the folder, then the file)."""
        parent = lock_parent(path) if path != "/" else path
        params = {"b_roots": lock_ancestors(path), "b_path": path, "b_parent": parent, "b_now": self._clock()}
        with self._read_one() as c:
            return [LockRow(*r) for r in c.execute(_LOCKS_NEAR, params)]

    def locks_below(self, path: str) -> list[LockRow]:
        """Locks rooted at ``path`` or anywhere below it (an index range scan)."""
        with self._read() as c:
            return self._live_locks(c, _lock_subtree(path))

    def all_locks(self, *, principal: str | None = None) -> list[LockRow]:
        """Every live lock (administration), oldest expiry first."""
        with self._read() as c:
            cond = literal(True) if principal is None else locks.c.principal == principal
            stmt = select(*_LOCK_COLS).where(and_(cond, locks.c.expire >= self._clock())).order_by(locks.c.expire)
            return [LockRow(*r) for r in c.execute(stmt)]

    def get_lock(self, token: str) -> LockRow | None:
        with self._read() as c:
            r = c.execute(select(*_LOCK_COLS).where(locks.c.token == token)).first()
            return LockRow(*r) if r else None

    @db.retrying
    def create_lock(
        self, lock: LockRow, conflicts, *, max_total: int | None = None, max_per_principal: int | None = None
    ) -> None:
        """Insert ``lock`` unless ``conflicts(locks)`` returns a reason (raises Conflict); it is
        given the live locks on ``lock.root``, its ancestors and (depth infinity) below it.
        Raises :class:`LockLimitReached` when ``max_total`` live locks exist, or
        ``max_per_principal`` of ``lock.principal``.

        The checks and the insert share one write transaction, serialized across processes
        (SQLite's write lock, a PostgreSQL advisory lock), so two processes cannot both be
        granted conflicting locks, nor together exceed the limits.
        """
        with self._write() as c:
            if not self._is_sqlite:
                c.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCKS_TX_KEY})
            now = self._clock()
            c.execute(delete(locks).where(locks.c.expire < now))
            if max_total is not None:
                n = c.execute(select(func.count()).select_from(locks)).scalar()
                if n >= max_total:
                    raise LockLimitReached(f"the server holds {n} locks, its limit")
            if max_per_principal is not None:
                n = c.execute(select(func.count()).where(locks.c.principal == lock.principal)).scalar()
                if n >= max_per_principal:
                    raise LockLimitReached(f"user {lock.principal!r} holds {n} locks, the limit per user")
            cond = locks.c.root.in_(lock_ancestors(lock.root))
            if lock.depth == "infinity":
                cond = cond | _lock_subtree(lock.root)
            reason = conflicts(self._live_locks(c, cond))
            if reason:
                raise Conflict(reason)
            c.execute(insert(locks).values(**lock.__dict__, parent=lock_parent(lock.root)))

    @db.retrying
    def refresh_lock(self, token: str, timeout: float, expire: float) -> bool:
        with self._write() as c:
            res = c.execute(update(locks).where(locks.c.token == token).values(timeout=timeout, expire=expire))
            return res.rowcount > 0

    @db.retrying
    def delete_lock(self, token: str) -> bool:
        with self._write() as c:
            return c.execute(delete(locks).where(locks.c.token == token)).rowcount > 0

    @db.retrying
    def delete_locks_below(self, path: str, *, recursive: bool) -> list[LockRow]:
        """Break the locks rooted at ``path`` (``recursive``: and below it); returns them."""
        cond = _lock_subtree(path) if recursive else locks.c.root == path
        with self._write() as c:
            gone = [LockRow(*r) for r in c.execute(select(*_LOCK_COLS).where(cond))]
            c.execute(delete(locks).where(cond))
            return gone

    @db.retrying
    def delete_expired_locks(self) -> int:
        with self._write() as c:
            return c.execute(delete(locks).where(locks.c.expire < self._clock())).rowcount

    # ------------------------------------------------------------------ objects
    def get_object(self, object_id: str) -> ObjectRow | None:
        with self._read_one() as c:
            r = c.execute(_OBJECT_BY_ID, {"b_oid": object_id}).first()
            return ObjectRow(*r) if r else None

    def objects_in_state(self, state: str, *, limit: int = 1000) -> list[ObjectRow]:
        with self._read() as c:
            rows = c.execute(
                select(*_OBJ_COLS).where(objects.c.state == state).order_by(objects.c.created_at).limit(limit)
            )
            return [ObjectRow(*r) for r in rows]

    @db.retrying
    def set_object_state(self, object_ids: Sequence[str], state: str, *, only_from: str | None = None) -> None:
        with self._write() as c:
            for start in range(0, len(object_ids), 500):
                cond = objects.c.id.in_(list(object_ids[start : start + 500]))
                if only_from:
                    cond = and_(cond, objects.c.state == only_from)
                c.execute(update(objects).where(cond).values(state=state))

    def orphans(self, older_than: float, *, limit: int = 1000) -> list[ObjectRow]:
        """Objects unreferenced since before ``older_than`` (epoch seconds)."""
        with self._read() as c:
            rows = c.execute(
                select(*_OBJ_COLS)
                .where(and_(objects.c.refcount <= 0, objects.c.orphaned_at < older_than, objects.c.pack_id.is_(None)))
                .limit(limit)
            )
            return [ObjectRow(*r) for r in rows]

    @db.retrying
    def forget_objects(self, object_ids: Sequence[str]) -> int:
        """Remove rows of objects that are still unreferenced; returns how many went."""
        n = 0
        with self._write() as c:
            for start in range(0, len(object_ids), 500):
                batch = list(object_ids[start : start + 500])
                n += c.execute(delete(objects).where(and_(objects.c.id.in_(batch), objects.c.refcount <= 0))).rowcount
        return n

    def all_object_ids(self) -> set[str]:
        with self._read() as c:
            return {r[0] for r in c.execute(select(objects.c.id))}

    # ------------------------------------------------------------------ packs
    def packable_objects(self, *, state: str, max_size: int, limit: int = 10000) -> list[ObjectRow]:
        """Live, unpacked, non-pack objects smaller than ``max_size`` in ``state``, oldest first."""
        with self._read() as c:
            rows = c.execute(
                select(*_OBJ_COLS)
                .where(
                    and_(
                        objects.c.state == state,
                        objects.c.size < max_size,
                        objects.c.pack_id.is_(None),
                        objects.c.is_pack.is_(False),
                        objects.c.refcount > 0,
                    )
                )
                .order_by(objects.c.created_at)
                .limit(limit)
            )
            return [ObjectRow(*r) for r in rows]

    @db.retrying
    def assign_pack(self, pack: NewObject, state: str, members: Sequence[tuple[str, int]]) -> list[str]:
        """Register ``pack`` and point ``members`` (``(object_id, offset)``) into it, in one
        transaction. Members that vanished or were packed meanwhile are skipped; returns the ids
        that now live in the pack (their stand-alone copies may be deleted from the store)."""
        now = self._clock()
        moved: list[str] = []
        with self._write() as c:
            stmt = self._upsert(objects).values(
                id=pack.id, size=pack.size, state=state, refcount=0, created_at=now, is_pack=True
            )
            c.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))
            for oid, offset in members:
                res = c.execute(
                    update(objects)
                    .where(and_(objects.c.id == oid, objects.c.pack_id.is_(None), objects.c.state != "deleting"))
                    .values(pack_id=pack.id, pack_offset=offset, state="packed")
                )
                if res.rowcount:
                    moved.append(oid)
            c.execute(
                update(objects)
                .where(objects.c.id == pack.id)
                .values(refcount=objects.c.refcount + len(moved), orphaned_at=None if moved else now)
            )
        return moved

    @db.retrying
    def forget_packed_orphans(self, older_than: float, *, limit: int = 5000) -> int:
        """Drop rows of packed objects unreferenced since before ``older_than``; their packs'
        refcounts go down (a pack reaching 0 becomes an orphan). Returns rows dropped."""
        now = self._clock()
        with self._write() as c:
            rows = c.execute(
                select(objects.c.id, objects.c.pack_id)
                .where(
                    and_(objects.c.pack_id.is_not(None), objects.c.refcount <= 0, objects.c.orphaned_at < older_than)
                )
                .limit(limit)
            ).all()
            per_pack: dict[str, int] = {}
            for _oid, pack_id in rows:
                per_pack[pack_id] = per_pack.get(pack_id, 0) + 1
            for start in range(0, len(rows), 500):
                c.execute(delete(objects).where(objects.c.id.in_([r[0] for r in rows[start : start + 500]])))
            for pack_id, n in per_pack.items():
                c.execute(update(objects).where(objects.c.id == pack_id).values(refcount=objects.c.refcount - n))
                c.execute(
                    update(objects)
                    .where(and_(objects.c.id == pack_id, objects.c.refcount <= 0, objects.c.orphaned_at.is_(None)))
                    .values(orphaned_at=now)
                )
            return len(rows)

    def pack_usage(self) -> list[tuple[str, int, int]]:
        """Every pack as ``(pack_id, pack_size, live_bytes)``; live = members with refcount > 0."""
        with self._read() as c:
            live = (
                select(objects.c.pack_id.label("pid"), func.sum(objects.c.size).label("live"))
                .where(and_(objects.c.pack_id.is_not(None), objects.c.refcount > 0))
                .group_by(objects.c.pack_id)
                .subquery()
            )
            rows = c.execute(
                select(objects.c.id, objects.c.size, func.coalesce(live.c.live, 0))
                .select_from(objects.outerjoin(live, live.c.pid == objects.c.id))
                .where(objects.c.is_pack.is_(True))
            )
            return [(r[0], int(r[1]), int(r[2])) for r in rows]

    def pack_members(self, pack_id: str, *, live_only: bool = True) -> list[ObjectRow]:
        with self._read() as c:
            cond = objects.c.pack_id == pack_id
            if live_only:
                cond = and_(cond, objects.c.refcount > 0)
            rows = c.execute(select(*_OBJ_COLS).where(cond).order_by(objects.c.pack_offset))
            return [ObjectRow(*r) for r in rows]

    @db.retrying
    def repoint_pack_members(
        self, old_pack: str, new_pack: NewObject, state: str, members: Sequence[tuple[str, int]]
    ) -> int:
        """Move ``members`` from ``old_pack`` into ``new_pack`` (repack), in one transaction."""
        now = self._clock()
        with self._write() as c:
            stmt = self._upsert(objects).values(
                id=new_pack.id, size=new_pack.size, state=state, refcount=0, created_at=now, is_pack=True
            )
            c.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))
            n = 0
            for oid, offset in members:
                n += c.execute(
                    update(objects)
                    .where(and_(objects.c.id == oid, objects.c.pack_id == old_pack))
                    .values(pack_id=new_pack.id, pack_offset=offset)
                ).rowcount
            c.execute(
                update(objects)
                .where(objects.c.id == new_pack.id)
                .values(refcount=objects.c.refcount + n, orphaned_at=None)
            )
            c.execute(update(objects).where(objects.c.id == old_pack).values(refcount=objects.c.refcount - n))
            c.execute(
                update(objects)
                .where(and_(objects.c.id == old_pack, objects.c.refcount <= 0, objects.c.orphaned_at.is_(None)))
                .values(orphaned_at=now)
            )
            return n

    # ------------------------------------------------------------------ consistency (fsck)
    def extent_refcounts(self) -> dict[str, int]:
        """How many extents name each object (what every refcount must equal)."""
        with self._read() as c:
            return dict(c.execute(select(extents.c.object_id, func.count()).group_by(extents.c.object_id)).all())

    def pack_member_counts(self) -> dict[str, int]:
        with self._read() as c:
            return dict(
                c.execute(
                    select(objects.c.pack_id, func.count())
                    .where(objects.c.pack_id.is_not(None))
                    .group_by(objects.c.pack_id)
                ).all()
            )

    def all_objects(self) -> list[ObjectRow]:
        with self._read() as c:
            return [ObjectRow(*r) for r in c.execute(select(*_OBJ_COLS))]

    @db.retrying
    def set_refcount(self, object_id: str, refcount: int) -> None:
        now = self._clock()
        with self._write() as c:
            c.execute(
                update(objects)
                .where(objects.c.id == object_id)
                .values(refcount=refcount, orphaned_at=None if refcount > 0 else now)
            )

    def versions_using(self, object_ids: Sequence[str]) -> list[Node]:
        """Current file nodes whose content uses any of ``object_ids`` (directly or via a pack)."""
        ids = list(object_ids)
        out: dict[int, Node] = {}
        with self._read() as c:
            for start in range(0, len(ids), 500):
                batch = ids[start : start + 500]
                members = select(objects.c.id).where(objects.c.pack_id.in_(batch))
                rows = c.execute(
                    _node_select().where(
                        nodes.c.version_id.in_(
                            select(extents.c.version_id).where(
                                extents.c.object_id.in_(batch) | extents.c.object_id.in_(members)
                            )
                        )
                    )
                )
                for r in rows:
                    out[r.id] = _to_node(r)
        return sorted(out.values(), key=lambda n: n.path)

    def all_versions_with_extents(self) -> Iterator[tuple[int, int, list[Extent]]]:
        """Every version as ``(version_id, size, logical extents)`` (fsck)."""
        with self._read() as c:
            sizes = dict(c.execute(select(versions.c.id, versions.c.size)).all())
            rows = c.execute(
                select(
                    extents.c.version_id,
                    extents.c.file_offset,
                    extents.c.object_id,
                    extents.c.object_offset,
                    extents.c.length,
                ).order_by(extents.c.version_id, extents.c.seq)
            ).all()
        by_version: dict[int, list[Extent]] = {vid: [] for vid in sizes}
        for vid, fo, oid, oo, n in rows:
            by_version.setdefault(vid, []).append(Extent(fo, oid, oo, n))
        for vid, parts in by_version.items():
            yield vid, sizes.get(vid, -1), parts

    @db.retrying
    def register_strays(self, found: Sequence[NewObject], *, state: str) -> None:
        """Record objects found in the store but unknown here as orphans (the collector
        deletes them after the grace period unless a writer references them first)."""
        now = self._clock()
        with self._write() as c:
            for obj in found:
                stmt = self._upsert(objects).values(
                    id=obj.id, size=obj.size, state=state, refcount=0, created_at=now, orphaned_at=now
                )
                c.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))

    def node_of_version(self, version_id: int) -> Node | None:
        with self._read() as c:
            row = c.execute(_node_select().where(nodes.c.version_id == version_id)).first()
            return _to_node(row) if row else None

    # ------------------------------------------------------------------ write-back and Hub sync
    @db.retrying
    def pin_object(self, obj: NewObject, *, state: str) -> bool:
        """Register a chunk cut by an upload still in progress, or pin the live row of an equal
        object (dedup). Pinned: ``refcount`` may be 0 but ``orphaned_at`` is NULL, so the collector
        keeps it until the version commit adds references or :meth:`unpin_objects` releases it.

        Returns True when the caller must store the bytes (no usable row existed), False when an
        equal object is already stored (the caller drops its copy).
        """
        now = self._clock()
        with self._write() as c:
            row = c.execute(select(objects.c.state, objects.c.refcount).where(objects.c.id == obj.id)).first()
            if row is not None and row.state != "deleting":
                if row.refcount <= 0:
                    c.execute(update(objects).where(objects.c.id == obj.id).values(orphaned_at=None))
                return False
            if row is None:
                c.execute(
                    insert(objects).values(
                        id=obj.id, size=obj.size, state=state, refcount=0, created_at=now, orphaned_at=None
                    )
                )
            else:
                c.execute(
                    update(objects)
                    .where(objects.c.id == obj.id)
                    .values(
                        size=obj.size,
                        state=state,
                        orphaned_at=None,
                        pack_id=None,
                        pack_offset=None,
                        remote_sha256=None,
                        remote_size=None,
                    )
                )
            return True

    @db.retrying
    def unpin_objects(self, object_ids: Sequence[str] | None = None) -> int:
        """Release pins (``None``: every pin, at start-up): unreferenced pinned rows become
        orphans now. Returns how many rows changed."""
        now = self._clock()
        cond = and_(objects.c.refcount <= 0, objects.c.orphaned_at.is_(None))
        with self._write() as c:
            if object_ids is None:
                return c.execute(update(objects).where(cond).values(orphaned_at=now)).rowcount
            ids, n = list(object_ids), 0
            for start in range(0, len(ids), 500):
                batch = and_(cond, objects.c.id.in_(ids[start : start + 500]))
                n += c.execute(update(objects).where(batch).values(orphaned_at=now)).rowcount
            return n

    def sync_objects(self, object_ids: Iterable[str]) -> dict[str, SyncObject]:
        """The rows of ``object_ids`` that exist, with what the Hub sync needs."""
        ids = list(dict.fromkeys(object_ids))
        out: dict[str, SyncObject] = {}
        with self._read() as c:
            for start in range(0, len(ids), 500):
                rows = c.execute(select(*_SYNC_COLS).where(objects.c.id.in_(ids[start : start + 500])))
                for r in rows:
                    out[r.id] = _to_sync(r)
        return out

    def uploaded_objects(self, *, limit: int = 1000) -> list[SyncObject]:
        """Live objects sent to the remote store but in no commit yet, oldest first. Live:
        referenced, pinned by an upload in progress, or a pack with members."""
        live = (objects.c.refcount > 0) | objects.c.orphaned_at.is_(None)
        with self._read() as c:
            rows = c.execute(
                select(*_SYNC_COLS)
                .where(and_(objects.c.state == "uploaded", live))
                .order_by(objects.c.created_at)
                .limit(limit)
            )
            return [_to_sync(r) for r in rows]

    @db.retrying
    def mark_uploaded(self, object_id: str, remote_sha256: str | None, remote_size: int | None) -> str | None:
        """``staged`` → ``uploaded``; ``remote_sha256``/``remote_size`` describe the LFS object
        (None: the bytes travel inside the commit). Returns the row's state afterwards (None: no
        row)."""
        with self._write() as c:
            c.execute(
                update(objects)
                .where(and_(objects.c.id == object_id, objects.c.state == "staged"))
                .values(state="uploaded", remote_sha256=remote_sha256, remote_size=remote_size)
            )
            return c.execute(select(objects.c.state).where(objects.c.id == object_id)).scalar()

    @db.retrying
    def mark_uploaded_many(self, items: Sequence[tuple[str, str | None, int | None]]) -> dict[str, str]:
        """:meth:`mark_uploaded` for ``(object_id, remote_sha256, remote_size)`` items in one
        transaction. Returns the states afterwards of the rows that exist."""
        with self._write() as c:
            for oid, sha, size in items:
                c.execute(
                    update(objects)
                    .where(and_(objects.c.id == oid, objects.c.state == "staged"))
                    .values(state="uploaded", remote_sha256=sha, remote_size=size)
                )
            ids = [oid for oid, _, _ in items]
            rows = c.execute(select(objects.c.id, objects.c.state).where(objects.c.id.in_(ids)))
            return {r.id: r.state for r in rows}

    @db.retrying
    def mark_committed(self, object_ids: Sequence[str]) -> None:
        """``uploaded`` → ``committed`` (a Hub commit now references them)."""
        ids = list(object_ids)
        with self._write() as c:
            for start in range(0, len(ids), 500):
                c.execute(
                    update(objects)
                    .where(and_(objects.c.id.in_(ids[start : start + 500]), objects.c.state == "uploaded"))
                    .values(state="committed")
                )

    def object_bytes_by_state(self) -> dict[str, tuple[int, int]]:
        """``state -> (objects, bytes)`` of stand-alone objects (``hfdav stats``, gauges)."""
        with self._read() as c:
            rows = c.execute(
                select(objects.c.state, func.count(), func.coalesce(func.sum(objects.c.size), 0)).group_by(
                    objects.c.state
                )
            )
            return {state: (int(n), int(b)) for state, n, b in rows}

    # journal ------------------------------------------------------------------------------
    def pending_journal(self, *, limit: int = 1000) -> list[JournalRow]:
        """Journal entries no remote commit holds yet, in order."""
        with self._read() as c:
            rows = c.execute(
                select(journal.c.seq, journal.c.created_at, journal.c.entry, journal.c.commit_oid)
                .where(journal.c.commit_oid.is_(None))
                .order_by(journal.c.seq)
                .limit(limit)
            )
            return [JournalRow(*r) for r in rows]

    def journal_between(self, after_seq: int, upto_seq: int) -> list[JournalRow]:
        """Entries with ``after_seq < seq <= upto_seq``, in order."""
        with self._read() as c:
            rows = c.execute(
                select(journal.c.seq, journal.c.created_at, journal.c.entry, journal.c.commit_oid)
                .where(and_(journal.c.seq > after_seq, journal.c.seq <= upto_seq))
                .order_by(journal.c.seq)
            )
            return [JournalRow(*r) for r in rows]

    def journal_bounds(self) -> tuple[int, int]:
        """``(last seq, committed-through seq)``: every entry up to the second one is in a
        remote commit (0 when there is none)."""
        with self._read() as c:
            last = c.execute(select(func.coalesce(func.max(journal.c.seq), 0))).scalar()
            first_pending = c.execute(select(func.min(journal.c.seq)).where(journal.c.commit_oid.is_(None))).scalar()
        last = int(last or 0)
        return last, (int(first_pending) - 1 if first_pending is not None else last)

    @db.retrying
    def mark_journal_committed(self, upto_seq: int, commit_oid: str) -> int:
        with self._write() as c:
            return c.execute(
                update(journal)
                .where(and_(journal.c.seq <= upto_seq, journal.c.commit_oid.is_(None)))
                .values(commit_oid=commit_oid)
            ).rowcount

    @db.retrying
    def trim_journal(self, upto_seq: int) -> int:
        """Forget committed entries up to ``upto_seq`` (a snapshot covers them), keeping the
        newest row so that sequence numbers are never handed out twice."""
        with self._write() as c:
            newest = c.execute(select(func.max(journal.c.seq))).scalar() or 0
            return c.execute(
                delete(journal).where(
                    and_(journal.c.seq <= min(upto_seq, newest - 1), journal.c.commit_oid.is_not(None))
                )
            ).rowcount

    @db.retrying
    def set_journal_base(self, seq: int, commit_oid: str) -> None:
        """After a rebuild: the next journal entry gets a number above ``seq`` (a committed
        marker row holds the place)."""
        if seq <= 0:
            return
        with self._write() as c:
            self._journal_marker(c, seq, commit_oid)

    def _journal_marker(self, c: Connection, seq: int, commit_oid: str) -> None:
        marker = json.dumps({"op": "rebuilt"}, separators=(",", ":"))
        c.execute(delete(journal).where(journal.c.seq >= seq))
        c.execute(insert(journal).values(seq=seq, created_at=self._clock(), entry=marker, commit_oid=commit_oid))
        if not self._is_sqlite:
            c.execute(text("SELECT setval(pg_get_serial_sequence('journal', 'seq'), :n)"), {"n": seq})

    # deletions on the Hub -----------------------------------------------------------------
    def queue_hub_deletes(self, paths: Iterable[str], *, after_seq: int) -> None:
        self._queue_hub_deletes(list(paths), after_seq)

    @db.retrying
    def _queue_hub_deletes(self, paths: list[str], after_seq: int) -> None:
        now = self._clock()
        with self._write() as c:
            for path in paths:
                stmt = self._upsert(hub_deletes).values(path=path, requested_at=now, after_seq=after_seq)
                c.execute(stmt.on_conflict_do_nothing(index_elements=["path"]))

    def due_hub_deletes(self, committed_through: int, *, limit: int = 1000) -> list[str]:
        """Queued repo paths whose orphaning change is committed (``after_seq`` reached)."""
        with self._read() as c:
            rows = c.execute(
                select(hub_deletes.c.path)
                .where(hub_deletes.c.after_seq <= committed_through)
                .order_by(hub_deletes.c.requested_at)
                .limit(limit)
            )
            return [r[0] for r in rows]

    @db.retrying
    def drop_hub_deletes(self, paths: Sequence[str]) -> None:
        paths = list(paths)
        with self._write() as c:
            for start in range(0, len(paths), 500):
                c.execute(delete(hub_deletes).where(hub_deletes.c.path.in_(paths[start : start + 500])))

    def count_hub_deletes(self) -> int:
        with self._read() as c:
            return int(c.execute(select(func.count()).select_from(hub_deletes)).scalar() or 0)

    # snapshots and rebuilds ---------------------------------------------------------------
    def is_pristine(self) -> bool:
        """Only the root folder, no journal, no objects: a database that was just created."""
        with self._read() as c:
            n_nodes = c.execute(select(func.count()).select_from(nodes)).scalar()
            n_journal = c.execute(select(func.count()).select_from(journal)).scalar()
            n_objects = c.execute(select(func.count()).select_from(objects)).scalar()
            return n_nodes <= 1 and n_journal == 0 and n_objects == 0

    def iter_tree(self) -> Iterator[TreeRecord]:
        """Every node but the root, parents before children, files with their logical extents.
        One read transaction (a consistent view), streamed."""
        cols = (
            nodes.c.path,
            nodes.c.is_dir,
            nodes.c.created_at,
            nodes.c.modified_at,
            nodes.c.content_type,
            versions.c.etag,
            versions.c.md5,
            versions.c.sha1,
            extents.c.object_id,
            extents.c.object_offset,
            extents.c.length,
        )
        stmt = (
            select(*cols)
            .select_from(
                nodes.outerjoin(versions, versions.c.id == nodes.c.version_id).outerjoin(
                    extents, extents.c.version_id == versions.c.id
                )
            )
            .where(nodes.c.id != ROOT_ID)
            .order_by(nodes.c.path, extents.c.seq)
        )
        with self._read() as c:
            current = None
            parts: list[tuple[str, int, int]] = []
            for r in c.execution_options(yield_per=2000).execute(stmt):
                if current is None or r.path != current.path:
                    if current is not None:
                        yield _tree_record(current, parts)
                    current, parts = r, []
                if r.object_id is not None:
                    parts.append((r.object_id, int(r.object_offset), int(r.length)))
            if current is not None:
                yield _tree_record(current, parts)

    def iter_object_records(self) -> Iterator[ObjectRecord]:
        """Objects a snapshot needs: referenced ones, packs, and every pack member."""
        cond = (objects.c.refcount > 0) | objects.c.is_pack.is_(True) | objects.c.pack_id.is_not(None)
        with self._read() as c:
            rows = c.execute(
                select(objects.c.id, objects.c.size, objects.c.pack_id, objects.c.pack_offset, objects.c.is_pack)
                .where(cond)
                .order_by(objects.c.id)
            )
            for r in rows:
                yield ObjectRecord(r.id, int(r.size), r.pack_id, r.pack_offset, bool(r.is_pack))

    def iter_properties(self) -> Iterator[tuple[str, str, str]]:
        """Dead properties as ``(path, name, value)``."""
        with self._read() as c:
            rows = c.execute(
                select(nodes.c.path, properties.c.name, properties.c.value)
                .select_from(properties.join(nodes, nodes.c.id == properties.c.node_id))
                .order_by(nodes.c.path, properties.c.name)
            )
            yield from ((r.path, r.name, r.value) for r in rows)

    def restore_tree(
        self,
        tree: Iterable[TreeRecord],
        objs: Iterable[ObjectRecord],
        props: Iterable[tuple[str, str, str]] = (),
        *,
        object_state: str = "committed",
        journal_base: tuple[int, str] | None = None,
    ) -> int:
        """Load a snapshot into a pristine database in one transaction: nodes (parents first),
        versions with their etags, extents, objects (refcounts computed from the extents and pack
        members) and dead properties. ``journal_base`` ``(seq, commit)``: the journal continues
        after ``seq`` (see :meth:`set_journal_base`). Returns the number of nodes loaded."""
        now = self._clock()
        ids: dict[str, int] = {"": ROOT_ID}
        refs: dict[str, int] = {}
        n = 0
        with self._write() as c:
            for rec in tree:
                parent_path, name = split_path(rec.path)
                parent_id = ids.get(parent_path)
                if parent_id is None:
                    raise Conflict(f"snapshot lists {rec.path!r} before its parent folder")
                nid = c.execute(
                    insert(nodes).values(
                        parent_id=parent_id,
                        name=name,
                        path=rec.path,
                        is_dir=rec.is_dir,
                        created_at=rec.created_at,
                        modified_at=rec.modified_at,
                        content_type=rec.content_type,
                    )
                ).inserted_primary_key[0]
                ids[rec.path] = nid
                n += 1
                if rec.is_dir:
                    continue
                size = sum(length for _, _, length in rec.extents)
                etag = rec.etag or version_etag(rec.extents)
                vid = c.execute(
                    insert(versions).values(
                        node_id=nid,
                        size=size,
                        etag=etag,
                        created_at=rec.created_at,
                        md5=rec.checksums.md5,
                        sha1=rec.checksums.sha1,
                    )
                ).inserted_primary_key[0]
                offset = 0
                rows = []
                for seq, (oid, ooff, length) in enumerate(rec.extents):
                    rows.append(
                        dict(
                            version_id=vid,
                            seq=seq,
                            file_offset=offset,
                            object_id=oid,
                            object_offset=ooff,
                            length=length,
                        )
                    )
                    offset += length
                    refs[oid] = refs.get(oid, 0) + 1
                if rows:
                    c.execute(insert(extents), rows)
                c.execute(update(nodes).where(nodes.c.id == nid).values(version_id=vid))
            members: dict[str, int] = {}
            records = list(objs)
            for rec in records:
                if rec.pack_id:
                    members[rec.pack_id] = members.get(rec.pack_id, 0) + 1
            for rec in records:
                count = members.get(rec.id, 0) if rec.is_pack else refs.get(rec.id, 0)
                c.execute(
                    insert(objects).values(
                        id=rec.id,
                        size=rec.size,
                        state="packed" if rec.pack_id else object_state,
                        refcount=count,
                        created_at=now,
                        orphaned_at=None if count > 0 else now,
                        pack_id=rec.pack_id,
                        pack_offset=rec.pack_offset,
                        is_pack=rec.is_pack,
                    )
                )
            for path, name, value in props:
                nid = ids.get(path)
                if nid is not None:
                    c.execute(insert(properties).values(node_id=nid, name=name, value=value))
            if journal_base is not None and journal_base[0] > 0:
                self._journal_marker(c, *journal_base)
        return n

    @db.retrying
    def place_in_pack(self, pack: NewObject, members: Sequence[tuple[str, int, int]], *, state: str) -> None:
        """Replay of a pack record (rebuild): ``pack`` holds ``members`` as ``(object_id, offset,
        size)``. Members get rows if they have none (unreferenced until a version names them);
        a member that lived elsewhere moves, and its former pack loses one member."""
        now = self._clock()
        with self._write() as c:
            stmt = self._upsert(objects).values(
                id=pack.id, size=pack.size, state=state, refcount=0, created_at=now, orphaned_at=now, is_pack=True
            )
            c.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))
            for oid, offset, size in members:
                old = c.execute(select(objects.c.pack_id).where(objects.c.id == oid)).first()
                if old is None:
                    c.execute(
                        insert(objects).values(
                            id=oid,
                            size=size,
                            state="packed",
                            refcount=0,
                            created_at=now,
                            orphaned_at=now,
                            pack_id=pack.id,
                            pack_offset=offset,
                        )
                    )
                else:
                    if old.pack_id == pack.id:
                        continue
                    c.execute(
                        update(objects)
                        .where(objects.c.id == oid)
                        .values(state="packed", pack_id=pack.id, pack_offset=offset)
                    )
                    if old.pack_id:
                        c.execute(
                            update(objects).where(objects.c.id == old.pack_id).values(refcount=objects.c.refcount - 1)
                        )
                c.execute(
                    update(objects)
                    .where(objects.c.id == pack.id)
                    .values(refcount=objects.c.refcount + 1, orphaned_at=None)
                )

    @db.retrying
    def forget_unreferenced(self, object_ids: Sequence[str]) -> int:
        """Drop rows of ``object_ids`` that nothing references, with the members of such packs
        (the repo deleted them). Returns rows dropped."""
        n = 0
        with self._write() as c:
            for start in range(0, len(object_ids), 500):
                batch = list(object_ids[start : start + 500])
                dead = [
                    r[0]
                    for r in c.execute(
                        select(objects.c.id).where(and_(objects.c.id.in_(batch), objects.c.refcount <= 0))
                    )
                ]
                if not dead:
                    continue
                c.execute(delete(objects).where(and_(objects.c.pack_id.in_(dead), objects.c.refcount <= 0)))
                n += c.execute(delete(objects).where(objects.c.id.in_(dead))).rowcount
        return n


@dataclass(frozen=True)
class SyncObject:
    """An object as the Hub sync sees it. ``pinned``: unreferenced but held by an upload in
    progress. ``remote_sha256``: the LFS oid once uploaded."""

    id: str
    size: int
    state: str
    refcount: int
    pinned: bool
    pack_id: str | None
    is_pack: bool
    remote_sha256: str | None
    remote_size: int | None


@dataclass(frozen=True)
class JournalRow:
    seq: int
    created_at: float
    entry: str
    commit_oid: str | None


@dataclass(frozen=True)
class TreeRecord:
    """A node as a snapshot stores it; ``extents`` are logical ``(object_id, offset, length)``."""

    path: str
    is_dir: bool
    created_at: float
    modified_at: float
    content_type: str | None
    etag: str | None
    extents: tuple[tuple[str, int, int], ...]
    checksums: Checksums = NO_CHECKSUMS


def _tree_record(r, parts: list[tuple[str, int, int]]) -> TreeRecord:
    """A :meth:`MetadataRepository.iter_tree` row (the node's first) and its extents."""
    return TreeRecord(
        r.path,
        bool(r.is_dir),
        r.created_at,
        r.modified_at,
        r.content_type,
        r.etag,
        tuple(parts),
        Checksums(r.md5, r.sha1),
    )


@dataclass(frozen=True)
class ObjectRecord:
    id: str
    size: int
    pack_id: str | None
    pack_offset: int | None
    is_pack: bool


_SYNC_COLS = (
    objects.c.id,
    objects.c.size,
    objects.c.state,
    objects.c.refcount,
    objects.c.orphaned_at,
    objects.c.pack_id,
    objects.c.is_pack,
    objects.c.remote_sha256,
    objects.c.remote_size,
)


def _to_sync(r) -> SyncObject:
    return SyncObject(
        id=r.id,
        size=int(r.size),
        state=r.state,
        refcount=int(r.refcount),
        pinned=r.refcount <= 0 and r.orphaned_at is None,
        pack_id=r.pack_id,
        is_pack=bool(r.is_pack),
        remote_sha256=r.remote_sha256,
        remote_size=r.remote_size,
    )
