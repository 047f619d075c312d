"""Snapshot commits: the committed tree as one file, replacing the journal files it covers.

A snapshot is written from the mirror (:mod:`gateway.sync.mirror`), so it holds exactly the
state of the journal batch it is named after, whatever the gateway is doing meanwhile (sealed
when the repo's metadata is: :class:`gateway.sync.repofmt.MetadataCodec`). Its commit
deletes the journal files and the older snapshot it supersedes, keeping the repo's file count and
the work of a rebuild bounded.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.store.hub import Add
from gateway.sync.mirror import RepoFiles
from gateway.sync.repofmt import journal_path, snapshot_path

if TYPE_CHECKING:
    from gateway.sync.committer import Committer

log = logging.getLogger(__name__)


def commit_snapshot(committer: Committer, *, tmp_dir: Path | None = None) -> bool:
    """Write and commit a snapshot of the mirror's batch if it is newer than the last one.
    Returns True if a snapshot was committed."""
    from gateway.sync.committer import Batch

    mirror = committer.mirror
    batch_no = mirror.batch
    if batch_no <= committer.last_snapshot_batch and not committer.resnapshot:
        return False
    with tempfile.TemporaryDirectory(prefix="hfdav-snap-", dir=tmp_dir) as tmp:
        local = Path(tmp) / "snapshot.jsonl.gz"
        header = mirror.write_snapshot(local, committer.props_source, at=time.time())
        committer.codec.seal_snapshot(local)
        files = RepoFiles.list(committer.client, committer.head)
        stale = [journal_path(b) for b in sorted(files.journals) if b <= batch_no]
        stale += [snapshot_path(b) for b in sorted(files.snapshots) if b < batch_no]
        room = committer.max_operations - 1
        batch = Batch(deletes=stale[:room])
        batch.adds[snapshot_path(batch_no)] = Add(snapshot_path(batch_no), source=local)
        if not committer._commit(batch):
            return False
    committer.last_snapshot_batch = batch_no
    committer.resnapshot = False
    trimmed = committer.repo.trim_journal(header.seq)
    log.info(
        "snapshot %d committed (seq %d); %d journal files replaced, %d journal rows trimmed",
        batch_no,
        header.seq,
        len(stale[:room]),
        trimmed,
    )
    return True
