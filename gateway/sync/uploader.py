"""The uploader: sends staged objects to the Hub's LFS storage, a few at a time.

``workers`` threads take staged objects oldest first (several per call when many are waiting,
so one preupload and one LFS batch request cover them) and upload them with
``preupload_lfs_files`` (the library retries each HTTP request with backoff; a failed call is
retried here with exponential backoff too). Then the object is marked ``uploaded`` in the
metadata and leaves the staging limit, which unblocks PUTs waiting on backpressure.

Small objects wait ``linger`` seconds first and the packer gets a chance to gather them into one
pack (one LFS file instead of many: the Hub counts files per repo and API calls per 5 minutes).

An object whose metadata row does not exist yet (its writer registers it just after staging, like
the packer does) keeps its staged file and is marked once the row appears; after a restart its
upload is simply repeated, which costs one request: the Hub already holds the bytes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from gateway import metrics
from gateway.meta.records import ObjectState
from gateway.meta.repo import MetadataRepository
from gateway.store.hub import HubClient, HubError, Upload, object_path
from gateway.store.writeback import StagedItem, WriteBackStore

log = logging.getLogger(__name__)

#: Default number of upload threads (each uploads its objects one LFS PUT at a time).
DEFAULT_WORKERS = 4
#: At most this many objects / bytes per upload call.
BATCH_OBJECTS = 32
BATCH_BYTES = 128 << 20
#: Retry delays of failed uploads (seconds).
RETRY_BASE_S = 1.0
RETRY_MAX_S = 60.0
#: Longest idle wait of a worker (seconds): how soon it notices a new object or a stop.
IDLE_WAIT_S = 0.5
#: How long a staged object whose metadata row is missing is kept before it counts as garbage
#: (its writer crashed or gave up between staging and registering it).
UNREGISTERED_GRACE_S = 3600.0


class Uploader:
    def __init__(
        self,
        repo: MetadataRepository,
        wb: WriteBackStore,
        client: HubClient,
        *,
        workers: int = DEFAULT_WORKERS,
        ids_are_sha256: bool = False,
        small_threshold: int = 0,
        linger: float = 1.0,
        pack_small: Callable[[], object] | None = None,
        on_uploaded: Callable[[], None] | None = None,
        label: Callable[[str], str | None] | None = None,
    ):
        self.repo = repo
        self.wb = wb
        self.client = client
        self.workers = workers
        self.ids_are_sha256 = ids_are_sha256
        self.small_threshold = small_threshold
        self.linger = linger
        self.pack_small = pack_small
        self.on_uploaded = on_uploaded
        self.label = label
        self._lock = threading.Lock()
        self._claimed: set[str] = set()
        self._unregistered: dict[str, tuple[str | None, int | None, bool, float]] = {}
        self._pack_lock = threading.Lock()
        self._kinds: dict[str, bool] = {}
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._failures = 0
        self.uploaded = 0
        self.last_error: str | None = None

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._run, name=f"hub-uploader-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))

    # -- the loop -----------------------------------------------------------------------------
    def _run(self) -> None:
        generation = 0
        while not self._stopping:
            try:
                self._settle_unregistered()
                work, lingering = self._claim()
                if not work:
                    if lingering:  # only small objects, waiting for company: do not spin on each new one
                        self._sleep(min(lingering, IDLE_WAIT_S))
                    else:
                        generation = self.wb.wait_staged(generation, IDLE_WAIT_S)
                    continue
                try:
                    self._upload(work)
                finally:
                    with self._lock:
                        self._claimed.difference_update(i.object_id for i in work)
            except Exception as exc:  # keep uploading; this batch is retried after a pause
                with self._lock:
                    self._failures += 1
                    failures = self._failures
                self.last_error = str(exc)
                delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** min(failures, 8))
                log.warning(
                    "upload failed (%s); retrying in %.0f s", exc, delay, exc_info=not isinstance(exc, HubError)
                )
                self._sleep(delay)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < end:
            time.sleep(min(0.2, end - time.monotonic()))

    def _claim(self) -> tuple[list[StagedItem], float]:
        """Objects to upload now, and (when there are none) how long the nearest small object
        still lingers (0: nothing waits)."""
        staged = self.wb.staged()
        if not staged:
            return [], 0.0
        now = time.time()
        allow_small = True
        packs = self._packs_among(staged)
        lingering = any(self._small(i) and i.object_id not in packs and now - i.since >= self.linger for i in staged)
        if self.pack_small is not None and lingering:
            if self._pack():
                staged = self.wb.staged()
                packs = self._packs_among(staged)
            else:
                allow_small = False  # another worker is packing them right now
        work: list[StagedItem] = []
        size = 0
        nearest = 0.0
        with self._lock:
            for item in staged:
                if item.object_id in self._claimed or item.object_id in self._unregistered:
                    continue
                if (
                    item.object_id not in packs
                    and self._small(item)
                    and (not allow_small or now - item.since < self.linger)
                ):
                    wait = max(0.01, item.since + self.linger - now)
                    nearest = wait if nearest == 0 else min(nearest, wait)
                    continue
                if work and (len(work) >= BATCH_OBJECTS or size + item.size > BATCH_BYTES):
                    break
                work.append(item)
                size += item.size
                self._claimed.add(item.object_id)
                if size >= BATCH_BYTES // 2 and len(staged) <= self.workers:
                    break  # few big objects waiting: spread them over the workers
        return work, (0.0 if work else nearest)

    def _small(self, item: StagedItem) -> bool:
        return item.size < self.small_threshold

    def _packs_among(self, staged: list[StagedItem]) -> set[str]:
        """Packs are small too, but they are what packing produced: they go up at once. (What
        each object is, is looked up once: a row that exists does not change its kind.)"""
        small = [i.object_id for i in staged if self._small(i)]
        if not small or self.pack_small is None:
            return set()
        with self._lock:
            unknown = [oid for oid in small if oid not in self._kinds]
        if unknown:
            found = self.repo.sync_objects(unknown)
            with self._lock:
                for oid, row in found.items():
                    self._kinds[oid] = row.is_pack
        with self._lock:
            if len(self._kinds) > 4 * len(small) + 1000:
                keep = set(small)
                self._kinds = {k: v for k, v in self._kinds.items() if k in keep}
            return {oid for oid in small if self._kinds.get(oid)}

    def _pack(self) -> bool:
        """Let the packer gather lingering small objects; False if another worker is at it."""
        if not self._pack_lock.acquire(blocking=False):
            return False
        try:
            self.pack_small()
        except Exception:  # packing is an optimization: upload the objects one by one instead
            log.warning("packing small objects failed", exc_info=True)
        finally:
            self._pack_lock.release()
        return True

    def _upload(self, work: list[StagedItem]) -> None:
        rows = self.repo.sync_objects(i.object_id for i in work) if self.ids_are_sha256 else {}

        def known_sha(oid: str) -> str | None:
            # content-hash ids are the sha256 of the bytes, except for packs (domain-separated)
            row = rows.get(oid)
            return oid if row is not None and not row.is_pack else None

        while work:
            items = [Upload(object_path(i.object_id), i.path, known_sha(i.object_id)) for i in work]
            try:
                results = self.client.upload(items)
                break
            except HubError:
                still = [i for i in work if i.path.exists()]
                if len(still) == len(work):
                    raise
                # packed or deleted meanwhile: nothing to upload for those, the rest goes again
                log.debug("%d staged objects vanished during their upload", len(work) - len(still))
                work = still
        else:
            return
        with self._lock:
            self._failures = 0
        self.last_error = None  # an earlier failure is over: it must not show in /healthz any more
        states = self.repo.mark_uploaded_many(
            [
                (i.object_id, d.sha256 if d.lfs else None, d.size if d.lfs else None)
                for i, d in zip(work, results, strict=True)
            ]
        )
        for item, done in zip(work, results, strict=True):
            self._record(item.object_id, states.get(item.object_id), done.sha256, done.size, done.lfs)
        metrics.inc("hfdav_chunks_total", len(work), state=ObjectState.UPLOADED)
        if self.on_uploaded is not None:
            self.on_uploaded()

    def _record(self, oid: str, state: str | None, sha256: str, size: int, lfs: bool) -> None:
        if state is None:
            with self._lock:
                self._unregistered.setdefault(
                    oid, (sha256 if lfs else None, size if lfs else None, lfs, time.monotonic())
                )
            return
        if state in (ObjectState.UPLOADED, ObjectState.COMMITTED):
            self.wb.mark_uploaded(oid, in_remote=lfs)
            self.uploaded += 1
            label = self.label(oid) if self.label else None
            if label:
                log.info("uploaded %s", label)

    def _settle_unregistered(self) -> None:
        with self._lock:
            pending = list(self._unregistered.items())
        for oid, (sha256, size, lfs, since) in pending:
            state = self.repo.mark_uploaded(oid, sha256, size)
            if state is None and time.monotonic() - since < UNREGISTERED_GRACE_S:
                continue
            with self._lock:
                self._unregistered.pop(oid, None)
            if state in (ObjectState.UPLOADED, ObjectState.COMMITTED):
                self.wb.mark_uploaded(oid, in_remote=lfs)
            elif state is None:
                self.wb.forget_staged(oid)
