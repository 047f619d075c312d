"""Replaying the repo's metadata (snapshots and journal files) into a metadata database.

Used by ``hfdav rebuild`` (a fresh database from the repo alone) and by the committed-state
mirror the committer keeps (see :mod:`gateway.sync.mirror`). The target repository must not
journal (``journal_enabled=False``) and must take its clock from :class:`Replayer` so that every
node gets the time the change originally happened.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from gateway.errors import HfdavError
from gateway.meta import versions as file_versions
from gateway.meta.records import ObjectState
from gateway.meta.repo import Checksums, Extent, MetadataRepository, NewObject
from gateway.sync.repofmt import Entry, JournalFile, PackRecord, SnapshotReader

log = logging.getLogger(__name__)


class ReplayClock:
    """The clock a replay target uses: the time of the change being replayed."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Replayer:
    """Applies snapshots, pack records and journal entries to ``repo`` (driven by ``clock``)."""

    def __init__(self, repo: MetadataRepository, clock: ReplayClock):
        self.repo = repo
        self.clock = clock
        self.failures = 0

    def load_snapshot(self, snap: SnapshotReader) -> int:
        self.clock.now = snap.header.at
        return self.repo.restore_tree(snap.tree(), snap.objects(), snap.properties())

    def apply_file(self, jf: JournalFile) -> None:
        self.apply_packs(jf.packs, at=jf.at)
        self.apply_entries(jf.entries)

    def apply_packs(self, packs: Iterable[PackRecord], *, at: float) -> None:
        self.clock.now = at
        for p in packs:
            self.repo.place_in_pack(NewObject(p.pack, p.size), p.members, state=ObjectState.COMMITTED)

    def apply_entries(self, entries: Iterable[Entry]) -> None:
        for e in entries:
            self.clock.now = e.at
            try:
                apply_change(self.repo, e.change)
            except HfdavError as exc:
                # The change succeeded when it was made; a failure here means the history is
                # not what it should be. Keep going: the rest of the tree is still worth having.
                self.failures += 1
                log.error("replaying journal entry %d (%s) failed: %s", e.seq, e.change.get("op"), exc)


def apply_change(repo: MetadataRepository, change: dict[str, Any]) -> None:
    """Redo one journal entry (the records :class:`MetadataRepository` writes)."""
    op = change.get("op")
    if op == "put":
        parts: list[Extent] = []
        sizes: dict[str, int] = {}
        offset = 0
        for oid, ooff, length in change.get("extents") or []:
            parts.append(Extent(offset, oid, ooff, length))
            offset += length
            sizes[oid] = max(sizes.get(oid, 0), ooff + length)
        repo.put_version(
            change["path"],
            parts,
            new_objects=[NewObject(oid, size) for oid, size in sizes.items()],
            object_state=ObjectState.COMMITTED,
            content_type=change.get("content_type"),
            mtime=change.get("mtime"),
            checksums=Checksums(change.get("md5"), change.get("sha1")),
            keep_versions=int(change.get("keep") or 0),
        )
    elif op == "mkdir":
        repo.mkdir(change["path"], mtime=change.get("mtime"))
    elif op == "delete":
        repo.delete(change["path"])
    elif op == "move":
        repo.move(change["src"], change["dst"])
    elif op == "copy":
        repo.copy(change["src"], change["dst"], recursive=bool(change.get("recursive", True)))
    elif op == "mtime":
        repo.set_mtime(change["path"], change["mtime"])
    elif op == "prune":
        file_versions.prune_one(repo, change["path"], int(change.get("keep") or 0))
    elif op == "rebuilt":
        pass
    else:
        log.warning("unknown journal operation %r skipped", op)
