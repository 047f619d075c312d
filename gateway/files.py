"""The file service: write sessions, seekable readers and namespace operations.

Knows nothing of WebDAV or of any particular store. "Where does a PUT go":
:meth:`FileService.open_write` → :class:`WriteSession.write` (chunks cut, hashed and staged
on local disk as they arrive; the content's MD5 and SHA-1 computed beside them) →
:meth:`WriteSession.commit` (byte count checked, chunks handed to the store, then one metadata
transaction switches the file to the new version, with its modification time and checksums).

A write that cannot be right leaves the current version as it was and nothing staged behind: a
body longer than announced, a body that would take the drive over its quota (counted on the
bytes received, whatever was announced), a full disk (:class:`InsufficientStorage`, 507). The
trash folder is hidden from clients' writes (:class:`Reserved`): only the trash moves things in.
"""

from __future__ import annotations

import bisect
import builtins
import contextlib
import fcntl
import hashlib
import io
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from gateway.errors import (
    ChecksumMismatch,
    Conflict,
    IncompleteUpload,
    InsufficientStorage,
    NotFound,
    ObjectMissing,
    QuotaExceeded,
    Reserved,
    StoreError,
    is_disk_full,
)
from gateway.meta.records import NO_CHECKSUMS, Checksums, Extent, NewObject, Node, ObjectState
from gateway.paths import normalize
from gateway.store.base import ObjectStore, RangeStream, ReadStream
from gateway.trash import TRASH_PATH, Trash, in_trash

if TYPE_CHECKING:
    from gateway.meta.repo import MetadataRepository

log = logging.getLogger(__name__)

#: ``open_write(current=...)`` not given: the session reads the node itself.
_UNKNOWN = object()

#: Locks over chunk ids used while a chunk is registered and stored early (write-back).
STAGE_STRIPES = 64

#: How long an unreferenced object stays readable before the collector may delete it. A GET
#: that opened the previous version of an overwritten file reads its chunks lazily; this is
#: how long such a reader can take.
ORPHAN_GRACE_S = 6 * 3600
#: Threads that fsync finished chunks while uploads go on (disk-bound work; two keep one disk busy).
FLUSH_THREADS = 2
#: Threads that compute content checksums beside the uploads (one per upload at a time).
DIGEST_THREADS = 4
#: Writes smaller than this are hashed in the caller's thread: handing them over costs more.
DIGEST_INLINE_MAX = 64 << 10


