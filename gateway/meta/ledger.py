"""The backend ledger: key/value settings, the journal, objects as the remote sync sees them,
queued remote deletions, snapshots and rebuilds."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence

from sqlalchemy import Connection, and_, delete, func, insert, select, text, update

from gateway.errors import Conflict
from gateway.meta import db
from gateway.meta.base import RepositoryBase, inserted_id, split_path
from gateway.meta.records import (
    Checksums,
    JournalRow,
    NewObject,
    ObjectRecord,
    ObjectState,
    SyncObject,
    TreeRecord,
    version_etag,
)
from gateway.meta.schema import (
    ROOT_ID,
    extents,
    hub_deletes,
    journal,
    nodes,
    objects,
    properties,
    settings_kv,
    versions,
)


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


class LedgerMixin(RepositoryBase):
    """What a remote backend records here."""

    # ------------------------------------------------------------------ key/value settings
    def get_setting(self, key: str) -> str | None:
        with self._read() as c:
            return c.execute(select(settings_kv.c.value).where(settings_kv.c.key == key)).scalar()

    @db.retrying
    def set_setting(self, key: str, value: str) -> None:
        with self._write() as c:
            stmt = self._upsert(settings_kv).values(key=key, value=value)
            c.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": value}))

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
                .where(and_(objects.c.state == ObjectState.UPLOADED, live))
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
                .where(and_(objects.c.id == object_id, objects.c.state == ObjectState.STAGED))
                .values(state=ObjectState.UPLOADED, remote_sha256=remote_sha256, remote_size=remote_size)
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
                    .where(and_(objects.c.id == oid, objects.c.state == ObjectState.STAGED))
                    .values(state=ObjectState.UPLOADED, remote_sha256=sha, remote_size=size)
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
                    .where(and_(objects.c.id.in_(ids[start : start + 500]), objects.c.state == ObjectState.UPLOADED))
                    .values(state=ObjectState.COMMITTED)
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
            n_nodes = c.execute(select(func.count()).select_from(nodes)).scalar_one()
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
        object_state: str = ObjectState.COMMITTED,
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
                nid = inserted_id(
                    c.execute(
                        insert(nodes).values(
                            parent_id=parent_id,
                            name=name,
                            path=rec.path,
                            is_dir=rec.is_dir,
                            created_at=rec.created_at,
                            modified_at=rec.modified_at,
                            content_type=rec.content_type,
                        )
                    )
                )
                ids[rec.path] = nid
                n += 1
                if rec.is_dir:
                    continue
                size = sum(length for _, _, length in rec.extents)
                etag = rec.etag or version_etag(rec.extents)
                vid = inserted_id(
                    c.execute(
                        insert(versions).values(
                            node_id=nid,
                            size=size,
                            etag=etag,
                            created_at=rec.created_at,
                            md5=rec.checksums.md5,
                            sha1=rec.checksums.sha1,
                        )
                    )
                )
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
            for obj in records:
                if obj.pack_id:
                    members[obj.pack_id] = members.get(obj.pack_id, 0) + 1
            for obj in records:
                count = members.get(obj.id, 0) if obj.is_pack else refs.get(obj.id, 0)
                c.execute(
                    insert(objects).values(
                        id=obj.id,
                        size=obj.size,
                        state=ObjectState.PACKED if obj.pack_id else object_state,
                        refcount=count,
                        created_at=now,
                        orphaned_at=None if count > 0 else now,
                        pack_id=obj.pack_id,
                        pack_offset=obj.pack_offset,
                        is_pack=obj.is_pack,
                    )
                )
            for path, name, value in props:
                owner = ids.get(path)
                if owner is not None:
                    c.execute(insert(properties).values(node_id=owner, name=name, value=value))
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
                            state=ObjectState.PACKED,
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
                        .values(state=ObjectState.PACKED, pack_id=pack.id, pack_offset=offset)
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
