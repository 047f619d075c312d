"""InlineStore: small objects in one SQLite file, larger ones in the store behind it.

Making a new 4 KiB file durable costs two journal commits of the file system (the file's
allocation with its ``fsync``, then its folder's entry with the folder's ``fsync``), 3–4 ms on
the machines of the benchmarks. Appending the same bytes to a SQLite write-ahead log and
committing with ``synchronous=FULL`` costs one ``fsync`` of a file whose blocks mostly exist
already, about 0.5 ms. So objects of at most ``small_max`` bytes are rows of that database and
everything else goes to the inner store (a :class:`~gateway.store.local.LocalStore`); an
acknowledged write survives a crash or a power cut either way.

Writers that arrive while a transaction commits are stored together in the next one (a group
commit): concurrent small PUTs share one fsync.

The contract of :mod:`gateway.store.base` holds for the union: an id is read from the database
when its row is there, else from the inner store; ``delete`` and ``list_ids`` cover both.
"""

from __future__ import annotations

import io
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from gateway.errors import ObjectMissing, StoreError
from gateway.store.base import ObjectStore

log = logging.getLogger(__name__)

#: Objects up to this size are kept in the database (a PUT of a few KiB pays one fsync).
INLINE_MAX = 32 << 10

#: a rowid table: rows of kilobytes sit badly in a WITHOUT ROWID tree (SQLite keeps those for small rows)
_SCHEMA = "CREATE TABLE IF NOT EXISTS objects (id TEXT PRIMARY KEY, data BLOB NOT NULL)"


class _Row:
    """An object waiting for the group commit (see :meth:`InlineStore._store_rows`)."""

    __slots__ = ("object_id", "data", "done", "error")

    def __init__(self, object_id: str, data: bytes):
        self.object_id = object_id
        self.data = data
        self.done = False
        self.error: Exception | None = None


class InlineStore(ObjectStore):
    """See the module docstring. ``fsync`` False: commits are not flushed (tests, diagnostics)."""

    def __init__(self, inner: ObjectStore, db_path: Path, *, small_max: int = INLINE_MAX, fsync: bool = True):
        self.inner = inner
        self.initial_state = inner.initial_state
        self.small_max = small_max
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()  # the writing connection
        # group commit: rows waiting for the next transaction, and whether one is being committed
        self._batch_cond = threading.Condition()
        self._queued: list[_Row] = []
        self._committing = False
        #: transactions that stored rows (each one fsync), for the metrics of a benchmark
        self.commits = 0
        self._writer = self._connect(fsync)
        self._writer.execute(_SCHEMA)
        if fsync:
            _fsync_dir(self.db_path.parent)  # the database's own entry (and its log's) are durable
        self._local = threading.local()  # one reading connection per thread (WAL: readers never wait)
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    def _connect(self, fsync: bool) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if fsync else 'OFF'}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the small-object database {self.db_path}: {exc}") from exc
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(True)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @property
    def root(self) -> Path | None:
        """The inner store's folder (start-up checks name it in their messages)."""
        return getattr(self.inner, "root", None)

    def _row(self, object_id: str) -> bytes | None:
        try:
            row = self._reader().execute("SELECT data FROM objects WHERE id = ?", (object_id,)).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read object {object_id}: {exc}", transient=True) from exc
        return None if row is None else row[0]

    # -- the contract ---------------------------------------------------------------------------
    def adopt(self, object_id: str, source: Path, size: int) -> None:
        if size > self.small_max:
            self.inner.adopt(object_id, source, size)
            return
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot store object {object_id}: {exc}") from exc
        if len(data) != size:
            raise StoreError(f"cannot store object {object_id}: {len(data)} bytes staged, {size} announced")
        row = _Row(object_id, data)
        self._store_rows(row)
        if row.error is not None:
            raise StoreError(f"cannot store object {object_id}: {row.error}", transient=True) from row.error
        Path(source).unlink(missing_ok=True)

    def _store_rows(self, row: _Row) -> None:
        """Group commit: the row is written in the next transaction. The first writer to find
        none in progress commits every row queued by then, in one transaction (one fsync); the
        writers that queued meanwhile wait for it, and one of those that queued behind it leads
        the next one. Returns once the row's transaction is over (``row.error`` set if it failed)."""
        cond = self._batch_cond
        with cond:
            self._queued.append(row)
            while not row.done:
                if self._committing:
                    cond.wait()
                    continue
                self._committing = True
                batch, self._queued = self._queued, []
                cond.release()
                error: Exception | None = StoreError("the small-object transaction was interrupted")
                try:
                    self._commit(batch)
                    error = None
                except Exception as exc:  # every writer of the batch gets it
                    error = exc
                finally:
                    cond.acquire()
                    self._committing = False
                    for r in batch:
                        r.done, r.error = True, error
                    cond.notify_all()

    def _commit(self, batch: list[_Row]) -> None:
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                # an id never gets new content: a row already there keeps its bytes
                conn.executemany("INSERT OR IGNORE INTO objects (id, data) VALUES (?, ?)",
                                 [(r.object_id, r.data) for r in batch])  # fmt: skip
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self.commits += 1

    def open_range(self, object_id: str, offset: int, length: int) -> BinaryIO:
        if offset + length <= self.small_max:
            data = self._row(object_id)
            if data is not None:
                if offset + length > len(data):
                    raise ObjectMissing(f"object {object_id} holds {len(data)} bytes, not {offset + length}")
                return io.BytesIO(data[offset : offset + length])
        return self.inner.open_range(object_id, offset, length)

    def delete(self, object_ids: Iterable[str]) -> None:
        ids = list(object_ids)
        try:
            with self._write_lock:
                conn = self._writer
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany("DELETE FROM objects WHERE id = ?", [(i,) for i in ids])
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StoreError(f"cannot delete objects: {exc}", transient=True) from exc
        self.inner.delete(ids)

    def list_ids(self) -> Iterator[tuple[str, int]]:
        try:
            rows = self._reader().execute("SELECT id, length(data) FROM objects").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot list objects: {exc}", transient=True) from exc
        seen = set()
        for oid, size in rows:
            seen.add(oid)
            yield oid, size
        for oid, size in self.inner.list_ids():
            if oid not in seen:
                yield oid, size

    def size_of(self, object_id: str) -> int | None:
        try:
            row = self._reader().execute("SELECT length(data) FROM objects WHERE id = ?", (object_id,)).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read object {object_id}: {exc}", transient=True) from exc
        if row is not None:
            return row[0]
        return self.inner.size_of(object_id)

    def prefetch(self, object_id: str, offset: int, length: int) -> None:
        self.inner.prefetch(object_id, offset, length)

    def status(self) -> dict | None:
        return self.inner.status()

    def close(self) -> None:
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            try:
                conn.close()
            except sqlite3.Error:
                log.debug("closing a reader of %s failed", self.db_path, exc_info=True)
        with self._write_lock:
            self._writer.close()
        self.inner.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
