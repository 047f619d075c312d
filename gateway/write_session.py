"""Write sessions of the file service: one upload cut into chunks, hashed and staged on local disk.

:class:`WriteSession` is what :meth:`gateway.files.FileService.open_write` returns; the content's
MD5 and SHA-1 are computed beside it (:class:`ContentDigests`), and finished chunks are fsynced
by the service's flush threads while the body still arrives.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from gateway.errors import (
    ChecksumMismatch,
    IncompleteUpload,
    InsufficientStorage,
    QuotaExceeded,
    StoreError,
    is_disk_full,
)
from gateway.meta.records import Checksums, NewObject, Node

if TYPE_CHECKING:
    from gateway.files import FileService

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
