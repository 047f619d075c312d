"""Maintenance work behind ``hfdav gc``, ``hfdav fsck`` and ``hfdav trash`` (no printing here)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.files import ORPHAN_GRACE_S
from gateway.fsck import Fsck, FsckReport
from gateway.meta import versions as file_versions


@dataclass(frozen=True)
class GcReport:
    trash_purged: int
    packed: int
    repacked: int
    objects_deleted: int


def collect(gateway, *, grace_s: float = ORPHAN_GRACE_S, repack: bool = True, step=None) -> GcReport:
    """Purge expired trash, pack loose small objects, repack sparse packs, delete orphans.
    ``step(what)`` is called before each of these steps (progress)."""
    step = step or (lambda what: None)
    files = gateway.files
    step("purging old trash")
    purged = files.trash.purge() if files.trash is not None else 0
    file_versions.prune(gateway.repo, gateway.repo.keep_versions)
    packed = repacked = 0
    if gateway.packer is not None:
        step("packing small objects")
        packed = gateway.packer.pack_small_objects().objects
        if repack:
            step("rewriting sparse packs")
            repacked = gateway.packer.repack().packs
    step("deleting unreferenced objects")
    deleted = files.collect_garbage(grace_s=grace_s)
    return GcReport(purged, packed, repacked, deleted)


def fsck(gateway, *, repair: bool = False, verify: float = 0.0, progress=None) -> FsckReport:
    checker = Fsck(gateway.repo, gateway.store, object_hasher=gateway.files.object_hasher, progress=progress)
    return checker.run(repair=repair, verify=verify)
