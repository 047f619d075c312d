"""HubSync: the Hub backend's background work, and the file service's write-back hooks.

Start-up (:meth:`HubSync.start`), in order (for a database that already holds a drive, steps 1,
2, 4 and the Hub's part of 3 run in the background: the drive serves from its local database
while the Hub is down or hung, and syncs once it answers):

1. the dataset repo exists (created private if missing) and is an hfdav repo of a format this
   code reads (``hfdav.json``; an empty repo gets one, with ``.gitattributes`` lines that keep
   every object in LFS);
2. an empty metadata database is filled from the repo (newest snapshot + later journal files),
   so a lost data dir comes back by itself; a database older than the repo is refused;
3. what a crash may have left half done is settled: journal entries the repo already holds are
   marked committed, uploaded objects the repo holds are marked committed, staged files nobody
   registered are removed, pins of interrupted uploads are released;
4. the mirror catches up with the repo; the uploader and the committer start.

Hooks the file service calls (:class:`gateway.files.WriteBack`): :meth:`pin` when a chunk is
cut, :meth:`release` when an upload is abandoned, :meth:`version_committed` after a PUT switched
versions (in ``sync`` durability it returns once the change is in a Hub commit).

Durability (docs/HUB.md): ``async`` (default) acknowledges a PUT once its chunks are staged and
fsynced on local disk and the metadata transaction committed; the data reaches the Hub within
the commit interval (plus upload time). ``sync`` acknowledges only once data and metadata are
in a Hub commit.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from gateway.errors import HfdavError, StoreError
from gateway.meta import versions as file_versions
from gateway.meta.records import ObjectState
from gateway.meta.repo import MetadataRepository, NewObject
from gateway.store.hub import HubClient, HubError, HubStore, object_path
from gateway.store.hubhttp import urgent
from gateway.store.writeback import WriteBackStore
from gateway.sync.budget import DEFAULT_BURST, DEFAULT_COMMITS_PER_HOUR, CommitBudget
from gateway.sync.committer import Committer
from gateway.sync.mirror import Mirror, RepoFiles
from gateway.sync.repofmt import (
    GITATTRIBUTES,
    MANIFEST,
    METADATA_SEALED,
    SEALED_FORMAT_VERSION,
    BlobSealer,
    FormatError,
    MetadataCodec,
    check_manifest,
    make_manifest,
    manifest_sealed_from,
    with_lfs_attributes,
)
from gateway.sync.uploader import DEFAULT_WORKERS, Uploader

log = logging.getLogger(__name__)

#: Default seconds between a change and its commit in async mode (more changes join meanwhile).
DEFAULT_COMMIT_INTERVAL_S = 30.0
#: How long a PUT in sync mode waits for its commit before it fails (the change stays staged
#: and is committed later).
SYNC_TIMEOUT_S = 600.0
#: Files a repo may hold besides hfdav's own when hfdav is pointed at it for the first time.
HARMLESS_FILES = frozenset({GITATTRIBUTES, "README.md"})
#: Progress labels kept for chunks being uploaded (for "uploaded chunk 3/40 of /a.mkv").
MAX_LABELS = 10000
#: How long a small object waits for others to share a pack. In async mode a third of the commit
#: interval: its change is not committed sooner anyway, and a folder of 10,000 small files written
#: over a minute becomes a handful of packs instead of one pack per second. At least a second.
#: In sync mode a moment (every PUT waits for it).
ASYNC_LINGER_SHARE = 1 / 3
ASYNC_LINGER_MIN_S = 1.0
SYNC_LINGER_S = 0.25
#: How often the collector runs (seconds).
GC_INTERVAL_S = 600.0
#: Held (flock) by the one process that syncs a data dir with the repo.
LOCK_NAME = "sync.lock"
#: Start-up attempts when the Hub fails transiently, and the longest pause between two. A first
#: start (nothing to serve before the repo is read) gives up after START_DEADLINE_S: a start
#: against an endpoint that never answers says so within half a minute.
START_ATTEMPTS = 6
START_RETRY_MAX_S = 30.0
START_DEADLINE_S = 25.0
#: A data dir that holds a drive: how long the start waits for the Hub before serving without
#: it (a wrong repo or token found within this time still stops the start), and the longest
#: pause between two attempts to reach it afterwards.
CONNECT_WAIT_S = 5.0
CONNECT_RETRY_MAX_S = 60.0
#: The Hub watch: how often it looks, how long calls may fail (or one call go unanswered)
#: before a warning is logged, and how often the warning is repeated while it lasts.
WATCH_INTERVAL_S = 5.0
HUB_REPORT_AFTER_S = 30.0
HUB_REPORT_REPEAT_S = 300.0


class HubSync:
    def __init__(
        self,
        *,
        repo: MetadataRepository,
        wb: WriteBackStore,
        store: HubStore,
        client: HubClient,
        state_dir: Path,
        chunk_size: int,
        durability: str = "async",
        commit_interval: float = DEFAULT_COMMIT_INTERVAL_S,
        commits_per_hour: float = DEFAULT_COMMITS_PER_HOUR,
        commit_burst: int = DEFAULT_BURST,
        ids_are_sha256: bool = False,
        small_threshold: int = 0,
        pack_small: Callable[[], object] | None = None,
        collect_garbage: Callable[[], object] | None = None,
        upload_workers: int = DEFAULT_WORKERS,
        linger: float | None = None,
        sync_timeout: float = SYNC_TIMEOUT_S,
        encryption_record: dict | None = None,
        sealer: BlobSealer | None = None,
    ):
        """``sealer`` (client-side encryption: the keyring) seals the journal files and snapshots
        written to the repo and opens those read from it; None: the repo's metadata is in clear."""
        self.repo = repo
        self.wb = wb
        self.store = store
        self.client = client
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.chunk_size = chunk_size
        self.durability = durability
        self.ids_are_sha256 = ids_are_sha256
        self.sync_timeout = sync_timeout
        self.encryption_record = encryption_record
        self.sealer = sealer
        self.codec = MetadataCodec()
        self.collect_garbage = collect_garbage
        self.mirror = Mirror(self.state_dir / "mirror.sqlite3", client.repo_id)
        self.budget = CommitBudget(commits_per_hour, commit_burst)
        self.committer = Committer(
            repo, wb, store, client, self.mirror, self.budget, interval=commit_interval, tmp_dir=self.state_dir
        )
        self.uploader = Uploader(
            repo,
            wb,
            client,
            workers=upload_workers,
            ids_are_sha256=ids_are_sha256,
            small_threshold=small_threshold,
            linger=linger if linger is not None else _default_linger(durability, commit_interval),
            pack_small=pack_small,
            on_uploaded=self.committer.poke,
            label=self._label,
        )
        self._labels: OrderedDict[str, str] = OrderedDict()
        self._labels_lock = threading.Lock()
        self._gc_stop = threading.Event()
        self._gc_thread: threading.Thread | None = None
        self.restored_nodes = 0
        self._lock_fd: int | None = None
        #: set once the repo was checked and the uploader and committer run
        self.connected = threading.Event()
        self._connect_error: BaseException | None = None
        self._connect_thread: threading.Thread | None = None
        self._watch_thread: threading.Thread | None = None
        self._hub_reported: float | None = None
        wb.on_delete = self.request_delete
        wb.status_provider = self.status

    # -- start-up -----------------------------------------------------------------------------
    def open_repo(self) -> tuple[str, RepoFiles]:
        """Steps 1 of the start-up: the repo exists and speaks our format. Returns the head and
        the repo's journal files and snapshots."""
        head = self.client.ensure_repo()
        found = self.client.paths_info([MANIFEST, GITATTRIBUTES], revision=head)
        if MANIFEST in found:
            doc = check_manifest(self.client.read_file(MANIFEST, revision=head))
            kind = "sha256" if self.ids_are_sha256 else "keyed"
            if doc.get("object_ids", kind) != kind:
                raise FormatError(
                    f"the repo {self.client.repo_id} holds objects named by {doc.get('object_ids')} ids, "
                    f"but this gateway names them by {kind} ids (is HFDAV_ENCRYPTION_KEY set as it was?)"
                )
            if doc.get("encryption") and self.encryption_record and doc["encryption"] != self.encryption_record:
                raise FormatError(
                    f"the repo {self.client.repo_id} is encrypted under another key record than this data dir's"
                )
            sealed_from = manifest_sealed_from(doc)
            if sealed_from is not None and self.sealer is None:
                raise FormatError(
                    f"the metadata of the repo {self.client.repo_id} is sealed (client-side encryption): "
                    "set HFDAV_ENCRYPTION_KEY"
                )
            if sealed_from is None and self.sealer is not None:
                if not doc.get("encryption"):
                    raise FormatError(f"the repo {self.client.repo_id} is not encrypted, but this gateway is")
                head, sealed_from = self._seal_metadata(head, doc, found)
        else:
            head = self._initialize(head, found)
            sealed_from = 1 if self.sealer is not None else None
        if sealed_from is not None:
            self.codec = MetadataCodec(self.sealer, sealed_from)
        self.committer.codec = self.codec
        return head, RepoFiles.list(self.client, head)

    def _seal_metadata(self, head: str, doc: dict, found: dict) -> tuple[str, int]:
        """An encrypted repo whose metadata is still in clear (written before sealing existed):
        from the next journal batch on, journal files and snapshots are sealed, and a snapshot
        soon replaces the files in clear (earlier commits of the history keep them until
        ``hfdav gc --squash``). Returns the new head and the first sealed batch."""
        from gateway.store.hub import Add

        sealed_from = RepoFiles.list(self.client, head).last_batch + 1
        doc = {**doc, "version": SEALED_FORMAT_VERSION, "metadata": METADATA_SEALED, "sealed_from": sealed_from}
        adds = [Add(MANIFEST, data=(json.dumps(doc, indent=2) + "\n").encode())]
        current = ""
        if GITATTRIBUTES in found:
            current = self.client.read_file(GITATTRIBUTES, revision=head).decode("utf-8", "replace")
        attributes = with_lfs_attributes(current, sealed=True)
        if attributes is not None:
            adds.append(Add(GITATTRIBUTES, data=attributes.encode()))
        head = self.client.commit(adds, [], message="hfdav: seal the metadata", parent=head)
        self.committer.resnapshot = True
        log.warning(
            "the metadata of the encrypted repo %s was in clear: sealed from journal batch %d on; a snapshot "
            "replaces the files in clear, and `hfdav gc --squash` removes them from the history",
            self.client.repo_id,
            sealed_from,
        )
        return head, sealed_from

    def _initialize(self, head: str, found: dict) -> str:
        for remote in self.client.list_files(None, revision=head):
            if remote.path not in HARMLESS_FILES:
                raise FormatError(
                    f"the repo {self.client.repo_id} holds files ({remote.path}, ...) but no {MANIFEST}: "
                    "it is not an hfdav repo; point HF_DATASET_REPO at a new or empty dataset repo"
                )
        from gateway.store.hub import Add

        current = ""
        if GITATTRIBUTES in found:
            current = self.client.read_file(GITATTRIBUTES, revision=head).decode("utf-8", "replace")
        adds = [
            Add(
                MANIFEST,
                data=make_manifest(
                    chunk_size=self.chunk_size,
                    object_ids="sha256" if self.ids_are_sha256 else "keyed",
                    encryption=self.encryption_record,
                    sealed_from=1 if self.sealer is not None else None,
                ),
            )
        ]
        attributes = with_lfs_attributes(current, sealed=self.sealer is not None)
        if attributes is not None:
            adds.append(Add(GITATTRIBUTES, data=attributes.encode()))
        head = self.client.commit(adds, [], message="hfdav: initialize the repo", parent=head)
        log.info("initialized %s as an hfdav repo (format manifest %s)", self.client.repo_id, MANIFEST)
        return head

    def start(self) -> None:
        """Steps 1–4 of the start-up (module docstring). One process per data dir: a second one
        (another server, ``hfdav gc`` while the server runs) is refused.

        A new or emptied database needs the repo first: transient Hub failures are retried
        until START_DEADLINE_S. A database that holds a drive settles its local state here and
        reaches the Hub in the background; errors found within CONNECT_WAIT_S (a foreign repo,
        a database older than the repo) still stop the start."""
        self._lock_fd = _exclusive_lock(self.state_dir / LOCK_NAME)
        try:
            if self.repo.is_pristine():
                try:
                    with urgent():
                        head, files = self._prepare_with_retries()
                except HubError as exc:
                    if not exc.transient:
                        raise
                    raise self.client.unreachable(exc) from exc
                self._run(head, files)
            else:
                self._settle_local()
                self._connect_thread = threading.Thread(target=self._connect_loop, name="hub-connect", daemon=True)
                self._connect_thread.start()
                self.connected.wait(CONNECT_WAIT_S)
                if self._connect_error is not None:
                    raise self._connect_error
                if not self.connected.is_set():
                    problem = self.client.http.health.problem(0)
                    log.warning(
                        "the Hub does not answer yet (%s): the drive serves from its local database; "
                        "changes are kept on local disk and sent once the Hub answers",
                        problem[2] if problem else "no answer",
                    )
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = None
            self.mirror.close()
            raise
        self._watch_thread = threading.Thread(target=self._watch_loop, name="hub-watch", daemon=True)
        self._watch_thread.start()

    def _run(self, head: str, files: RepoFiles) -> None:
        """Step 4: the uploader, the committer and the collector start."""
        self.committer.start(head=head, next_batch=files.last_batch + 1, last_snapshot_batch=files.latest_snapshot)
        self.uploader.start()
        if self.collect_garbage is not None:
            self._gc_thread = threading.Thread(target=self._gc_loop, name="hub-gc", daemon=True)
            self._gc_thread.start()
        self.connected.set()

    def _connect_loop(self) -> None:
        """Reach the Hub (steps 1, 2, the rest of 3, then 4), trying again while it fails
        transiently. A lasting error is logged and kept for ``/healthz``; nothing is synced."""
        attempt = 0
        while not self._gc_stop.is_set():
            attempt += 1
            try:
                with urgent():
                    head, files = self._connect()
                if self._gc_stop.is_set():
                    return
                self._run(head, files)
                if attempt > 1:
                    log.info("the Hub answers: syncing the changes made meanwhile")
                return
            except HubError as exc:
                if not exc.transient:
                    self._connect_failed(exc)
                    return
                delay = min(CONNECT_RETRY_MAX_S, 2.0**attempt)
                log.debug("reaching the Hub: %s; again in %.0f s", exc, delay)
                self._gc_stop.wait(delay)
            except Exception as exc:  # a foreign repo, a database older than the repo, ...
                self._connect_failed(exc)
                return

    def _connect_failed(self, exc: BaseException) -> None:
        self._connect_error = exc
        log.error("cannot sync with the dataset repo %s: %s; changes stay on local disk", self.client.repo_id, exc)

    def _prepare_with_retries(self) -> tuple[str, RepoFiles]:
        deadline = time.monotonic() + START_DEADLINE_S
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return self._prepare()
            except HubError as exc:
                delay = min(START_RETRY_MAX_S, 2.0**attempt)
                if not exc.transient or attempt == START_ATTEMPTS or time.monotonic() + delay > deadline:
                    raise
                log.warning(
                    "start-up: %s; trying again in %.0f s (attempt %d of %d)", exc, delay, attempt, START_ATTEMPTS
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _settle_local(self) -> None:
        """Step 3 without the Hub: pins of interrupted uploads released, staged files checked
        against the database, uploaded objects kept on local disk until the Hub's part of the
        settlement (:meth:`_connect`) finds them committed."""
        self.repo.unpin_objects(None)
        self._settle_staged()
        for o in self.repo.uploaded_objects(limit=1_000_000):
            self.wb.pin([o.id], in_remote=o.remote_sha256 is not None)

    def _connect(self) -> tuple[str, RepoFiles]:
        """Steps 1, 2 and the Hub's part of 3 for a database that holds a drive (writes may be
        going on: only the repo's side is settled here)."""
        head, files = self.open_repo()
        self.store.set_head(head)
        self.mirror.catch_up(self.client, head, files, self.codec)
        self._settle_journal(head)
        self._settle_uploaded(head)
        return head, files

    def _prepare(self) -> tuple[str, RepoFiles]:
        head, files = self.open_repo()
        self.store.set_head(head)
        if self.repo.is_pristine() and not files.is_empty():
            self._restore_from_repo(head, files)
        else:
            self.mirror.catch_up(self.client, head, files, self.codec)
            self._settle_journal(head)
        self.repo.unpin_objects(None)
        self._settle_objects(head)
        return head, files

    def _restore_from_repo(self, head: str, files: RepoFiles) -> None:
        log.info("the metadata database is empty: restoring it from the dataset repo %s", self.client.repo_id)
        self.mirror.catch_up(self.client, head, files, self.codec)
        self.restored_nodes = copy_metadata(self.mirror.repo, self.repo, journal_base=(self.mirror.seq, head))
        log.info("restored %d files and folders from the repo (journal seq %d)", self.restored_nodes, self.mirror.seq)

    def _settle_journal(self, head: str) -> None:
        """Mark what the repo holds (the mirror knows it) as committed; refuse a database older
        than the repo."""
        through = self.mirror.seq
        last, _ = self.repo.journal_bounds()
        if through > last:
            raise FormatError(
                f"the metadata database (journal seq {last}) is older than the dataset repo (seq {through}): "
                "stop the server and run `hfdav rebuild --force` to rebuild it from the repo"
            )
        if through:
            self.repo.mark_journal_committed(through, head)

    def _settle_objects(self, head: str) -> None:
        """Reconcile staged files and object states after a crash."""
        self._settle_staged()
        self._settle_uploaded(head)

    def _settle_staged(self) -> None:
        staged = {item.object_id for item in self.wb.staged()}
        rows = self.repo.sync_objects(staged)
        for oid in staged:
            row = rows.get(oid)
            if row is None or row.state in (ObjectState.PACKED, ObjectState.DELETING):
                self.wb.forget_staged(oid)
            elif row.state in (ObjectState.UPLOADED, ObjectState.COMMITTED):
                self.wb.mark_uploaded(oid, in_remote=row.remote_sha256 is not None)
                if row.state == ObjectState.COMMITTED:
                    self.wb.mark_committed([oid])
        lost = []
        for row in self.repo.objects_in_state(ObjectState.STAGED, limit=1_000_000):
            if row.id not in staged:
                lost.append(row)
        if lost:
            dead = [r.id for r in lost if r.refcount <= 0 and not r.is_pack]
            self.repo.forget_objects(dead)
            damaged = [r.id for r in lost if r.id not in dead]
            if damaged:
                nodes = self.repo.versions_using(damaged)
                log.error(
                    "%d staged objects are gone from the local disk before their upload; these files are damaged: %s",
                    len(damaged),
                    ", ".join(n.path for n in nodes[:20]) + (" ..." if len(nodes) > 20 else ""),
                )
                self.repo.set_object_state(damaged, ObjectState.DELETING, only_from=ObjectState.STAGED)

    def _settle_uploaded(self, head: str) -> None:
        uploaded = self.repo.uploaded_objects(limit=1_000_000)
        if uploaded:
            present = self.client.paths_info([object_path(o.id) for o in uploaded], revision=head)
            done = [o.id for o in uploaded if object_path(o.id) in present]
            self.repo.mark_committed(done)
            self.wb.mark_committed(done)
            for o in uploaded:
                if o.id not in done:
                    self.wb.pin([o.id], in_remote=o.remote_sha256 is not None)

    # -- stop ---------------------------------------------------------------------------------
    def stop(self, drain_timeout: float = 60.0) -> bool:
        """Upload and commit what is pending (up to ``drain_timeout`` seconds), then stop the
        threads. Returns True if nothing was left behind."""
        self._gc_stop.set()
        if self._connect_thread is not None:
            self._connect_thread.join(timeout=max(1.0, min(drain_timeout, 30.0)))
        if self._watch_thread is not None:
            self._watch_thread.join(timeout=WATCH_INTERVAL_S + 1)
        if self.connected.is_set():
            drained = self.committer.stop(drain_timeout)
            self.uploader.stop()
        else:  # the Hub never answered: nothing to drain into
            drained = False
        self.mirror.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if not drained:
            last, through = self.repo.journal_bounds()
            log.warning(
                "stopping with %d metadata changes and %d staged bytes not yet in a Hub commit; "
                "they stay on local disk and are sent at the next start",
                last - through,
                self.wb.staged_bytes,
            )
        return drained

    def flush(self, timeout: float = 300.0) -> bool:
        """Commit everything pending now; True once nothing is left (tests, ``hfdav gc``)."""
        return self.committer.flush(timeout)

    # -- the file service's hooks -------------------------------------------------------------
    def pin(self, obj: NewObject) -> bool:
        return self.repo.pin_object(obj, state=self.wb.initial_state)

    def note_chunk(self, object_id: str, path: str, index: int, total: int | None) -> None:
        if total == 1 or not _reported_chunk(index, total):
            return  # a long upload logs its upload at every tenth, not at every chunk
        share = f" ({100 * index // total}%)" if total else ""
        with self._labels_lock:
            self._labels[object_id] = f"chunk {index}/{total if total is not None else '?'} of {path}{share}"
            while len(self._labels) > MAX_LABELS:
                self._labels.popitem(last=False)

    def _label(self, object_id: str) -> str | None:
        with self._labels_lock:
            return self._labels.pop(object_id, None)

    def release(self, object_ids: list[str]) -> None:
        self.repo.unpin_objects(object_ids)

    def version_committed(self) -> None:
        self.committer.poke()
        if self.durability != "sync":
            return
        seq = self.repo.journal_bounds()[0]
        if not self.committer.wait_committed(seq, timeout=self.sync_timeout):
            raise StoreError(
                f"the change is stored locally but not yet in a Hub commit after {self.sync_timeout:.0f} s; "
                "it will be committed later",
                transient=True,
            )

    # -- deletions ----------------------------------------------------------------------------
    def request_delete(self, object_ids: list[str]) -> None:
        """Objects the collector removed: delete them from the repo once the change that orphaned
        them is committed."""
        after = self.repo.journal_bounds()[0]
        self.repo.queue_hub_deletes([object_path(oid) for oid in object_ids], after_seq=after)
        self.committer.poke()

    def _gc_loop(self) -> None:
        while not self._gc_stop.wait(GC_INTERVAL_S):
            try:
                self.collect_garbage()
            except Exception:  # the next round tries again
                log.warning("garbage collection failed", exc_info=True)

    # -- status -------------------------------------------------------------------------------
    def status(self) -> dict:
        """The sync state for ``/healthz`` and ``hfdav stats``. ``last_error`` is set while the
        Hub fails or does not answer (``hub``), or the last upload or commit failed."""
        last, through = self.repo.journal_bounds()
        http = self.client.http
        problem = http.health.problem(HUB_REPORT_AFTER_S)
        hub: dict = {"state": "ok" if self.connected.is_set() else "connecting"}
        if self._connect_error is not None:
            hub["state"] = "error"
        if problem is not None:
            kind, since, error = problem
            hub.update(state="failing", failing_kind=kind, failing_for_s=round(time.time() - since, 1), error=error)
        hub["api_calls_window"] = http.budget.used()
        hub["api_budget"] = http.budget.budget
        oldest = self.oldest_unsynced()
        hub_error = None
        if problem is not None:
            hub_error = f"the Hub: {problem[2]} (failing for {time.time() - problem[1]:.0f} s)"
        elif self._connect_error is not None:
            hub_error = f"the Hub: {self._connect_error}"
        return {
            "head": self.committer.head,
            "pending_changes": last - through,
            "oldest_unsynced_s": None if oldest is None else round(max(0.0, time.time() - oldest), 1),
            "staged_bytes": self.wb.staged_bytes,
            "uncommitted_objects": len(self.repo.uploaded_objects(limit=10000)),
            "commits": self.committer.commits,
            "uploaded": self.uploader.uploaded,
            "queued_deletions": self.repo.count_hub_deletes(),
            "hub": hub,
            "last_error": hub_error or self.committer.last_error or self.uploader.last_error,
        }

    def oldest_unsynced(self) -> float | None:
        """When (epoch seconds) the oldest change not yet in a Hub commit was made: the oldest
        pending journal entry or staged object; None when everything is synced."""
        times = [row.created_at for row in self.repo.pending_journal(limit=1)]
        times += [item.since for item in self.wb.staged()[:1]]
        return min(times) if times else None

    # -- the Hub watch ------------------------------------------------------------------------
    def _watch_loop(self) -> None:
        while not self._gc_stop.wait(WATCH_INTERVAL_S):
            try:
                self.watch_hub()
            except Exception:  # the watch must not die; it looks again next round
                log.debug("the Hub watch failed", exc_info=True)

    def watch_hub(self) -> None:
        """Log once the Hub has failed (or left a call unanswered) for HUB_REPORT_AFTER_S, again
        every HUB_REPORT_REPEAT_S while it lasts, and once when it answers again."""
        problem = self.client.http.health.problem(HUB_REPORT_AFTER_S)
        now = time.time()
        if problem is None:
            if self._hub_reported is not None:
                self._hub_reported = None
                log.info("the Hub answers again")
            return
        kind, since, error = problem
        if now - since < HUB_REPORT_AFTER_S:
            return
        if self._hub_reported is not None and now - self._hub_reported < HUB_REPORT_REPEAT_S:
            return
        self._hub_reported = now
        oldest = self.oldest_unsynced()
        if oldest is None:
            waiting = "nothing waits to be synced"
        else:
            waiting = f"the oldest unsynced change is {now - oldest:.0f} s old"
        log.warning("the Hub has been failing for %.0f s (%s calls: %s); %s", now - since, kind, error, waiting)


def _reported_chunk(index: int, total: int | None) -> bool:
    """Whether the upload of chunk ``index`` of ``total`` is logged: the last one and the one
    that reaches each tenth (every 25th when the total is unknown)."""
    if total is None:
        return index % 25 == 1
    return index >= total or 10 * index // total > 10 * (index - 1) // total


def repo_encryption_record(client: HubClient) -> dict | None:
    """The encryption key record in the repo's hfdav.json (None: no manifest, or unencrypted)."""
    head = client.head()
    if MANIFEST not in client.paths_info([MANIFEST], revision=head):
        return None
    record = check_manifest(client.read_file(MANIFEST, revision=head)).get("encryption")
    return record if isinstance(record, dict) else None


def _exclusive_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise HfdavError(
            f"another hfdav process works on {path.parent.parent} (the server?): the Hub backend runs in one "
            "process per data dir (gunicorn: one worker with threads); stop it first"
        ) from None
    return fd


def copy_metadata(
    source: MetadataRepository, target: MetadataRepository, *, journal_base: tuple[int, str] | None = None
) -> int:
    """Load ``source``'s tree, objects and dead properties into the pristine ``target`` (one
    transaction, with the journal base: a failure leaves ``target`` pristine)."""
    n = target.restore_tree(
        source.iter_tree(), source.iter_object_records(), source.iter_properties(), journal_base=journal_base
    )
    file_versions.copy_earlier_versions(source, target)
    return n


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def _default_linger(durability: str, commit_interval: float) -> float:
    if durability == "sync":
        return SYNC_LINGER_S
    return max(ASYNC_LINGER_MIN_S, commit_interval * ASYNC_LINGER_SHARE)
