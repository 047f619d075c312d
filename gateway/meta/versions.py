"""Earlier versions of files: the last N contents of every file, kept after an overwrite.

A file's current version is ``nodes.version_id``; its *earlier* versions are the other
``versions`` rows with the same ``node_id``. They keep their extents, so their objects keep
their refcounts (deduplicated as usual: a version sharing chunks with another costs nothing).
Pruning a version releases it like an overwrite used to: refcounts drop, new orphans are
stamped, and the collector removes their bytes after the grace period.

How many are kept is the repository's ``keep_versions`` (``HFDAV_VERSIONS``); a journal ``put``
records the count in force (``keep``), so that a replay keeps exactly what the gateway kept,
whatever the replaying process's setting (FORMAT.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, and_, select

from gateway.errors import Conflict, NotFound
from gateway.meta.records import Checksums, Extent
from gateway.meta.schema import extents, nodes, versions


@dataclass(frozen=True)
class FileVersion:
    """One earlier version of a file. ``number`` 1 is the newest earlier version."""

    number: int
    version_id: int
    size: int
    etag: str
    created_at: float
    checksums: Checksums


def _earlier_ids(c: Connection, node_id: int, current: int | None) -> list[int]:
    """Ids of the earlier versions of ``node_id``, newest first."""
    stmt = select(versions.c.id).where(versions.c.node_id == node_id)
    if current is not None:
        stmt = stmt.where(versions.c.id != current)
    return [r[0] for r in c.execute(stmt.order_by(versions.c.id.desc()))]


def keep_or_release(repo, c: Connection, node_id: int, old_vid: int, keep: int, now: float) -> None:
    """After ``node_id`` got a new current version: keep ``old_vid`` as an earlier version and
    release those beyond ``keep`` (``keep`` 0: release ``old_vid`` itself, the old behaviour)."""
    if keep <= 0:
        repo._release_versions(c, [old_vid], now)
        current = c.execute(select(nodes.c.version_id).where(nodes.c.id == node_id)).scalar()
        surplus = _earlier_ids(c, node_id, current)  # kept under an earlier, higher setting
    else:
        current = c.execute(select(nodes.c.version_id).where(nodes.c.id == node_id)).scalar()
        surplus = _earlier_ids(c, node_id, current)[keep:]
    repo._release_versions(c, surplus, now)


def release_all(repo, c: Connection, node_ids: Sequence[int], now: float) -> None:
    """Release every earlier version of the nodes ``node_ids`` (being deleted)."""
    for start in range(0, len(node_ids), 500):
        batch = list(node_ids[start : start + 500])
        vids = [
            r[0]
            for r in c.execute(
                select(versions.c.id)
                .select_from(versions.outerjoin(nodes, nodes.c.id == versions.c.node_id))
                .where(
                    and_(
                        versions.c.node_id.in_(batch),
                        (nodes.c.version_id.is_(None)) | (nodes.c.version_id != versions.c.id),
                    )
                )
            )
        ]
        repo._release_versions(c, vids, now)


def list_versions(repo, path: str) -> list[FileVersion]:
    """The earlier versions of the file at ``path``, newest first (number 1, 2, …)."""
    with repo.engine.connect() as c:
        row = c.execute(select(nodes.c.id, nodes.c.is_dir, nodes.c.version_id).where(nodes.c.path == path)).first()
        if row is None:
            raise NotFound(path)
        if row.is_dir:
            raise Conflict(f"{path!r} is a folder")
        rows = c.execute(
            select(
                versions.c.id, versions.c.size, versions.c.etag, versions.c.created_at, versions.c.md5, versions.c.sha1
            )
            .where(and_(versions.c.node_id == row.id, versions.c.id != row.version_id))
            .order_by(versions.c.id.desc())
        ).all()
    return [FileVersion(i, r.id, r.size, r.etag, r.created_at, Checksums(r.md5, r.sha1)) for i, r in enumerate(rows, 1)]


def get_version(repo, path: str, number: int) -> FileVersion:
    for v in list_versions(repo, path):
        if v.number == number:
            return v
    raise NotFound(f"{path} has no version {number}")


def version_extents(repo, version_id: int) -> list[Extent]:
    """Logical extents of a version (what a put of the same content names)."""
    with repo.engine.connect() as c:
        return [
            Extent(*r)
            for r in c.execute(
                select(extents.c.file_offset, extents.c.object_id, extents.c.object_offset, extents.c.length)
                .where(extents.c.version_id == version_id)
                .order_by(extents.c.seq)
            )
        ]


def restore(repo, path: str, number: int):
    """Make earlier version ``number`` of ``path`` current again: a new current version with its
    extents (journaled as a ``put``); the content current until now becomes version 1."""
    v = get_version(repo, path, number)
    parts = version_extents(repo, v.version_id)
    return repo.put_version(path, parts, checksums=v.checksums)


def prune(repo, keep: int) -> int:
    """Release earlier versions beyond ``keep`` for every file (the setting was lowered); each
    file pruned is journaled (``prune``) so that a replay matches. Returns versions released."""
    released = 0
    now = repo._clock()
    with repo._write() as c:
        rows = c.execute(
            select(nodes.c.id, nodes.c.path, nodes.c.version_id).where(
                nodes.c.id.in_(
                    select(versions.c.node_id)
                    .select_from(versions.join(nodes, nodes.c.id == versions.c.node_id))
                    .where(versions.c.id != nodes.c.version_id)
                )
            )
        ).all()
        for r in rows:
            surplus = _earlier_ids(c, r.id, r.version_id)[keep:]
            if surplus:
                repo._release_versions(c, surplus, now)
                repo._journal(c, "prune", at=now, path=r.path, keep=keep)
                released += len(surplus)
    return released


def prune_one(repo, path: str, keep: int) -> None:
    """Replay of a ``prune`` entry."""
    now = repo._clock()
    with repo._write() as c:
        row = c.execute(select(nodes.c.id, nodes.c.version_id).where(nodes.c.path == path)).first()
        if row is None:
            return
        repo._release_versions(c, _earlier_ids(c, row.id, row.version_id)[keep:], now)
        repo._journal(c, "prune", at=now, path=path, keep=keep)


def copy_earlier_versions(source, target) -> int:
    """Copy every earlier version of ``source`` onto the files of the same paths in ``target``
    (after a tree copy, which carries current versions only); object rows the target lacks are
    copied too, and refcounts go up. Returns how many versions were copied."""
    from sqlalchemy import insert, update

    from gateway.meta.schema import objects

    with source.engine.connect() as c:
        rows = c.execute(
            select(nodes.c.path, versions)
            .select_from(versions.join(nodes, nodes.c.id == versions.c.node_id))
            .where(versions.c.id != nodes.c.version_id)
            .order_by(versions.c.id)
        ).all()
        if not rows:
            return 0
        parts = {
            r.id: c.execute(select(extents).where(extents.c.version_id == r.id).order_by(extents.c.seq)).all()
            for r in rows
        }
        oids = sorted({e.object_id for es in parts.values() for e in es})
        obj_rows = {o.id: o for o in c.execute(select(objects).where(objects.c.id.in_(oids))).all()}
        packs = sorted({o.pack_id for o in obj_rows.values() if o.pack_id} - set(obj_rows))
        obj_rows.update({o.id: o for o in c.execute(select(objects).where(objects.c.id.in_(packs))).all()})
    copied = 0
    with target._write() as c:
        have = {r[0] for r in c.execute(select(objects.c.id).where(objects.c.id.in_(sorted(obj_rows))))}
        for oid in sorted(set(obj_rows) - have):
            o = obj_rows[oid]._mapping
            c.execute(insert(objects).values(**{**o, "refcount": 0, "orphaned_at": None}))
        for r in rows:
            node_id = c.execute(select(nodes.c.id).where(nodes.c.path == r.path)).scalar()
            if node_id is None:
                continue
            vid = c.execute(
                insert(versions).values(
                    node_id=node_id, size=r.size, etag=r.etag, created_at=r.created_at, md5=r.md5, sha1=r.sha1
                )
            ).inserted_primary_key[0]
            for e in parts[r.id]:
                c.execute(insert(extents).values(**{**e._mapping, "version_id": vid}))
                c.execute(update(objects).where(objects.c.id == e.object_id).values(refcount=objects.c.refcount + 1))
            copied += 1
    return copied
