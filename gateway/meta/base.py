"""The database object the parts of :class:`gateway.meta.repo.MetadataRepository` share:
the engine, read and write transactions, the health check, the journal append, and the columns
and row converters of nodes and objects that more than one part reads.

Write transactions take the database's write lock up front (SQLite ``BEGIN IMMEDIATE``), so
two writers never deadlock on a lock upgrade; reads never block writers (WAL). With PostgreSQL,
writers take row locks in path order (parents before children), objects after nodes and in id
order; a transaction that still loses a race (deadlock, serialization failure) runs again: every
method holding one write transaction is decorated with :func:`gateway.meta.db.retrying`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Self

from sqlalchemy import Connection, CursorResult, Engine, insert, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gateway.errors import AlreadyExists, InsufficientStorage
from gateway.meta import db
from gateway.meta.records import Checksums, Extent, Node
from gateway.meta.schema import ROOT_ID, extents, journal, nodes, objects, settings_kv, versions

log = logging.getLogger(__name__)

#: Seconds a failed write keeps the database health check failing (unless a write succeeds).
WRITE_ERROR_WINDOW_S = 60


OBJ_COLS = (
    objects.c.id,
    objects.c.size,
    objects.c.state,
    objects.c.refcount,
    objects.c.orphaned_at,
    objects.c.pack_id,
    objects.c.pack_offset,
    objects.c.is_pack,
)


NODE_COLS = (
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
PHYSICAL_EXTENT_COLS = (
    extents.c.file_offset,
    extents.c.object_id,
    extents.c.object_offset,
    extents.c.length,
    objects.c.pack_id,
    objects.c.pack_offset,
)


def physical_extent(row) -> Extent:
    """Where the bytes of an extent row (``PHYSICAL_EXTENT_COLS``) are stored."""
    if row.pack_id:
        return Extent(row.file_offset, row.pack_id, row.object_offset + row.pack_offset, row.length)
    return Extent(row.file_offset, row.object_id, row.object_offset, row.length)


def node_select():
    return select(*NODE_COLS).select_from(nodes.outerjoin(versions, versions.c.id == nodes.c.version_id))


def node_of(id, parent_id, name, path, is_dir, created_at, modified_at, content_type, version_id, size, etag, md5,
             sha1) -> Node:  # fmt: skip
    """:func:`to_node` of a row's values (``NODE_COLS``, in order): for rows read in bulk."""
    return Node(id, parent_id, name, path, bool(is_dir), created_at, modified_at, content_type, version_id, size or 0,
                etag, Checksums(md5, sha1))  # fmt: skip


def to_node(row) -> Node:
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


_INSERT_JOURNAL = insert(journal)

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


def inserted_id(result: CursorResult) -> int:
    """The primary key an INSERT of one row gave it."""
    key = result.inserted_primary_key
    assert key is not None, "not the result of an INSERT"
    return key[0]


def split_path(path: str) -> tuple[str, str]:
    """``/a/b`` → (``/a``, ``b``); ``/a`` → (``""``, ``a``)."""
    parent, _, name = path.rpartition("/")
    return parent, name


class RepositoryBase:
    """One database: the engine and the transactions every part of the repository runs in.
    Thread-safe; one instance per process.

    ``journal_enabled``: every change also appends a JSON record to the ``journal`` table in
    the same transaction (the remote store commits them with the data; see FORMAT.md).
    """

    if TYPE_CHECKING:  # provided by the tree part (see gateway.meta.repo)

        def get(self, path: str) -> Node | None: ...

    def __init__(self, engine: Engine, *, journal_enabled: bool = False, clock=time.time):
        self.engine = engine
        self.journal_enabled = journal_enabled
        #: earlier versions kept per file after an overwrite (HFDAV_VERSIONS; gateway.meta.versions)
        self.keep_versions = 0
        self._clock = clock
        self._is_sqlite = engine.dialect.name == "sqlite"
        #: ``(when, error)`` of the newest write transaction that failed at the database (not one
        #: that failed for a reason of the tree, e.g. NotFound); None once a write succeeds again.
        self.last_write_error: tuple[float, str] | None = None

    # ------------------------------------------------------------------ set-up
    @classmethod
    def open(cls, url: str, **kwargs) -> Self:
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
                root_id = inserted_id(
                    c.execute(
                        insert(nodes).values(
                            parent_id=None, name="", path="", is_dir=True, created_at=now, modified_at=now
                        )
                    )
                )
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

    def _journal(self, c: Connection, op: str, *, at: float | None = None, **fields) -> None:
        """``at``: the time the change used for its nodes (a replay reproduces them exactly)."""
        if self.journal_enabled:
            entry = json.dumps({"op": op, **fields}, separators=(",", ":"), ensure_ascii=False)
            c.execute(_INSERT_JOURNAL, {"created_at": self._clock() if at is None else at, "entry": entry})
