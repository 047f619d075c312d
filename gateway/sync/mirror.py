"""The committed-state mirror: a second metadata database holding exactly what the repo holds.

The committer applies every journal file it commits to the mirror, and removes what its
deletions remove. So the mirror always equals "the newest snapshot plus the journal files after
it", which is what a rebuild from the repo produces, and a snapshot written from it is consistent
whatever the live database is doing meanwhile (new files, pending uploads). It is also how
``hfdav rebuild`` works: load the repo into a mirror, then copy the mirror into the real database.

A mirror that is missing, behind the repo, or from another repo is brought up to date from the
repo at start-up (:meth:`Mirror.catch_up`).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gateway.meta.repo import MetadataRepository
from gateway.progress import Progress
from gateway.store.hub import HubClient, RemoteFile, object_id_of
from gateway.sync.replay import ReplayClock, Replayer
from gateway.sync.repofmt import (
    JOURNAL_DIR,
    SNAPSHOT_DIR,
    JournalFile,
    MetadataCodec,
    SnapshotHeader,
    SnapshotReader,
    journal_batch,
    journal_path,
    snapshot_batch,
    snapshot_path,
    write_snapshot,
)

log = logging.getLogger(__name__)

KEY_BATCH = "mirror.batch"
KEY_SEQ = "mirror.seq"
KEY_REPO = "mirror.repo"


class RepoFiles:
    """The journal files and snapshots the repo holds at one revision."""

    def __init__(self, journals: dict[int, RemoteFile], snapshots: dict[int, RemoteFile]):
        self.journals = journals
        self.snapshots = snapshots

    @classmethod
    def list(cls, client: HubClient, revision: str) -> RepoFiles:
        journals: dict[int, RemoteFile] = {}
        snapshots: dict[int, RemoteFile] = {}
        for f in client.list_files(JOURNAL_DIR, revision=revision):
            b = journal_batch(f.path)
            if b is not None:
                journals[b] = f
        for f in client.list_files(SNAPSHOT_DIR, revision=revision):
            b = snapshot_batch(f.path)
            if b is not None:
                snapshots[b] = f
        return cls(journals, snapshots)

    @property
    def latest_snapshot(self) -> int:
        return max(self.snapshots, default=0)

    @property
    def last_batch(self) -> int:
        return max([*self.journals, self.latest_snapshot, 0])

    def is_empty(self) -> bool:
        return not self.journals and not self.snapshots


class Mirror:
    """See the module docstring. Only the committer thread (or a rebuild) uses it."""

    def __init__(self, path: Path, repo_id: str):
        self.path = Path(path)
        self.repo_id = repo_id
        self._open()

    def _open(self) -> None:
        self.clock = ReplayClock()
        self.repo = MetadataRepository.open(f"sqlite:///{self.path}", journal_enabled=False, clock=self.clock)
        self.replayer = Replayer(self.repo, self.clock)

    def close(self) -> None:
        self.repo.close()

    def reset(self) -> None:
        """Start again from an empty database."""
        self.repo.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self._open()

    @property
    def batch(self) -> int:
        return int(self.repo.get_setting(KEY_BATCH) or 0)

    @property
    def seq(self) -> int:
        return int(self.repo.get_setting(KEY_SEQ) or 0)

    def _mark(self, batch: int, seq: int) -> None:
        self.repo.set_setting(KEY_REPO, self.repo_id)
        self.repo.set_setting(KEY_BATCH, str(batch))
        self.repo.set_setting(KEY_SEQ, str(seq))

    # -- keeping up ---------------------------------------------------------------------------
    def apply(self, jf: JournalFile, deleted_paths: list[str]) -> None:
        """A commit landed: it held ``jf`` (may be None) and deleted ``deleted_paths``."""
        if jf is not None:
            self.replayer.apply_file(jf)
        dead = [oid for oid in (object_id_of(p) for p in deleted_paths) if oid]
        if dead:
            self.repo.forget_unreferenced(dead)
        if jf is not None:
            self._mark(jf.batch, max(jf.through, self.seq))

    def catch_up(self, client: HubClient, revision: str, files: RepoFiles, codec: MetadataCodec | None = None) -> None:
        """Make the mirror equal the repo at ``revision`` (its files read through ``codec``)."""
        other_repo = (self.repo.get_setting(KEY_REPO) or self.repo_id) != self.repo_id
        behind_snapshot = files.latest_snapshot > self.batch
        ahead = self.batch > files.last_batch
        if other_repo or ahead or (behind_snapshot and self.batch > 0):
            log.info("the metadata mirror does not match the repo: loading it again")
            self.reset()
        load_repo(self.replayer, client, revision, files, after_batch=self.batch, mark=self._mark, codec=codec)

    # -- snapshots ----------------------------------------------------------------------------
    def write_snapshot(self, target: Path, props_source: MetadataRepository, *, at: float) -> SnapshotHeader:
        """The mirror's tree, objects and the dead properties ``props_source`` has for paths the
        mirror knows, as a snapshot file."""
        header = SnapshotHeader(self.batch, self.seq, at)
        paths: set[str] = set()

        def tree() -> Iterator:
            for rec in self.repo.iter_tree():
                paths.add(rec.path)
                yield rec

        def props() -> Iterator:
            for path, name, value in props_source.iter_properties():
                if path in paths:
                    yield path, name, value

        n = write_snapshot(target, header, tree(), self.repo.iter_object_records(), props())
        log.info("snapshot of %d nodes as of journal batch %d (seq %d)", n, header.batch, header.seq)
        return header


def load_repo(
    replayer: Replayer,
    client: HubClient,
    revision: str,
    files: RepoFiles,
    *,
    after_batch: int = 0,
    mark=None,
    codec: MetadataCodec | None = None,
) -> tuple[int, int]:
    """Replay the repo into ``replayer``'s database: its newest snapshot if the database is
    empty (``after_batch`` 0), then every journal file after. Returns ``(batch, seq)`` reached.
    ``codec`` opens sealed files (default: files in clear)."""
    codec = codec or MetadataCodec()
    batch, seq = after_batch, 0
    snapshot = files.snapshots.get(files.latest_snapshot) if after_batch == 0 and files.latest_snapshot else None
    todo = sorted(b for b in files.journals if b > (files.latest_snapshot if snapshot else after_batch))
    total = (snapshot.size if snapshot else 0) + sum(files.journals[b].size for b in todo)
    if snapshot is None and len(todo) < 2:
        bar = contextlib.nullcontext(None)  # an ordinary start-up: nothing worth a progress line
    else:
        bar = Progress("loading the repo's metadata", total)
    with tempfile.TemporaryDirectory(prefix="hfdav-load-") as tmp, bar as meter:
        if after_batch == 0 and files.latest_snapshot:
            batch = files.latest_snapshot
            local = Path(tmp) / "snapshot.jsonl.gz"
            client.download(snapshot_path(batch), local, revision=revision)
            codec.open_snapshot(batch, local)
            snap = SnapshotReader(local)
            n = replayer.load_snapshot(snap)
            seq = snap.header.seq
            log.info("loaded snapshot %d: %d nodes", batch, n)
            if meter is not None and snapshot is not None:
                meter.update(snapshot.size)
            if mark is not None:
                mark(batch, seq)
        todo = sorted(b for b in files.journals if b > batch)
        for b in todo:
            jf = codec.read_journal(b, client.read_file(journal_path(b), revision=revision))
            replayer.apply_file(jf)
            if meter is not None:
                meter.update(files.journals[b].size)
            batch, seq = b, max(seq, jf.through)
            if mark is not None:
                mark(batch, seq)
        if todo:
            log.info("replayed %d journal files up to batch %d (seq %d)", len(todo), batch, seq)
    return batch, seq
