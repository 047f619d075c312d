"""The committer: groups uploaded objects, metadata changes and deletions into Hub commits.

One thread. Each commit holds at most :data:`MAX_OPERATIONS` operations: deletions first, then
object additions, then one journal file carrying the metadata changes whose objects are in this
commit or an earlier one (and records of the packs it adds). The order guarantees:

* an entry is committed only with or after every object it needs (objects still staged block
  it and every later entry);
* a deletion is committed only once the change that orphaned the object is (``after_seq``), and
  never while a pack that took over objects from a deleted pack is uncommitted;
* objects uploaded early (chunks of a PUT still running) are committed on their own when there
  is room, so a very large file does not wait for hundreds of commits at its end.

When to commit: once a batch is full, or ``interval`` seconds after the oldest pending change,
or at once for a PUT waiting in sync mode (group commit: every waiter whose change is ready
shares the commit) — always within the :class:`CommitBudget`.

A commit whose answer is lost (transport error, 5xx, 409, 412, 429) is never simply sent again:
the committer reads the branch head and, if it moved, checks whether this batch's journal file
(or, without one, its additions and deletions) is there. Landed: done. Not landed: retried on
the new head with ``parent_commit``. So no operation is lost or applied twice.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway import metrics
from gateway.meta.records import ObjectState
from gateway.meta.repo import MetadataRepository, SyncObject
from gateway.store.hub import Add, HubClient, HubError, HubStore, Upload, object_id_of, object_path
from gateway.store.writeback import WriteBackStore
from gateway.sync.budget import CommitBudget
from gateway.sync.mirror import Mirror
from gateway.sync.repofmt import Entry, JournalFile, MetadataCodec, PackRecord, journal_path

log = logging.getLogger(__name__)

#: Hub guidance: "we recommend adding around 50-100 files per commit" (60 s server timeout).
MAX_OPERATIONS = 100
#: Journal entries examined per batch (a journal file of this many entries is a few MB at most).
ENTRY_SCAN = 5000
#: Sync mode: how long the first waiter's commit waits for other PUTs to join it (seconds).
GROUP_COMMIT_DELAY_S = 0.2
#: How often the committer looks for work when nobody pokes it (seconds).
POLL_S = 0.5
#: While a batch waits for its interval, how often the committer checks whether it is full.
FULLNESS_CHECK_S = 2.0
#: Retry delays after a failed commit: exponential from the base up to the maximum (seconds).
RETRY_BASE_S = 1.0
RETRY_MAX_S = 60.0
#: Pause after the Hub rejected a batch outright (4xx): a person has to look (seconds).
REJECTED_PAUSE_S = 300.0
#: A snapshot is written once this many journal files accumulated since the last one (each
#: rebuild downloads at most this many), or this many entries.
SNAPSHOT_EVERY_BATCHES = 50
SNAPSHOT_EVERY_ENTRIES = 20000

metrics.describe("hfdav_chunks_total", "objects uploaded / committed to the Hub")
metrics.describe("hfdav_hub_commits_total", "Hub commits made by the committer, by kind")


@dataclass
class Batch:
    """What one commit will hold (see the module docstring for the order of operations)."""

    adds: dict[str, Add] = field(default_factory=dict)
    object_ids: list[str] = field(default_factory=list)
    packs: list[PackRecord] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    delete_candidates: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    journal: JournalFile | None = None
    full: bool = False
    blocked: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    @property
    def empty(self) -> bool:
        return not self.adds and not self.entries and not self.delete_candidates and not self.deletes

    def operations(self) -> int:
        return len(self.adds) + len(self.deletes) + (1 if self.journal else 0)


class CommitRejected(Exception):
    """The Hub refused the batch for a reason retrying will not fix."""


class Committer:
    def __init__(
        self,
        repo: MetadataRepository,
        wb: WriteBackStore,
        store: HubStore,
        client: HubClient,
        mirror: Mirror,
        budget: CommitBudget,
        *,
        interval: float,
        props_source: MetadataRepository | None = None,
        max_operations: int = MAX_OPERATIONS,
        snapshot_every: int = SNAPSHOT_EVERY_BATCHES,
        tmp_dir=None,
        clock: Callable[[], float] = time.monotonic,
        codec: MetadataCodec | None = None,
    ):
        self.repo = repo
        self.wb = wb
        self.store = store
        self.client = client
        self.mirror = mirror
        self.budget = budget
        self.interval = interval
        self.props_source = props_source or repo
        self.max_operations = max_operations
        self.snapshot_every = snapshot_every
        self.tmp_dir = tmp_dir
        self._clock = clock
        #: How journal files and snapshots are written (sealed or in clear); set from the repo's
        #: manifest before :meth:`start`.
        self.codec = codec or MetadataCodec()
        #: A snapshot is wanted even if one exists for the current batch (the metadata was just
        #: sealed: the snapshot replaces the journal files and snapshot still in clear).
        self.resnapshot = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._waiters = 0
        self._waiting_since: float | None = None
        self._flushes = 0
        self.head: str = ""
        self.next_batch = 1
        self.last_snapshot_batch = 0
        self.committed_through = 0
        self.commits = 0
        self.last_error: str | None = None
        self._busy = False
        metrics.gauge("hfdav_commit_queue_depth", self.queue_depth, "journal entries not yet in a Hub commit")

    # -- life cycle ---------------------------------------------------------------------------
    def start(self, *, head: str, next_batch: int, last_snapshot_batch: int) -> None:
        self.head = head
        self.store.set_head(head)
        self.next_batch = next_batch
        self.last_snapshot_batch = last_snapshot_batch
        self.committed_through = self.repo.journal_bounds()[1]
        self._thread = threading.Thread(target=self._run, name="hub-committer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Commit what can be committed within ``timeout`` seconds, then stop. Returns True if
        nothing committable was left behind."""
        drained = self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, timeout))
        return drained

    def poke(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def queue_depth(self) -> int:
        last, through = self.repo.journal_bounds()
        return last - through

    # -- waiting ------------------------------------------------------------------------------
    def wait_committed(self, seq: int, timeout: float | None = None) -> bool:
        """Block until every journal entry up to ``seq`` is in a Hub commit (sync mode)."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            if self.committed_through >= seq:
                return True
            self._waiters += 1
            if self._waiting_since is None:
                self._waiting_since = self._clock()
            self._cond.notify_all()
            try:
                while self.committed_through < seq and not self._stopping:
                    left = None if deadline is None else deadline - self._clock()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(min(left, 1.0) if left is not None else 1.0)
                return self.committed_through >= seq
            finally:
                self._waiters -= 1
                if self._waiters == 0:
                    self._waiting_since = None

    def flush(self, timeout: float) -> bool:
        """Commit everything committable now (ignoring the interval, not the budget); True once
        nothing is pending, False on timeout."""
        deadline = self._clock() + timeout
        with self._cond:
            self._flushes += 1
            self._cond.notify_all()
        try:
            while self._clock() < deadline:
                if self._idle():
                    return True
                with self._cond:
                    self._cond.wait(0.2)
            return self._idle()
        finally:
            with self._cond:
                self._flushes -= 1

    def _idle(self) -> bool:
        if self._busy:
            return False
        last, through = self.repo.journal_bounds()
        if last > through or self.wb.staged():
            return False
        if self.repo.uploaded_objects(limit=1):
            return False
        return not self.repo.due_hub_deletes(through, limit=1)

    # -- the loop -----------------------------------------------------------------------------
    def _run(self) -> None:
        pending_since: float | None = None
        last_build = 0.0
        failures = 0
        while True:
            with self._cond:
                if self._stopping:
                    return
                self._cond.wait(POLL_S)
                if self._stopping:
                    return
                urgent = self._flushes > 0
                group_ready = (
                    self._waiting_since is not None and self._clock() - self._waiting_since >= GROUP_COMMIT_DELAY_S
                )
            now = self._clock()
            waiting = pending_since is not None and now - pending_since < self.interval
            if waiting and not urgent and not group_ready and now - last_build < FULLNESS_CHECK_S:
                continue  # a batch is forming: look again later (or when it may be full)
            try:
                self._busy = True
                batch = self._build()
                last_build = now = self._clock()
                if batch.empty:
                    pending_since = None
                    if not batch.blocked:
                        self._maybe_snapshot()
                    continue
                if pending_since is None:
                    pending_since = now
                due = urgent or group_ready or batch.full or now - pending_since >= self.interval
                if not due or self.budget.wait_time() > 0:
                    continue
                if self._commit(batch):
                    pending_since = None
                    failures = 0
                    self.last_error = None
                    if self.snapshot_overdue():  # never idle: snapshot anyway, the mirror is consistent
                        self._maybe_snapshot()
            except CommitRejected as exc:
                self.last_error = str(exc)
                log.error("the Hub rejected a commit: %s; retrying in %.0f s", exc, REJECTED_PAUSE_S)
                self._sleep(REJECTED_PAUSE_S)
            except Exception as exc:  # the loop must survive anything; the next round retries
                failures += 1
                self.last_error = str(exc)
                delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** min(failures, 8))
                log.warning("committer: %s; retrying in %.0f s", exc, delay, exc_info=not isinstance(exc, HubError))
                self._sleep(delay)
            finally:
                self._busy = False

    def _sleep(self, seconds: float) -> None:
        deadline = self._clock() + seconds
        with self._cond:
            while not self._stopping and self._clock() < deadline:
                self._cond.wait(min(1.0, deadline - self._clock()))

    # -- building a batch ---------------------------------------------------------------------
    def _build(self) -> Batch:
        batch = Batch()
        room = self.max_operations - 1  # one operation for the journal file
        _last, through = self.repo.journal_bounds()
        rows = self.repo.pending_journal(limit=ENTRY_SCAN)
        changes = [(r, json.loads(r.entry)) for r in rows]
        wanted = {oid for _, ch in changes for oid in _objects_of(ch)}
        objs = self.repo.sync_objects(wanted)
        packs = self.repo.sync_objects({o.pack_id for o in objs.values() if o.pack_id})

        def location(oid: str) -> SyncObject | None:
            row = objs.get(oid)
            if row is not None and row.pack_id:
                return packs.get(row.pack_id)
            return row

        for row, change in changes:
            new: list[SyncObject] = []
            for oid in _objects_of(change):
                loc = location(oid)
                if loc is None or loc.state != ObjectState.UPLOADED and loc.state != ObjectState.STAGED:
                    continue  # committed already, or dead (a later change unreferenced it)
                if loc.state == ObjectState.STAGED:
                    batch.blocked = True
                    break
                if object_path(loc.id) not in batch.adds and all(x.id != loc.id for x in new):
                    new.append(loc)
            if batch.blocked:
                break
            if len(batch.adds) + len(new) > room:
                if not batch.entries:  # one change needs more objects than a commit holds
                    for loc in new[: self.max_operations - len(batch.adds)]:
                        self._add_object(batch, loc)
                batch.full = True
                break
            for loc in new:
                self._add_object(batch, loc)
            batch.entries.append(Entry(row.seq, row.created_at, change))
        if not batch.full and len(batch.adds) < room:
            # uploaded objects no pending change needs yet: chunks of PUTs still running, packs
            for o in self.repo.uploaded_objects(limit=room):
                if len(batch.adds) >= room:
                    batch.full = True
                    break
                if object_path(o.id) not in batch.adds:
                    self._add_object(batch, o)
        through_after = batch.entries[-1].seq if batch.entries else through
        if batch.entries or batch.packs:
            batch.journal = JournalFile(
                batch=self.next_batch,
                through=through_after,
                packs=batch.packs,
                entries=batch.entries,
                at=time.time(),
            )
        room_left = self.max_operations - batch.operations()
        if room_left > 0:
            due = self.repo.due_hub_deletes(through_after, limit=room_left)
            if due and not self._packs_pending(batch):
                batch.delete_candidates = due
        return batch

    def _add_object(self, batch: Batch, o: SyncObject) -> None:
        path = object_path(o.id)
        if o.remote_sha256 and o.remote_size is not None:
            add = Add(path, sha256=o.remote_sha256, size=o.remote_size)
        else:
            local = self.wb.local_path(o.id)
            if local is None:
                log.error("object %s must travel inside a commit but its local copy is gone", o.id)
                return
            add = Add(path, source=local)
        batch.adds[path] = add
        batch.object_ids.append(o.id)
        if o.is_pack:
            members = self.repo.pack_members(o.id, live_only=False)
            batch.packs.append(
                PackRecord(o.id, o.size, tuple((m.id, int(m.pack_offset or 0), m.size) for m in members))
            )

    def _packs_pending(self, batch: Batch) -> bool:
        """A pack not yet committed may hold objects moved out of a pack queued for deletion."""
        for o in self.repo.uploaded_objects(limit=10000):
            if o.is_pack and object_path(o.id) not in batch.adds:
                return True
        return any(r.is_pack for r in self.repo.objects_in_state(ObjectState.STAGED, limit=10000))

    def _resolve_deletes(self, batch: Batch) -> None:
        """Turn queued deletions into delete operations: an object alive again (the same content
        was written anew) is kept, and paths the repo does not hold are only dequeued."""
        if not batch.delete_candidates:
            return
        alive = self.repo.sync_objects(oid for oid in map(object_id_of, batch.delete_candidates) if oid)
        keep = [p for p in batch.delete_candidates if (oid := object_id_of(p)) and oid in alive
                and alive[oid].state != ObjectState.DELETING]  # fmt: skip
        check = [p for p in batch.delete_candidates if p not in keep and p not in batch.adds]
        present = self.client.paths_info(check, revision=self.head) if check else {}
        batch.deletes = [p for p in check if p in present]
        dropped = [p for p in batch.delete_candidates if p not in batch.deletes]
        if dropped:
            self.repo.drop_hub_deletes(dropped)

    # -- committing ---------------------------------------------------------------------------
    def _commit(self, batch: Batch) -> bool:
        self._resolve_deletes(batch)
        if not batch.adds and not batch.deletes and batch.journal is None:
            return True
        adds = list(batch.adds.values())
        if batch.journal is not None:
            adds.append(Add(journal_path(batch.journal.batch), data=self.codec.journal_bytes(batch.journal)))
        message = _message(batch)
        description = f"hfdav-batch: {batch.id}"
        parent = self.head
        attempt = 0
        reuploaded = False
        while True:
            wait = self.budget.wait_time()
            if wait > 0:
                if self._stopping:
                    return False
                self._sleep(min(wait, 5.0))
                continue
            self.budget.take()
            try:
                new_head = self.client.commit(
                    adds, batch.deletes, message=message, description=description, parent=parent
                )
                self._landed(batch, new_head)
                return True
            except HubError as exc:
                if exc.status == 429:
                    self.budget.pause(exc.retry_after)
                ambiguous = exc.transient or exc.status in (412,)
                log.warning("commit of batch %s failed (%s); finding out whether it landed", batch.id, exc)
                landed, head_now = self._find_out(batch, adds, parent)
                if landed:
                    log.info("commit of batch %s had landed as %s", batch.id, head_now[:12])
                    self._landed(batch, head_now)
                    return True
                if head_now != parent:
                    log.warning("the branch moved to %s without this batch: retrying on top of it", head_now[:12])
                    parent = self.head = head_now
                    self.store.set_head(head_now)
                    present = self.client.paths_info(batch.deletes, revision=head_now) if batch.deletes else {}
                    batch.deletes = [p for p in batch.deletes if p in present]
                if not ambiguous:
                    if exc.status == 400 and not reuploaded:
                        reuploaded = self._reupload(batch, adds)
                        if reuploaded:
                            continue
                    raise CommitRejected(str(exc)) from exc
                attempt += 1
                delay = exc.retry_after or min(RETRY_MAX_S, RETRY_BASE_S * 2 ** min(attempt, 8))
                self._sleep(delay)
                if self._stopping:
                    return False

    def _find_out(self, batch: Batch, adds: list[Add], parent: str) -> tuple[bool, str]:
        """Did this batch's commit land? Reads the head (and, if it moved, the batch's files)."""
        for attempt in range(1, 1000):
            try:
                head_now = self.client.head()
                if head_now == parent:
                    return False, head_now
                if batch.journal is not None:
                    path = journal_path(batch.journal.batch)
                    return path in self.client.paths_info([path], revision=head_now), head_now
                info = self.client.paths_info([a.path for a in adds] + batch.deletes, revision=head_now)
                landed = all(a.path in info for a in adds) and not any(p in info for p in batch.deletes)
                return landed, head_now
            except HubError as exc:
                delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** min(attempt, 8))
                log.warning("cannot read the branch head (%s); again in %.0f s", exc, delay)
                self._sleep(delay)
                if self._stopping:
                    raise
        raise AssertionError("unreachable")

    def _reupload(self, batch: Batch, adds: list[Add]) -> bool:
        """The Hub said an LFS object is missing: send again the ones still on local disk."""
        items = []
        for oid in batch.object_ids:
            local = self.wb.local_path(oid)
            add = batch.adds.get(object_path(oid))
            if local is not None and add is not None and add.sha256:
                items.append(Upload(add.path, local, add.sha256))
        if not items:
            return False
        log.warning("re-sending %d objects the Hub does not have", len(items))
        self.client.upload(items)
        return True

    def _landed(self, batch: Batch, new_head: str) -> None:
        self.head = new_head
        self.store.set_head(new_head)
        self.commits += 1
        kind = "journal" if batch.journal is not None else ("objects" if batch.adds else "deletes")
        metrics.inc("hfdav_hub_commits_total", kind=kind)
        if batch.journal is not None:
            self.repo.mark_journal_committed(batch.journal.through, new_head)
            self.next_batch = batch.journal.batch + 1
        if batch.object_ids:
            self.repo.mark_committed(batch.object_ids)
            self.wb.mark_committed(batch.object_ids)
            metrics.inc("hfdav_chunks_total", len(batch.object_ids), state=ObjectState.COMMITTED)
        if batch.deletes:
            self.repo.drop_hub_deletes(batch.deletes)
        try:
            self.mirror.apply(batch.journal, batch.deletes)
        except Exception:  # the mirror is rebuilt from the repo at the next start
            log.exception("applying batch %s to the metadata mirror failed", batch.id)
        with self._cond:
            if batch.journal is not None:
                self.committed_through = max(self.committed_through, batch.journal.through)
            self._cond.notify_all()
        log.info(
            "commit %s: %d objects, %d changes, %d deletions (batch %s)",
            new_head[:12],
            len(batch.object_ids),
            len(batch.entries),
            len(batch.deletes),
            batch.journal.batch if batch.journal else "-",
        )

    # -- snapshots ----------------------------------------------------------------------------
    def snapshot_due(self) -> bool:
        if self.resnapshot and self.mirror.batch > 0:
            return True
        return self.mirror.batch - self.last_snapshot_batch >= self.snapshot_every

    def snapshot_overdue(self) -> bool:
        return self.mirror.batch - self.last_snapshot_batch >= 2 * self.snapshot_every

    def _maybe_snapshot(self, *, force: bool = False) -> None:
        if not force and (not self.snapshot_due() or self.budget.wait_time() > 0):
            return
        from gateway.sync.snapshots import commit_snapshot

        commit_snapshot(self, tmp_dir=self.tmp_dir)

    def snapshot_now(self) -> None:
        """Write a snapshot now (``hfdav gc``)."""
        self._maybe_snapshot(force=True)


def _objects_of(change: dict) -> list[str]:
    if change.get("op") != "put":
        return []
    return list(dict.fromkeys(oid for oid, _off, _len in change.get("extents") or []))


def _message(batch: Batch) -> str:
    parts = []
    if batch.entries:
        parts.append(f"{len(batch.entries)} changes")
    if batch.object_ids:
        parts.append(f"{len(batch.object_ids)} objects")
    if batch.deletes:
        parts.append(f"{len(batch.deletes)} deletions")
    return "hfdav: " + ", ".join(parts or ["sync"])
