"""MetadataRepository: every query hfdav runs. Returns frozen dataclasses, never rows.

The repository is composed of parts by job, all over one database object
(:class:`gateway.meta.base.RepositoryBase`):

- :mod:`gateway.meta.tree`: nodes, versions, extents and paths;
- :mod:`gateway.meta.objects`: objects, packs and upload pins;
- :mod:`gateway.meta.locks`: locks and dead properties;
- :mod:`gateway.meta.consistency`: what fsck and the collector compare and repair;
- :mod:`gateway.meta.ledger`: what a remote backend records (settings, journal, sync objects,
  queued remote deletions, snapshots and rebuilds).

The values it returns live in :mod:`gateway.meta.records`; the names below are kept for the
callers that import them from here.

Paths given to this module are normalized by the caller (:func:`gateway.paths.normalize`):
``/a/b`` style, no trailing slash, ``""`` for the root.

Write transactions take the database's write lock up front (SQLite ``BEGIN IMMEDIATE``), so
two writers never deadlock on a lock upgrade; reads never block writers (WAL). With PostgreSQL,
writers take row locks in path order (parents before children), objects after nodes and in id
order; a transaction that still loses a race (deadlock, serialization failure) runs again: every
method holding one write transaction is decorated with :func:`gateway.meta.db.retrying`.
"""

from __future__ import annotations

from gateway.meta.base import WRITE_ERROR_WINDOW_S, RepositoryBase, split_path
from gateway.meta.consistency import ConsistencyMixin
from gateway.meta.ledger import LedgerMixin
from gateway.meta.locks import LockLimitReached, LocksMixin, lock_ancestors, lock_parent
from gateway.meta.objects import ObjectsMixin
from gateway.meta.records import (
    EMPTY_ETAG,
    NO_CHECKSUMS,
    Checksums,
    Extent,
    JournalRow,
    LockRow,
    NewObject,
    Node,
    ObjectRecord,
    ObjectRow,
    SyncObject,
    TreeRecord,
    version_etag,
)
from gateway.meta.tree import TreeMixin

__all__ = [
    "EMPTY_ETAG",
    "NO_CHECKSUMS",
    "WRITE_ERROR_WINDOW_S",
    "Checksums",
    "Extent",
    "JournalRow",
    "LockLimitReached",
    "LockRow",
    "MetadataRepository",
    "NewObject",
    "Node",
    "ObjectRecord",
    "ObjectRow",
    "SyncObject",
    "TreeRecord",
    "lock_ancestors",
    "lock_parent",
    "split_path",
    "version_etag",
]


class MetadataRepository(TreeMixin, ObjectsMixin, LocksMixin, ConsistencyMixin, LedgerMixin, RepositoryBase):
    """All metadata reads and writes. Thread-safe; one instance per process.

    ``journal_enabled``: every change also appends a JSON record to the ``journal`` table in
    the same transaction (the remote store commits them with the data; see FORMAT.md).
    """