class _Hasher(Protocol):
    """A hash object, as :mod:`hashlib` makes them."""

    def update(self, data: bytes | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


def chunk_hasher() -> _Hasher:
    """The default content hash naming objects (hex digest = object id). With encryption the
    composition root passes a keyed hash instead, so ids reveal nothing about content."""
    return hashlib.sha256()


class ContentDigests:
    """MD5 and SHA-1 of a file's content, the checksums sync clients compare (ownCloud's
    ``oc:checksums``). MD5 alone runs at about a third of the speed the rest of a PUT needs, so
    big writes are hashed in a pool thread while the caller goes on with the next block: hashlib
    releases the GIL on big buffers, and one block per upload is in flight at a time, which
    keeps the order. ``pool`` None: everything in the caller's thread."""

    def __init__(self, pool: ThreadPoolExecutor | None, *, enabled: bool = True):
        self._pool = pool
        self._enabled = enabled
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha1 = hashlib.sha1(usedforsecurity=False)
        self._pending: Future | None = None

    def _hash(self, data) -> None:
        self._md5.update(data)
        self._sha1.update(data)

    def update(self, data: bytes) -> None:
        if not self._enabled:
            return
        self._wait()
        if self._pool is None or len(data) < DIGEST_INLINE_MAX:
            self._hash(data)
        else:
            # the caller may reuse a mutable buffer once write() returns: hand over an immutable copy
            self._pending = self._pool.submit(self._hash, data if type(data) is bytes else bytes(data))

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def result(self) -> Checksums:
        """The digests; none (both None) when checksums are off (``HFDAV_CHECKSUMS=off``)."""
        self._wait()
        if not self._enabled:
            return Checksums(None, None)
        return Checksums(self._md5.hexdigest(), self._sha1.hexdigest())

    def cancel(self) -> None:
        with contextlib.suppress(Exception):
            self._wait()


#: The checksums of a 0-byte file.
EMPTY_CHECKSUMS = ContentDigests(None).result()


@dataclass(frozen=True)
class StagedChunk:
    path: Path
    object_id: str
    size: int


class WriteBack(Protocol):
    """A write-back pipeline behind the store (the Hub sync): chunks are staged while an upload
    goes on and reach the remote store in the background."""

    def pin(self, obj: NewObject) -> bool:
        """Register a chunk cut by an upload in progress (pinned: the collector keeps it), or pin
        the row of an equal object. True: the caller must store the bytes."""

    def note_chunk(self, object_id: str, path: str, index: int, total: int | None) -> None:
        """Progress: chunk ``index`` of ``total`` of the file ``path`` (for upload logs)."""

    def release(self, object_ids: list[str]) -> None:
        """The upload that pinned these chunks was abandoned."""

    def version_committed(self) -> None:
        """A PUT switched versions. Returns at once, or (sync durability) once the change is in a
        remote commit; raises StoreError(transient) if that takes too long."""


class WriteSession:
    """One upload of a new file version. Feed :meth:`write`, then :meth:`commit` or :meth:`abort`.

    Memory use is one write block; the chunk being cut lives in a temporary file. Nothing is
    visible to readers until :meth:`commit` returns.
    """

    def __init__(
        self,
        service: FileService,
        path: str,
        *,
        expected_length: int | None,
        content_type: str | None,
        mtime: float | None,
        announced: Checksums | None = None,
        progress: Callable[[str, int, int | None, int, int | None], None] | None = None,
        limit: int | None = None,
    ):
        self._svc = service
        self._limit = limit  # the most bytes the quota leaves room for
        self.path = path
        self.expected_length = expected_length
        self.content_type = content_type
        self.mtime = mtime
        self.written = 0
        self._chunks: list[StagedChunk] = []
        self._fd: int | None = None
        self._tmp: Path | None = None
        self._hash: _Hasher | None = None
        self._chunk_len = 0
        self._done = False
        self._progress = progress
        self._flushes: list[Future] = []
        self._digests = ContentDigests(service.digest_pool, enabled=service.checksums)
        self._announced = announced
        self.checksums: Checksums | None = None

    # -- streaming --------------------------------------------------------------------------
    def write(self, data: bytes) -> int:
        if self._done:
            raise ValueError("write after commit/abort")
        self._digests.update(data)
        view = memoryview(data)
        try:
            if self._limit is not None and self.written + len(view) > self._limit:
                raise QuotaExceeded(f"the upload would exceed the quota of {self._svc.quota} bytes; it was discarded")
            try:
                self._write(view)
            except OSError as exc:
                if is_disk_full(exc):
                    raise InsufficientStorage(f"no space left for the upload: {exc}") from exc
                raise
            if self.expected_length is not None and self.written > self.expected_length:
                raise IncompleteUpload(f"body is longer than the announced {self.expected_length} bytes")
        except BaseException:
            self.abort()  # the upload cannot succeed any more: nothing of it stays staged
            raise
        return len(data)

    def _write(self, view: memoryview) -> None:
        size = self._svc.chunk_size
        while view:
            if self._fd is None:
                self._start_chunk()
            room = size - self._chunk_len
            piece = view[:room]
            assert self._fd is not None and self._hash is not None  # a chunk is open
            self._hash.update(piece)
            _write_all(self._fd, piece)
            self._chunk_len += len(piece)
            self.written += len(piece)
            view = view[len(piece) :]
            if self._chunk_len >= size:
                self._finish_chunk()

    def _start_chunk(self) -> None:
        fd, name = tempfile.mkstemp(prefix="put-", dir=self._svc.tmp_dir)
        self._fd, self._tmp, self._hash, self._chunk_len = fd, Path(name), self._svc.object_hasher(), 0

    def _finish_chunk(self, *, last: bool = False) -> None:
        # the chunk goes to disk in the background while the next one streams in; commit()
        # waits for all of them, so an acknowledged PUT is on disk without a long final pause.
        # The last one is only closed: the store's adopt makes it durable (ObjectStore.adopt),
        # and a second fsync here, in another thread, would only add a wait.
        fd, tmp, digest = self._fd, self._tmp, self._hash
        assert fd is not None and tmp is not None and digest is not None  # a chunk is open
        if last:
            self._fd = None
            try:
                os.close(fd)
            except OSError:
                tmp.unlink(missing_ok=True)
                raise
        else:
            self._flushes.append(self._svc.flush_and_close(fd))
        chunk = StagedChunk(tmp, digest.hexdigest(), self._chunk_len)
        self._chunks.append(chunk)
        self._fd = self._tmp = self._hash = None
        self._chunk_len = 0
        if self._progress:
            self._progress(self.path, len(self._chunks), self._expected_chunks(), self.written, self.expected_length)
        self._svc.stage_early(chunk, self)

    def _expected_chunks(self) -> int | None:
        if self.expected_length is None:
            return None
        return max(1, -(-self.expected_length // self._svc.chunk_size))

    # -- outcome ----------------------------------------------------------------------------
    def commit(self) -> Node:
        """Check the byte count and make the new version current (one transaction)."""
        if self._done:
            raise ValueError("session already finished")
        try:
            if self.expected_length is not None and self.written != self.expected_length:
                raise IncompleteUpload(
                    f"received {self.written} of {self.expected_length} announced bytes; the upload was discarded"
                )
            if self._fd is not None and self._chunk_len:
                self._finish_chunk(last=True)
            elif self._fd is not None:
                os.close(self._fd)
                if self._tmp is not None:
                    self._tmp.unlink(missing_ok=True)
                self._fd = self._tmp = None
            self._wait_flushes()
            self.checksums = self._digests.result()
            self._check_announced()
            node = self._svc._commit_session(self)
            self._done = True
            return node
        except (OSError, StoreError) as exc:
            self.abort()
            if is_disk_full(exc):
                raise InsufficientStorage(f"no space left to store the upload: {exc}") from exc
            raise
        except BaseException:
            self.abort()
            raise

    def _check_announced(self) -> None:
        """The digests the client sent with the body (a field it left out is not checked)."""
        if self._announced is None or not self._svc.checksums:
            return
        for name in ("md5", "sha1"):
            expected = getattr(self._announced, name)
            if expected and expected.lower() != getattr(self.checksums, name):
                raise ChecksumMismatch(f"the body's {name.upper()} is not the announced {expected}; upload discarded")

    def _wait_flushes(self) -> None:
        flushes, self._flushes = self._flushes, []
        errors = [f.exception() for f in flushes]
        failed = next((e for e in errors if e is not None), None)
        if failed is not None:
            if is_disk_full(failed):
                raise InsufficientStorage(f"no space left for the upload: {failed}") from failed
            raise StoreError(f"cannot write the upload to local disk: {failed}", transient=True) from failed

    def abort(self) -> None:
        """Discard everything this session staged. Safe to call more than once."""
        with contextlib.suppress(StoreError):
            self._wait_flushes()
        self._digests.cancel()
        if self._fd is not None:
            os.close(self._fd)
            if self._tmp is not None:
                self._tmp.unlink(missing_ok=True)
            self._fd = self._tmp = None
        for chunk in self._chunks:
            chunk.path.unlink(missing_ok=True)
        if self._chunks:
            self._svc.release_early([c.object_id for c in self._chunks])
        self._chunks.clear()
        self._done = True

    @property
    def chunks(self) -> list[StagedChunk]:
        return list(self._chunks)


def _write_all(fd: int, data) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


class VersionReader(ReadStream):
    """Seekable, lazy reader of one file version. Opens an object stream only when bytes
    at that position are read; seeking is free. Raises (never returns short) when the store
    cannot deliver, so a GET is never silently truncated."""

    def __init__(self, store: ObjectStore, parts: list[Extent], size: int, resolve=None):
        self._store = store
        self._parts = parts
        self._resolve = resolve
        self._starts = [p.file_offset for p in parts]
        self._size = size
        self._pos = 0
        self._stream: RangeStream | None = None
        self._stream_pos = -1
        self._stream_end = -1

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        pos = max(0, base + offset)
        self._pos = pos
        return pos

    def read(self, n: int = -1) -> bytes:
        if self._pos >= self._size:
            return b""
        if n is None or n < 0:
            n = self._size - self._pos
        n = min(n, self._size - self._pos)
        pieces = []
        while n > 0:
            if self._stream is None or self._stream_pos != self._pos or self._pos >= self._stream_end:
                self._open_at(self._pos)
            assert self._stream is not None  # opened just above
            try:
                data = self._stream.read(min(n, self._stream_end - self._pos))
            except ObjectMissing:
                # a remote or lazy stream finds its object gone only when it reads
                if not self._refresh(self._pos):
                    raise
                self._close_stream()  # reopened where the extent lives now
                continue
            pieces.append(data)
            self._pos += len(data)
            self._stream_pos = self._pos
            n -= len(data)
        # Most reads fall inside one extent: hand that block on without copying it again.
        if len(pieces) == 1 and type(pieces[0]) is bytes:
            return pieces[0]
        return b"".join(pieces)

    def _open_at(self, pos: int) -> None:
        self._close_stream()
        i = bisect.bisect_right(self._starts, pos) - 1
        part = self._parts[i]
        inner = pos - part.file_offset
        try:
            self._stream = self._store.open_range(part.object_id, part.object_offset + inner, part.length - inner)
        except ObjectMissing:
            if not self._refresh(pos):
                raise
            part = self._parts[i]
            self._stream = self._store.open_range(part.object_id, part.object_offset + inner, part.length - inner)
        self._stream_pos = pos
        self._stream_end = part.file_offset + part.length
        if inner == 0 and i + 1 < len(self._parts):
            # a sequential read: a remote store may start fetching the next extent now
            nxt = self._parts[i + 1]
            self._store.prefetch(nxt.object_id, nxt.object_offset, nxt.length)

    def _refresh(self, pos: int) -> bool:
        """The object under ``pos`` is missing: it may just have been moved into a pack. Look up
        the version's extents again; True if the one at ``pos`` lives elsewhere now (False:
        nothing moved, or the version itself is gone)."""
        if self._resolve is None:
            return False
        i = bisect.bisect_right(self._starts, pos) - 1
        fresh = self._resolve()
        if not fresh or len(fresh) != len(self._parts) or fresh[i] == self._parts[i]:
            return False
        self._parts = fresh
        return True

    def _close_stream(self) -> None:
        if self._stream is not None:
            try:
                self._stream.close()
            except Exception:  # a failing close of a read stream loses nothing
                log.debug("closing object stream failed", exc_info=True)
            self._stream = None

    def close(self) -> None:
        self._close_stream()
        super().close()


class FileService:
    """Files and folders over a metadata repository and an object store."""

    def __init__(
        self,
        repo: MetadataRepository,
        store: ObjectStore,
        *,
        tmp_dir: Path,
        chunk_size: int,
        quota: int | None = None,
        object_hasher=chunk_hasher,
        trash: Trash | None = None,
        write_back: WriteBack | None = None,
        sync_chunks: bool = True,
        checksums: bool = True,
        clock=time.time,
    ):
        self.repo = repo
        #: whether uploads get their MD5 and SHA-1 (``oc:checksums``); about 2.3 s of CPU per GiB
        self.checksums = checksums
        self.store = store
        self.tmp_root = Path(tmp_dir)
        # every process writes into a folder of its own, held by an flock for its lifetime:
        # start-up cleaning removes only folders whose process is gone (several gunicorn
        # workers, or a restarted worker, never delete each other's uploads in flight)
        self.tmp_dir, tmp_lock = _claim_private_dir(self.tmp_root)
        self._tmp_lock: int | None = tmp_lock
        self.chunk_size = chunk_size
        self.quota = quota
        self.object_hasher = object_hasher
        self.trash = trash
        self.write_back = write_back
        self._clock = clock
        # stage_early holds the stripe of a chunk id from its registration until its bytes are in
        # the store, so a concurrent equal chunk never dedups against bytes not stored yet
        self._stripes = [threading.Lock() for _ in range(STAGE_STRIPES)]
        # Writers hand chunks to the store and register them under the read side of this lock;
        # the collector deletes orphans under the write side, so a chunk that a writer just
        # de-duplicated against cannot vanish between the check and the metadata commit.
        self._gc_lock = _RWLock()
        self._sync_chunks = sync_chunks
        self._flusher = ThreadPoolExecutor(max_workers=FLUSH_THREADS, thread_name_prefix="hfdav-flush")
        #: where content checksums are computed beside uploads (None: in the request thread)
        self.digest_pool: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=DIGEST_THREADS, thread_name_prefix="hfdav-digest"
        )

    def flush_and_close(self, fd: int) -> Future:
        """fsync (if enabled) and close ``fd`` in the background."""

        def job():
            try:
                if self._sync_chunks:
                    os.fsync(fd)
            finally:
                os.close(fd)

        return self._flusher.submit(job)

    def tmp_files(self) -> list[Path]:
        """Temporary files of this process's uploads in flight."""
        return [p for p in self.tmp_dir.iterdir() if p.name != _LOCK_NAME]

    def close(self) -> None:
        """Give up this process's temporary folder (nothing may be in flight)."""
        self._flusher.shutdown(wait=True)
        if self.digest_pool is not None:
            self.digest_pool.shutdown(wait=True)
        if self._tmp_lock is not None:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            os.close(self._tmp_lock)
            self._tmp_lock = None

    def clean_tmp(self) -> int:
        """Remove leftovers of uploads whose process died (crash, kill): returns files removed."""
        n = 0
        for sub in self.tmp_root.iterdir():
            if sub == self.tmp_dir:
                continue
            if sub.is_dir():
                lock = _try_lock(sub / _LOCK_NAME)
                if lock is None:
                    continue  # a live process owns it
                n += sum(1 for p in sub.iterdir() if p.name != _LOCK_NAME)
                shutil.rmtree(sub, ignore_errors=True)
                os.close(lock)
            else:
                sub.unlink(missing_ok=True)
                n += 1
        return n

    # -- lookups ----------------------------------------------------------------------------
    def stat(self, path: str) -> Node | None:
        return self.repo.get(normalize(path))

    def list(self, node: Node) -> list[Node]:
        if not node.is_dir:
            raise Conflict(f"{node.path!r} is not a folder")
        return self.repo.children(node.id)

    def stat_for_read(self, path: str) -> tuple[Node, builtins.list[Extent]] | None:
        """The node at ``path`` and, for a file, its extents, read in one statement: the pair is
        consistent even while a writer replaces the file (the old version's chunks stay readable
        for the orphan grace period, its extent rows do not)."""
        return self.repo.get_with_extents(normalize(path))

    def open_read(self, node: Node, extents: builtins.list[Extent] | None = None) -> VersionReader:
        """A reader of ``node``'s version; pass the ``extents`` read with the node
        (:meth:`stat_for_read`) when the node came from an earlier query."""
        if node.is_dir or node.version_id is None:
            raise Conflict(f"{node.path!r} is not a file")
        vid = node.version_id
        parts = extents if extents is not None else self.repo.extents(vid)
        if sum(p.length for p in parts) != node.size:
            raise Conflict(f"{node.path!r} changed while it was opened; retry")
        return VersionReader(self.store, parts, node.size, resolve=lambda: self.repo.extents(vid))

    def used_bytes(self) -> int:
        return self.repo.used_bytes()

    def available_bytes(self) -> int | None:
        if self.quota is None:
            return None
        return max(0, self.quota - self.used_bytes())

    # -- writes -----------------------------------------------------------------------------
    def check_quota(self, incoming: int | None, replacing: int = 0, *, used: int | None = None) -> None:
        """QuotaExceeded if ``incoming`` bytes replacing ``replacing`` would pass the quota;
        ``used``: the bytes in use, when the caller has already counted them."""
        if self.quota is None or incoming is None:
            return
        if (self.used_bytes() if used is None else used) - replacing + incoming > self.quota:
            raise QuotaExceeded(f"storing {incoming} bytes would exceed the quota of {self.quota} bytes")

    def check_space(self, incoming: int) -> None:
        """InsufficientStorage if the disk of the staging folder has no room for ``incoming``
        bytes: refused before the body is read, so the client gets the 507 (a refusal halfway
        through a large body reaches a client still sending as a broken connection)."""
        try:
            st = os.statvfs(self.tmp_dir)
        except OSError:
            return  # cannot tell: the writes themselves will say
        free = st.f_bavail * st.f_frsize
        if incoming > free:
            raise InsufficientStorage(f"no space left for {incoming} bytes (the disk has {free} bytes free)")

    @staticmethod
    def check_writable(path: str) -> None:
        """Reserved for the trash folder and anything in it: clients may read, move out and
        delete there, but never write (see :mod:`gateway.trash`)."""
        if in_trash(path):
            raise Reserved(f"{TRASH_PATH} is reserved for the trash; choose another name")

    def open_write(
        self,
        path: str,
        *,
        expected_length: int | None = None,
        content_type: str | None = None,
        mtime: float | None = None,
        announced: Checksums | None = None,
        progress=None,
        current: Node | None | object = _UNKNOWN,
    ) -> WriteSession:
        """A session writing a new version of ``path``. ``mtime``: the modification time the
        client set (None: the commit's time); ``announced``: digests the client sent with the
        body, checked at commit (ChecksumMismatch); ``current``: the node at ``path`` (None:
        there is none) when the caller has just read it (the commit checks again anyway)."""
        path = normalize(path)
        self.check_writable(path)
        node = self.repo.get(path) if current is _UNKNOWN else cast("Node | None", current)
        if node is not None and node.is_dir:
            raise Conflict(f"{path!r} is a folder")
        replacing = node.size if node else 0
        used = None if self.quota is None else self.used_bytes()  # counted once for both
        self.check_quota(expected_length, replacing, used=used)
        limit = None if self.quota is None or used is None else max(0, self.quota - used + replacing)
        return WriteSession(
            self,
            path,
            expected_length=expected_length,
            content_type=content_type,
            mtime=mtime,
            announced=announced,
            progress=progress,
            limit=limit,
        )

    def stage_early(self, chunk: StagedChunk, session: WriteSession | None = None) -> None:
        """With a write-back pipeline, hand each chunk to the store as soon as it is cut, while
        the upload goes on: it is registered and pinned first (the collector keeps it, an equal
        chunk dedups against it), then adopted, which waits while the staging area is full
        (backpressure: a PUT larger than the disk streams through). The last chunk of an upload
        of known length waits for the commit, which stores it with the metadata in one
        transaction. Without a pipeline: nothing, the chunks are adopted at commit."""
        wb = self.write_back
        if wb is None:
            return
        if session is not None:
            wb.note_chunk(chunk.object_id, session.path, len(session.chunks), session._expected_chunks())
            if session.expected_length is not None and session.written >= session.expected_length:
                return
        with self._stripe(chunk.object_id):
            with self._gc_lock.reading():
                fresh = wb.pin(NewObject(chunk.object_id, chunk.size))
            if fresh:
                self.store.adopt(chunk.object_id, chunk.path, chunk.size)
            else:
                chunk.path.unlink(missing_ok=True)  # an equal chunk is stored already: dedup

    def _stripe(self, object_id: str) -> threading.Lock:
        return self._stripes[int(object_id[:8], 16) % STAGE_STRIPES]

    def release_early(self, object_ids: builtins.list[str]) -> None:
        """An upload was abandoned: the chunks it staged early are no longer pinned by it."""
        if self.write_back is not None:
            self.write_back.release(object_ids)

    def _commit_session(self, session: WriteSession) -> Node:
        if self.quota is not None:  # again: other uploads may have finished meanwhile
            current = self.repo.get(session.path)
            self.check_quota(session.written, current.size if current and not current.is_dir else 0)
        if self.write_back is not None:
            return self._commit_staged(session)
        parts: list[Extent] = []
        new_objects: list[NewObject] = []
        offset = 0
        with self._gc_lock.reading():
            for chunk in session.chunks:
                parts.append(Extent(offset, chunk.object_id, 0, chunk.size))
                offset += chunk.size
                existing = self.repo.get_object(chunk.object_id)
                live = existing is not None and (existing.refcount > 0 or existing.pack_id)
                if live and existing is not None and existing.state != ObjectState.DELETING:
                    chunk.path.unlink(missing_ok=True)  # identical chunk already stored: dedup
                else:
                    self.store.adopt(chunk.object_id, chunk.path, chunk.size)
                    new_objects.append(NewObject(chunk.object_id, chunk.size))
            return self.repo.put_version(
                session.path,
                parts,
                new_objects=new_objects,
                object_state=self.store.initial_state,
                content_type=session.content_type,
                mtime=session.mtime,
                checksums=session.checksums or NO_CHECKSUMS,
            )

    def _commit_staged(self, session: WriteSession) -> Node:
        """Commit a session whose chunks :meth:`stage_early` stored and pinned already (a chunk
        whose temporary file is still there was kept for now: it is stored here, deduplicated);
        then, in sync durability, wait until the write-back pipeline has it in a remote commit."""
        wb = self.write_back
        assert wb is not None  # only called with a write-back pipeline
        parts: list[Extent] = []
        offset = 0
        for chunk in session.chunks:
            parts.append(Extent(offset, chunk.object_id, 0, chunk.size))
            offset += chunk.size
        with self._gc_lock.reading():
            for chunk in session.chunks:
                if not chunk.path.exists():
                    continue
                with self._stripe(chunk.object_id):
                    existing = self.repo.get_object(chunk.object_id)
                    live = existing is not None and existing.state != ObjectState.DELETING
                    if live and existing is not None and (existing.refcount > 0 or existing.pack_id):
                        chunk.path.unlink(missing_ok=True)
                    else:
                        self.store.adopt(chunk.object_id, chunk.path, chunk.size)
            node = self.repo.put_version(
                session.path,
                parts,
                new_objects=[NewObject(c.object_id, c.size) for c in session.chunks],
                object_state=self.store.initial_state,
                content_type=session.content_type,
                mtime=session.mtime,
                checksums=session.checksums or NO_CHECKSUMS,
            )
        wb.version_committed()
        return node

    def write_bytes(self, path: str, data: bytes, **kwargs) -> Node:
        """Convenience: store ``data`` as the content of ``path``."""
        session = self.open_write(path, expected_length=len(data), **kwargs)
        session.write(data)  # aborts the session itself if it fails
        return session.commit()

    def create_empty(self, path: str) -> Node:
        """A real 0-byte file (LOCK on an unmapped URL needs one)."""
        path = normalize(path)
        self.check_writable(path)
        return self.repo.put_version(path, [], checksums=EMPTY_CHECKSUMS, create_only=True)

    def mkdir(self, path: str) -> Node:
        path = normalize(path)
        self.check_writable(path)
        return self.repo.mkdir(path)

    def delete(self, path: str) -> builtins.list[Node]:
        """Delete ``path`` (recursively). With a trash, the tree is moved there instead and
        nothing is returned; inside the trash, deletion is final. Returns removed nodes."""
        path = normalize(path)
        if self.trash is not None and not in_trash(path):
            self.trash.stash(path)
            return []
        return self.repo.delete(path)

    def move(self, src: str, dst: str, *, overwrite: bool = False) -> Node:
        src, dst = normalize(src), normalize(dst)
        self.check_writable(dst)
        if src == TRASH_PATH:
            raise Reserved(f"{TRASH_PATH} itself cannot be moved")
        if overwrite and self.repo.get(dst) is not None:
            self.repo.delete(dst)
        return self.repo.move(src, dst)

    def copy(self, src: str, dst: str, *, recursive: bool = True, overwrite: bool = False) -> Node:
        """Copy ``src`` to ``dst``. Without ``overwrite`` an existing ``dst`` is never touched:
        the check and the copy are one transaction (AlreadyExists if ``dst`` appeared)."""
        src, dst = normalize(src), normalize(dst)
        self.check_writable(dst)
        if overwrite and self.repo.get(dst) is not None:
            self.repo.delete(dst)
        return self.repo.copy(src, dst, recursive=recursive)

    def set_mtime(self, path: str, mtime: float) -> None:
        self.repo.set_mtime(normalize(path), mtime)

    def read_bytes(self, path: str) -> bytes:
        node = self.stat(path)
        if node is None:
            raise NotFound(path)
        with self.open_read(node) as r:
            return r.read()

    # -- garbage ----------------------------------------------------------------------------
    def collect_garbage(self, *, grace_s: float = ORPHAN_GRACE_S) -> int:
        """Delete objects unreferenced for longer than ``grace_s``; returns how many."""
        total = 0
        with self._gc_lock.writing():
            while self.repo.forget_packed_orphans(self._clock() - grace_s):
                pass
        while True:
            batch = self.repo.orphans(self._clock() - grace_s)
            if not batch:
                return total
            ids = [o.id for o in batch]
            with self._gc_lock.writing():
                self.repo.set_object_state(ids, ObjectState.DELETING)
                try:
                    self.store.delete(ids)
                except StoreError:
                    log.warning("deleting %d orphaned objects failed; will retry", len(ids), exc_info=True)
                    return total
                total += self.repo.forget_objects(ids)


_LOCK_NAME = ".owner.lock"


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _claim_private_dir(root: Path) -> tuple[Path, int]:
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="p-", dir=root))
    fd = _try_lock(path / _LOCK_NAME)
    assert fd is not None, "a fresh directory cannot be locked by anyone else"
    return path, fd


class _RWLock:
    """Many readers or one writer (threads of one process)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    def reading(self):
        return _Guard(self._acquire_read, self._release_read)

    def writing(self):
        return _Guard(self._acquire_write, self._release_write)

    def _acquire_read(self):
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1

    def _release_read(self):
        with self._cond:
            self._readers -= 1
            self._cond.notify_all()

    def _acquire_write(self):
        with self._cond:
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True

    def _release_write(self):
        with self._cond:
            self._writer = False
            self._cond.notify_all()


class _Guard:
    def __init__(self, enter, leave):
        self._enter, self._leave = enter, leave

    def __enter__(self):
        self._enter()
        return self

    def __exit__(self, *exc):
        self._leave()
        return False
