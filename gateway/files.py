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

import builtins
import fcntl
import logging
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, cast

from gateway.errors import (
    Conflict,
    InsufficientStorage,
    NotFound,
    QuotaExceeded,
    Reserved,
    StoreError,
)
from gateway.meta.records import NO_CHECKSUMS, Checksums, Extent, NewObject, Node, ObjectState
from gateway.paths import normalize
from gateway.reader import VersionReader
from gateway.store.base import ObjectStore
from gateway.trash import TRASH_PATH, Trash, in_trash
from gateway.write_session import (
    DIGEST_INLINE_MAX,
    EMPTY_CHECKSUMS,
    ContentDigests,
    StagedChunk,
    WriteBack,
    WriteSession,
    chunk_hasher,
)

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
__all__ = [
    "DIGEST_INLINE_MAX",
    "EMPTY_CHECKSUMS",
    "ORPHAN_GRACE_S",
    "ContentDigests",
    "FileService",
    "StagedChunk",
    "VersionReader",
    "WriteBack",
    "WriteSession",
    "chunk_hasher",
]


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
