"""Repo-side garbage collection: objects the metadata no longer knows, and history squashes.

The collector (:meth:`gateway.files.FileService.collect_garbage`) deletes unreferenced objects
through the write-back store, which queues their repo paths; the committer deletes them in
batched commits. What escapes that path — objects committed for an upload that never finished,
objects left over after a rebuild — is found here by listing ``objects/`` and comparing with
the metadata. Deleted LFS files keep counting against the account's storage until the history
is squashed (``super_squash_history``; the Hub updates the quota within about 36 hours).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.store.hub import OBJECTS_DIR, object_id_of
from gateway.sync.hubsync import HubSync

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubGcReport:
    orphans_queued: int
    drained: bool
    squashed: bool
    commits_before: int | None = None


def reclaim_orphans(sync: HubSync) -> int:
    """Queue for deletion every object of the repo the metadata has no row for."""
    head = sync.committer.head or sync.client.head()
    ids = [oid for oid in (object_id_of(f.path) for f in sync.client.list_files(OBJECTS_DIR, revision=head)) if oid]
    known = sync.repo.sync_objects(ids)
    orphans = [oid for oid in ids if oid not in known]
    if orphans:
        log.info("%d objects in the repo are unknown to the metadata: deleting them", len(orphans))
        sync.request_delete(orphans)
    return len(orphans)


def hub_maintenance(sync: HubSync, *, squash: bool = False, timeout: float = 600.0) -> HubGcReport:
    """Reclaim orphans, commit everything pending, and (``squash``) squash the history so that
    deleted objects stop counting against the storage quota."""
    queued = reclaim_orphans(sync)
    drained = sync.flush(timeout)
    squashed = False
    if squash:
        if not drained:
            log.warning("not squashing: changes are still waiting for a commit")
        else:
            new_head = sync.client.squash("hfdav: squash history")
            sync.committer.head = new_head
            sync.store.set_head(new_head)
            squashed = True
            log.info("history squashed into %s", new_head[:12])
    return HubGcReport(queued, drained, squashed)
