"""Small-file packs: many small objects copied into one shared pack object.

The Hub limits files per repo (~100k) and commits per hour (~128). A folder of 100,000 small
files must therefore cost a few hundred repo files, not 100,000. The packer takes small objects
that are still local (``store.initial_state``: staged for the Hub, committed for the local
store), writes them one after the other into a pack, stores the pack, and points the small
objects' rows into it (:meth:`MetadataRepository.assign_pack`). Extents keep naming the small
object, so dedup and refcounts work per small object; reads are resolved to the pack by
:meth:`MetadataRepository.extents`.

``repack`` rewrites packs whose live share fell low (files deleted), so their dead bytes can be
reclaimed once the old pack becomes unreferenced.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gateway.meta.repo import MetadataRepository, NewObject, ObjectRow
from gateway.store.base import ObjectStore

log = logging.getLogger(__name__)

#: Objects below this size are packed. Small enough that a pack of 50 MiB holds hundreds of
#: them; large enough to cover typical documents, thumbnails and source files.
DEFAULT_PACK_THRESHOLD = 1 << 20
#: A pack is sealed once it reaches this size (the chunk size is a natural choice).
DEFAULT_PACK_TARGET = 50 << 20
#: Packs whose live bytes fall below this share of their size are rewritten by ``repack``.
REPACK_LIVE_RATIO = 0.5
_COPY_BLOCK = 1 << 20
#: Hashed before a pack's content, so pack ids live apart from object ids.
PACK_ID_DOMAIN = b"hfdav-pack\x00"


@dataclass(frozen=True)
class PackReport:
    packs: int
    objects: int
    bytes: int


class Packer:
    def __init__(
        self,
        repo: MetadataRepository,
        store: ObjectStore,
        *,
        tmp_dir: Path,
        object_hasher,
        threshold: int = DEFAULT_PACK_THRESHOLD,
        target: int = DEFAULT_PACK_TARGET,
        min_objects: int = 2,
    ):
        self.repo = repo
        self.store = store
        self.tmp_dir = Path(tmp_dir)
        self.hasher = object_hasher
        self.threshold = threshold
        self.target = target
        self.min_objects = min_objects

    def pack_small_objects(self, *, force: bool = False) -> PackReport:
        """Pack every packable object. Without ``force``, a final pack smaller than ``target``
        is only written if it holds at least ``min_objects`` objects."""
        packs = objs = nbytes = 0
        candidates = self.repo.packable_objects(state=self.store.initial_state, max_size=self.threshold)
        group: list[ObjectRow] = []
        size = 0
        for row in candidates:
            group.append(row)
            size += row.size
            if size >= self.target:
                moved = self._write_pack(group, self.repo.assign_pack)
                packs, objs, nbytes = packs + 1, objs + moved, nbytes + size
                group, size = [], 0
        if len(group) >= 2 and (force or len(group) >= self.min_objects):
            moved = self._write_pack(group, self.repo.assign_pack)
            packs, objs, nbytes = packs + 1, objs + moved, nbytes + size
        if packs:
            log.info("packed %d small objects (%d bytes) into %d packs", objs, nbytes, packs)
        return PackReport(packs, objs, nbytes)

    def repack(self, *, live_ratio: float = REPACK_LIVE_RATIO) -> PackReport:
        """Rewrite packs whose live share is below ``live_ratio``; the old packs become orphans."""
        packs = objs = nbytes = 0
        for pack_id, pack_size, live in self.repo.pack_usage():
            if pack_size == 0 or live / pack_size >= live_ratio:
                continue
            members = self.repo.pack_members(pack_id)
            if not members:
                continue  # nothing live: the collector deletes it once its rows are forgotten

            def assign(new_pack, state, placed, old=pack_id):
                self.repo.repoint_pack_members(old, new_pack, state, placed)
                return [oid for oid, _ in placed]

            moved = self._write_pack(members, assign, source_pack=pack_id, delete_sources=False)
            packs, objs, nbytes = packs + 1, objs + moved, nbytes + live
        if packs:
            log.info("repacked %d packs: %d live objects, %d bytes", packs, objs, nbytes)
        return PackReport(packs, objs, nbytes)

    def _write_pack(self, rows: list[ObjectRow], assign, *, source_pack: str | None = None, delete_sources=True) -> int:
        fd, name = tempfile.mkstemp(prefix="pack-", dir=self.tmp_dir)
        tmp = Path(name)
        h = self.hasher()
        # a pack id must never equal an object id, even for a pack holding one object
        h.update(PACK_ID_DOMAIN)
        placed: list[tuple[str, int]] = []
        offset = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for row in rows:
                    if source_pack:
                        assert row.pack_offset is not None  # a member of source_pack
                        src = self.store.open_range(source_pack, row.pack_offset, row.size)
                    else:
                        src = self.store.open_range(row.id, 0, row.size)
                    with src:
                        while piece := src.read(_COPY_BLOCK):
                            out.write(piece)
                            h.update(piece)
                    placed.append((row.id, offset))
                    offset += row.size
            pack = NewObject(h.hexdigest(), offset)
            self.store.adopt(pack.id, tmp, pack.size)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        moved = assign(pack, self.store.initial_state, placed)
        if delete_sources and moved:
            self.store.delete(moved)
        return len(moved)
