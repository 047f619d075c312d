"""Consistency check of the metadata against itself and against the store (``hfdav fsck``).

Checks, each finding a :class:`Finding` with a kind, what it affects and whether it was repaired:

``extent-gap``        a version's extents do not cover ``[0, size)`` exactly
``dangling-extent``   an extent names an object that has no row
``refcount``          an object's refcount differs from the number of extents naming it
                      (for a pack: from the number of objects inside it)           → repaired
``pack-bounds``       a packed object lies outside its pack                            (reported)
``missing-object``    a live object is absent from the store                           (reported)
``size``              a stored object's size differs from its row                      (reported)
``hash``              a stored object's bytes do not hash to its id (``verify``)       (reported)
``unreferenced-row``  a row of an object absent from the store, referenced by nothing  → forgotten
``stray-object``      an object in the store that the database does not know           → registered
                      as an orphan, so the collector deletes it after the grace period (safe
                      on a live server: a writer that was about to reference it still can)

Findings that cannot be repaired name the files they affect.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.errors import HfdavError
from gateway.meta.repo import MetadataRepository, NewObject
from gateway.packing import PACK_ID_DOMAIN
from gateway.progress import Progress
from gateway.store.base import ObjectStore

log = logging.getLogger(__name__)
_READ_BLOCK = 1 << 20


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str
    detail: str
    repaired: bool = False
    files: tuple[str, ...] = ()


@dataclass
class FsckReport:
    findings: list[Finding] = field(default_factory=list)
    objects_checked: int = 0
    objects_hashed: int = 0
    bytes_hashed: int = 0

    @property
    def clean(self) -> bool:
        return not self.findings

    def unrepaired(self) -> list[Finding]:
        return [f for f in self.findings if not f.repaired]


class Fsck:
    def __init__(
        self,
        repo: MetadataRepository,
        store: ObjectStore,
        *,
        object_hasher,
        progress: Callable[[str, int, int], None] | None = None,
        bar: Callable[[str, int], Progress] | None = None,
    ):
        self.repo = repo
        self.store = store
        self.hasher = object_hasher
        self.progress = progress or (lambda phase, done, total: None)
        #: ``bar(label, total_bytes)``: the byte progress of the verification (bar or log lines)
        self.bar = bar or (lambda label, total: Progress(label, total, tty=False))
        #: objects ``verify_only`` did not find in the store (with the Hub: not committed yet)
        self.skipped = 0

    def run(self, *, repair: bool = False, verify: float = 0.0, seed: int | None = None) -> FsckReport:
        """``verify``: share of objects (0…1) whose bytes are read and hashed."""
        report = FsckReport()
        rows = {o.id: o for o in self.repo.all_objects()}
        self._check_versions(report, rows)
        self._check_refcounts(report, rows, repair)
        stored = self._stored()
        self._check_store(report, rows, stored, repair)
        if verify > 0:
            self._verify(report, rows, stored, verify, random.Random(seed))
        return report

    def verify_only(self, share: float = 1.0, *, seed: int | None = None) -> FsckReport:
        """Read and hash ``share`` of the objects the store holds (objects it does not hold
        are counted in :attr:`skipped`, not reported: with a remote store they are not
        committed yet); no other check."""
        report = FsckReport()
        rows = {o.id: o for o in self.repo.all_objects()}
        stored = self._stored()
        self.skipped = sum(1 for r in rows.values() if r.pack_id is None and r.id not in stored)
        self.skipped += sum(1 for r in rows.values() if r.pack_id is not None and r.pack_id not in stored)
        rows = {oid: r for oid, r in rows.items() if (r.pack_id or r.id) in stored}
        report.objects_checked = len(rows)
        self._verify(report, rows, stored, share, random.Random(seed))
        return report

    # -- metadata ------------------------------------------------------------------------------
    def _check_versions(self, report: FsckReport, rows) -> None:
        for vid, size, parts in self.repo.all_versions_with_extents():
            pos = 0
            for p in parts:
                if p.file_offset != pos or p.length <= 0:
                    report.findings.append(
                        Finding(
                            "extent-gap",
                            f"version {vid}",
                            f"extent at {p.file_offset}, expected {pos}",
                            files=self._files([p.object_id]),
                        )
                    )
                    break
                pos += p.length
                if p.object_id not in rows:
                    report.findings.append(
                        Finding(
                            "dangling-extent", p.object_id, f"named by version {vid}", files=self._files_of_version(vid)
                        )
                    )
            else:
                if pos != size:
                    report.findings.append(
                        Finding("extent-gap", f"version {vid}", f"extents cover {pos} of {size} bytes")
                    )

    def _check_refcounts(self, report: FsckReport, rows, repair: bool) -> None:
        uses = self.repo.extent_refcounts()
        members = self.repo.pack_member_counts()
        for oid, row in rows.items():
            want = members.get(oid, 0) if row.is_pack else uses.get(oid, 0)
            if row.refcount != want:
                if repair:
                    self.repo.set_refcount(oid, want)
                report.findings.append(
                    Finding("refcount", oid, f"refcount {row.refcount}, counted {want}", repaired=repair)
                )
            if row.pack_id is not None:
                pack = rows.get(row.pack_id)
                if pack is None or row.pack_offset is None or row.pack_offset + row.size > pack.size:
                    report.findings.append(
                        Finding("pack-bounds", oid, f"outside pack {row.pack_id}", files=self._files([oid]))
                    )

    # -- store ---------------------------------------------------------------------------------
    def _stored(self) -> dict[str, int]:
        out = {}
        for i, (oid, size) in enumerate(self.store.list_ids()):
            out[oid] = size
            if i % 1000 == 0:
                self.progress("listing store", i, 0)
        return out

    def _check_store(self, report: FsckReport, rows, stored: dict[str, int], repair: bool) -> None:
        total = len(rows)
        for i, (oid, row) in enumerate(rows.items()):
            if i % 200 == 0:
                self.progress("checking objects", i, total)
            report.objects_checked += 1
            if row.pack_id is not None:
                continue  # lives inside its pack, checked there
            if oid not in stored:
                if row.refcount > 0:
                    report.findings.append(Finding("missing-object", oid, "not in the store", files=self._files([oid])))
                else:
                    if repair:
                        self.repo.forget_objects([oid])
                    report.findings.append(
                        Finding("unreferenced-row", oid, "row of an absent, unused object", repaired=repair)
                    )
            elif stored[oid] != row.size:
                report.findings.append(
                    Finding("size", oid, f"stored {stored[oid]} bytes, expected {row.size}", files=self._files([oid]))
                )
        strays = [oid for oid in stored if oid not in rows]
        if strays and repair:
            self.repo.register_strays([NewObject(oid, stored[oid]) for oid in strays], state=self.store.initial_state)
        for oid in strays:
            report.findings.append(
                Finding("stray-object", oid, f"{stored[oid]} bytes unknown to the database", repaired=repair)
            )
        self.progress("checking objects", total, total)

    def _verify(self, report: FsckReport, rows, stored, share: float, rng: random.Random) -> None:
        targets = [r for r in rows.values() if (r.pack_id is None and r.id in stored) or r.pack_id is not None]
        if share < 1:
            targets = [r for r in targets if rng.random() < share]
        with self.bar("verifying", sum(r.size for r in targets)) as bar:
            self._hash_all(report, targets, bar)

    def _hash_all(self, report: FsckReport, targets, bar: Progress) -> None:
        for i, row in enumerate(targets):
            if i % 20 == 0:
                self.progress("verifying", i, len(targets))
            h = self.hasher()
            try:
                if row.pack_id is not None:
                    stream = self.store.open_range(row.pack_id, row.pack_offset, row.size)
                else:
                    if row.is_pack:
                        h.update(PACK_ID_DOMAIN)
                    stream = self.store.open_range(row.id, 0, row.size)
                with stream:
                    while piece := stream.read(_READ_BLOCK):
                        h.update(piece)
                        bar.update(len(piece))
                        report.bytes_hashed += len(piece)
            except HfdavError as exc:
                report.findings.append(Finding("hash", row.id, f"unreadable: {exc}", files=self._files([row.id])))
                continue
            report.objects_hashed += 1
            if h.hexdigest() != row.id:
                report.findings.append(
                    Finding("hash", row.id, "content does not match its id", files=self._files([row.id]))
                )
        self.progress("verifying", len(targets), len(targets))

    # -- helpers -------------------------------------------------------------------------------
    def _files(self, object_ids) -> tuple[str, ...]:
        return tuple(n.path for n in self.repo.versions_using(list(object_ids)))

    def _files_of_version(self, vid: int) -> tuple[str, ...]:
        node = self.repo.node_of_version(vid)
        return (node.path,) if node else ()
