"""Consistency queries: what fsck and the collector compare and repair."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sqlalchemy import func, select, update

from gateway.meta import db
from gateway.meta.base import OBJ_COLS, RepositoryBase, node_select, to_node
from gateway.meta.records import Extent, NewObject, Node, ObjectRow
from gateway.meta.schema import extents, nodes, objects, versions


class ConsistencyMixin(RepositoryBase):
    """Counts and repairs for fsck and the collector."""

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
            return [ObjectRow(*r) for r in c.execute(select(*OBJ_COLS))]

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
                    node_select().where(
                        nodes.c.version_id.in_(
                            select(extents.c.version_id).where(
                                extents.c.object_id.in_(batch) | extents.c.object_id.in_(members)
                            )
                        )
                    )
                )
                for r in rows:
                    out[r.id] = to_node(r)
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
            row = c.execute(node_select().where(nodes.c.version_id == version_id)).first()
            return to_node(row) if row else None

    # ------------------------------------------------------------------ write-back and Hub sync
