"""Objects and packs: states, refcounts, orphans, pack membership, upload pins."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, bindparam, delete, func, insert, select, update
from sqlalchemy.sql.elements import ColumnElement

from gateway.meta import db
from gateway.meta.base import OBJ_COLS, RepositoryBase
from gateway.meta.records import NewObject, ObjectRow, ObjectState
from gateway.meta.schema import objects

_OBJECT_BY_ID = select(*OBJ_COLS).where(objects.c.id == bindparam("b_oid"))
_OBJECT_BY_ID_SQL = f"SELECT {', '.join(c.name for c in OBJ_COLS)} FROM {objects.name} WHERE id = ?"


class ObjectsMixin(RepositoryBase):
    """Object rows and packs."""

    # ------------------------------------------------------------------ objects
    def get_object(self, object_id: str) -> ObjectRow | None:
        if self._is_sqlite:  # once per chunk of every PUT: plain DB-API, one statement, no BEGIN
            with self.engine.connect() as c:
                cur = c.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                try:
                    r = cur.execute(_OBJECT_BY_ID_SQL, (object_id,)).fetchone()
                finally:
                    cur.close()
                return ObjectRow(*r[:-1], bool(r[-1])) if r else None
        with self._read_one() as c:
            r = c.execute(_OBJECT_BY_ID, {"b_oid": object_id}).first()
            return ObjectRow(*r) if r else None

    def objects_in_state(self, state: str, *, limit: int = 1000) -> list[ObjectRow]:
        with self._read() as c:
            rows = c.execute(
                select(*OBJ_COLS).where(objects.c.state == state).order_by(objects.c.created_at).limit(limit)
            )
            return [ObjectRow(*r) for r in rows]

    @db.retrying
    def set_object_state(self, object_ids: Sequence[str], state: str, *, only_from: str | None = None) -> None:
        with self._write() as c:
            for start in range(0, len(object_ids), 500):
                cond: ColumnElement[bool] = objects.c.id.in_(list(object_ids[start : start + 500]))
                if only_from:
                    cond = and_(cond, objects.c.state == only_from)
                c.execute(update(objects).where(cond).values(state=state))

    def orphans(self, older_than: float, *, limit: int = 1000) -> list[ObjectRow]:
        """Objects unreferenced since before ``older_than`` (epoch seconds)."""
        with self._read() as c:
            rows = c.execute(
                select(*OBJ_COLS)
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
                select(*OBJ_COLS)
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
                    .where(
                        and_(objects.c.id == oid, objects.c.pack_id.is_(None), objects.c.state != ObjectState.DELETING)
                    )
                    .values(pack_id=pack.id, pack_offset=offset, state=ObjectState.PACKED)
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
            rows = c.execute(select(*OBJ_COLS).where(cond).order_by(objects.c.pack_offset))
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
            if row is not None and row.state != ObjectState.DELETING:
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
