"""WriteBackStore: local disk in front of a remote store (the Hub).

Two areas under one directory, on the same file system as the upload temp files:

* **staging** (``staging/ab/cd/<id>``): objects adopted but not yet sent to the remote. ``adopt``
  renames the chunk in and fsyncs it, so an acknowledged PUT survives a crash of the process or
  of the machine (as long as the disk survives). The bytes staged but not yet uploaded are
  bounded by ``staging_limit``: ``adopt`` waits (backpressure) until the uploader has made room,
  so a PUT far larger than the disk streams through at upload speed.
* **cache** (``cache/ab/cd/<id>``): uploaded objects and objects read from the remote, an LRU
  bounded by ``cache_size``. An object uploaded but not yet in a remote commit is *pinned*: the
  remote cannot serve it yet, so it is evicted only when the cache holds nothing else to evict
  and the remote already has the bytes (LFS), and reads then wait for the commit.

Reads: staging, then cache, then the remote. A read of a remote object from its first byte
fills the cache with the whole object in the background and is served from the growing file
(read-ahead for the common sequential GET); a read that starts inside an object (an HTTP Range
deep in a large file) fetches only growing windows of what is read, from the remote, uncached.

The sync package drives uploads and commits through :meth:`staged`, :meth:`wait_staged`,
:meth:`mark_uploaded` and :meth:`mark_committed`. Deletions of objects the remote may hold are
handed to ``on_delete`` (the sync package deletes them in batched commits).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway import metrics
from gateway.errors import IntegrityError, ObjectMissing, StoreError
from gateway.meta.records import ObjectState
from gateway.store.base import OBJECT_ID_RE, ExactReader, ObjectStore, RangeStream, ReadStream, shard_path

log = logging.getLogger(__name__)

#: A remote read that starts past this offset of an object is served by ranged windows instead
#: of a whole-object cache fill (an HTTP Range deep in a large file fetches only what it needs).
FILL_START_MAX = 0
#: Window sizes of uncached ranged reads: the first window is what the first read asks for (at
#: least the minimum: a Range GET of a few bytes costs little), then each window doubles up to
#: the maximum.
MIN_WINDOW = 64 << 10
MAX_WINDOW = 16 << 20
#: Read-ahead never starts a fill while this many are running (the reader's own and one more).
MAX_PREFETCH_FILLS = 2
#: Block size for copying bytes between the network and the cache file.
COPY_BLOCK = 1 << 20
#: How often a PUT waiting on backpressure logs that it waits (seconds).
BACKPRESSURE_LOG_S = 60.0

metrics.describe("hfdav_cache_requests_total", "object reads served from local disk (hit) or the Hub (miss)")


@dataclass(frozen=True)
class StagedItem:
    object_id: str
    path: Path
    size: int
    since: float


class WriteBackStore(ObjectStore):
    """Staging and cache on local disk in front of ``remote`` (see the module docstring)."""

    initial_state = ObjectState.STAGED

    def __init__(
        self,
        remote: ObjectStore,
        root: Path,
        *,
        staging_limit: int,
        cache_size: int,
        on_delete: Callable[[list[str]], None] | None = None,
        fsync: bool = True,
    ):
        self.remote = remote
        self.root = Path(root)
        self.staging_dir = self.root / "staging"
        self.cache_dir = self.root / "cache"
        self.staging_limit = staging_limit
        self.cache_size = cache_size
        self.on_delete = on_delete
        #: extra health details (the sync package's queue lengths), merged into :meth:`status`
        self.status_provider: Callable[[], dict] | None = None
        self._fsync = fsync
        self._cond = threading.Condition()
        self._staged: dict[str, StagedItem] = {}
        self._staged_bytes = 0
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._cache_bytes = 0
        self._fills: dict[str, _Fill] = {}
        self._closed = False
        self._generation = 0
        for d in (self.staging_dir, self.cache_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._scan()
        metrics.gauge("hfdav_staged_bytes", lambda: self._staged_bytes, "bytes staged locally, not yet uploaded")
        metrics.gauge("hfdav_cache_bytes", lambda: self._cache_bytes, "bytes in the local chunk cache")

    # -- start-up -----------------------------------------------------------------------------
    def _scan(self) -> None:
        for dirpath, _dirs, files in os.walk(self.staging_dir):
            for name in files:
                p = Path(dirpath) / name
                if OBJECT_ID_RE.match(name):
                    st = p.stat()
                    self._staged[name] = StagedItem(name, p, st.st_size, st.st_mtime)
                    self._staged_bytes += st.st_size
        found = []
        for dirpath, _dirs, files in os.walk(self.cache_dir):
            for name in files:
                p = Path(dirpath) / name
                if OBJECT_ID_RE.match(name):
                    st = p.stat()
                    found.append((st.st_mtime, name, st.st_size))
                else:
                    p.unlink(missing_ok=True)  # an interrupted fill
        for _mtime, name, size in sorted(found):
            self._cache[name] = _Cached(size)
            self._cache_bytes += size

    # -- paths --------------------------------------------------------------------------------
    def staging_path(self, object_id: str) -> Path:
        return self.staging_dir / shard_path(object_id)

    def cache_path(self, object_id: str) -> Path:
        return self.cache_dir / shard_path(object_id)

    def local_path(self, object_id: str) -> Path | None:
        """Where the object's bytes are on local disk, if they are."""
        with self._cond:
            if object_id in self._staged:
                return self._staged[object_id].path
            if object_id in self._cache:
                return self.cache_path(object_id)
        return None

    # -- the contract -------------------------------------------------------------------------
    def adopt(self, object_id: str, source: Path, size: int) -> None:
        """Stage the object (rename + fsync); waits while the staged bytes are over the limit."""
        with self._cond:
            if object_id in self._staged or object_id in self._cache:
                source.unlink(missing_ok=True)
                return
        self._wait_for_room(size)
        target = self.staging_path(object_id)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if self._fsync:
                _fsync_path(source)
            os.replace(source, target)
            if self._fsync:
                _fsync_path(target.parent)
        except OSError as exc:
            with self._cond:
                self._staged_bytes -= size
                self._cond.notify_all()
            raise StoreError(f"cannot stage object {object_id}: {exc}") from exc
        with self._cond:
            if object_id in self._staged:  # the same chunk staged twice at once
                self._staged_bytes -= size
            self._staged[object_id] = StagedItem(object_id, target, size, time.time())
            self._generation += 1
            self._cond.notify_all()

    def _wait_for_room(self, size: int) -> None:
        """Reserve ``size`` staged bytes, waiting while the limit would be passed (a single
        object larger than the limit still goes through when nothing else is staged)."""
        waited_since = None
        with self._cond:
            while self._staged_bytes > 0 and self._staged_bytes + size > self.staging_limit:
                if self._closed:
                    raise StoreError("the store is closing", transient=True)
                now = time.monotonic()
                if waited_since is None:
                    waited_since = now
                    log.debug("staging area full (%d bytes): waiting for uploads", self._staged_bytes)
                elif now - waited_since > BACKPRESSURE_LOG_S:
                    log.info("still waiting for uploads to free the staging area (%d bytes)", self._staged_bytes)
                    waited_since = now
                self._cond.wait(1.0)
            self._staged_bytes += size

    def open_range(self, object_id: str, offset: int, length: int) -> RangeStream:
        local = self._open_local(object_id, offset, length)
        if local is not None:
            metrics.inc("hfdav_cache_requests_total", result="hit")
            return local
        metrics.inc("hfdav_cache_requests_total", result="miss")
        if offset <= FILL_START_MAX and self.cache_size > 0:
            fill = self._fill_for(object_id)
            return _FillReader(fill, offset, length)
        return _WindowedReader(self.remote, object_id, offset, length)

    def prefetch(self, object_id: str, offset: int, length: int) -> None:
        """Read-ahead hint (a reader is about to need these bytes): start filling the cache with
        the object in the background, unless it is local already, being filled, or too many
        fills run. Only for reads from an object's first byte (see :meth:`open_range`)."""
        if offset > FILL_START_MAX or self.cache_size <= 0:
            return
        with self._cond:
            if (
                object_id in self._staged
                or object_id in self._cache
                or object_id in self._fills
                or len(self._fills) >= MAX_PREFETCH_FILLS
            ):
                return
        self._fill_for(object_id)

    def _open_local(self, object_id: str, offset: int, length: int) -> RangeStream | None:
        for _attempt in range(3):
            with self._cond:
                if object_id in self._staged:
                    path = self._staged[object_id].path
                elif object_id in self._cache:
                    self._cache.move_to_end(object_id)
                    path = self.cache_path(object_id)
                elif object_id in self._fills:
                    return _FillReader(self._fills[object_id], offset, length)
                else:
                    return None
            try:
                f = open(path, "rb", buffering=0)  # noqa: SIM115 - returned to the caller
                break
            except FileNotFoundError:
                continue  # moved from staging to the cache meanwhile (an uploaded object may not be
                # in the remote's commit yet), or evicted: look again, then read remotely
            except OSError as exc:
                raise StoreError(f"cannot read object {object_id}: {exc}") from exc
        else:
            return None
        if offset:
            f.seek(offset)
        return ExactReader(f, length, f"object {object_id}")

    def delete(self, object_ids: Iterable[str]) -> None:
        remote: list[str] = []
        for oid in object_ids:
            with self._cond:
                item = self._staged.pop(oid, None)
                cached = self._cache.pop(oid, None)
                if item is not None:
                    self._staged_bytes -= item.size
                if cached is not None:
                    self._cache_bytes -= cached.size
                self._cond.notify_all()
            if item is not None:
                item.path.unlink(missing_ok=True)
            else:
                remote.append(oid)
            if cached is not None:
                self.cache_path(oid).unlink(missing_ok=True)
        if remote and self.on_delete is not None:
            self.on_delete(remote)

    def list_ids(self) -> Iterator[tuple[str, int]]:
        with self._cond:
            local = {oid: item.size for oid, item in self._staged.items()}
            local.update({oid: c.size for oid, c in self._cache.items() if c.pinned})
        yield from local.items()
        for oid, size in self.remote.list_ids():
            if oid not in local:
                yield oid, size

    def size_of(self, object_id: str) -> int | None:
        with self._cond:
            if object_id in self._staged:
                return self._staged[object_id].size
            if object_id in self._cache:
                return self._cache[object_id].size
        return self.remote.size_of(object_id)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            fills = list(self._fills.values())
            self._cond.notify_all()
        for fill in fills:
            fill.cancel()
        self.remote.close()

    def status(self) -> dict:
        """Health details (``/healthz``): local areas, and the uploads and commits behind them."""
        with self._cond:
            out = {"ok": True, "staged_bytes": self._staged_bytes, "cache_bytes": self._cache_bytes}
        if self.status_provider is not None:
            out.update(self.status_provider())
        return out

    # -- the sync package's side --------------------------------------------------------------
    @property
    def staged_bytes(self) -> int:
        with self._cond:
            return self._staged_bytes

    def staged(self) -> list[StagedItem]:
        """Objects waiting for upload, oldest first."""
        with self._cond:
            return sorted(self._staged.values(), key=lambda i: i.since)

    def wait_staged(self, generation: int, timeout: float) -> int:
        """Wait until something was staged after ``generation`` (or ``timeout``); returns the
        current generation."""
        with self._cond:
            if self._generation == generation and not self._closed:
                self._cond.wait(timeout)
            return self._generation

    def mark_uploaded(self, object_id: str, *, in_remote: bool) -> None:
        """The uploader sent the object: it leaves the staging limit and moves to the cache,
        pinned until :meth:`mark_committed`. ``in_remote``: the remote holds the bytes (LFS), so
        the local copy may go if space runs out; False: the commit itself carries them."""
        target = self.cache_path(object_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._cond:  # one step for readers: the object is staged or cached, never neither
            item = self._staged.pop(object_id, None)
            if item is None:
                return
            self._staged_bytes -= item.size
            self._cond.notify_all()
            try:
                os.replace(item.path, target)
            except FileNotFoundError:
                return  # deleted meanwhile
            self._cache[object_id] = _Cached(item.size, pinned=True, evictable=in_remote)
            self._cache_bytes += item.size
        if self._fsync:
            _drop_page_cache(target)
        self._evict()

    def mark_committed(self, object_ids: Iterable[str]) -> None:
        """A remote commit holds these objects: their cached copies become ordinary cache."""
        with self._cond:
            for oid in object_ids:
                cached = self._cache.get(oid)
                if cached is not None:
                    cached.pinned = False
        self._evict()

    def pin(self, object_ids: Iterable[str], *, in_remote: bool = True) -> None:
        """Start-up: these cached objects are uploaded but not committed yet."""
        with self._cond:
            for oid in object_ids:
                cached = self._cache.get(oid)
                if cached is not None:
                    cached.pinned, cached.evictable = True, in_remote

    def forget_staged(self, object_id: str) -> None:
        """Start-up: a staged file nobody references (a crash before its metadata commit)."""
        with self._cond:
            item = self._staged.pop(object_id, None)
            if item is not None:
                self._staged_bytes -= item.size
                self._cond.notify_all()
        if item is not None:
            item.path.unlink(missing_ok=True)

    # -- cache --------------------------------------------------------------------------------
    def _evict(self) -> None:
        doomed: list[str] = []
        with self._cond:
            over = self._cache_bytes - self.cache_size
            if over <= 0:
                return
            for evictable_pinned in (False, True):
                for oid, c in list(self._cache.items()):
                    if over <= 0:
                        break
                    if c.pinned and not (evictable_pinned and c.evictable):
                        continue
                    if evictable_pinned:
                        log.info("cache full: dropping the local copy of %s before its commit", oid)
                    del self._cache[oid]
                    self._cache_bytes -= c.size
                    over -= c.size
                    doomed.append(oid)
        for oid in doomed:
            self.cache_path(oid).unlink(missing_ok=True)

    def _fill_for(self, object_id: str) -> _Fill:
        with self._cond:
            fill = self._fills.get(object_id)
            if fill is None:
                part = self.cache_dir / f".fill-{object_id}-{uuid.uuid4().hex[:8]}"
                fill = _Fill(self, object_id, part)
                self._fills[object_id] = fill
                fill.start()
            return fill

    def _fill_done(self, fill: _Fill, ok: bool) -> None:
        with self._cond:
            self._fills.pop(fill.object_id, None)
            if not ok or self._closed:
                fill.part.unlink(missing_ok=True)
                return
            target = self.cache_path(fill.object_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(fill.part, target)
            if fill.object_id not in self._cache:
                self._cache[fill.object_id] = _Cached(fill.size or 0)
                self._cache_bytes += fill.size or 0
        self._evict()


class _Cached:
    __slots__ = ("size", "pinned", "evictable")

    def __init__(self, size: int, *, pinned: bool = False, evictable: bool = True):
        self.size = size
        self.pinned = pinned
        self.evictable = evictable


def _drop_page_cache(path: Path) -> None:
    """Let the kernel forget an uploaded object's pages (it stays on disk as cache).

    An upload stream passes every byte through the page cache twice on its way to the Hub: a
    file as large as the memory would otherwise push out everything else, inside a container
    the page cache is charged to its memory limit, and on virtual machines whose free memory
    goes back to the host, every page that is not reused must be faulted in fresh from the host
    (seen costing more CPU than hashing). Dropped right after upload, the same pages serve the
    next chunk. The file was fsynced when it was staged, so all its pages are clean."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        _drop_fd_pages(fd)
    finally:
        os.close(fd)


def _drop_fd_pages(fd: int) -> None:
    with contextlib.suppress(OSError):  # advice only
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_whole(remote: ObjectStore, object_id: str) -> tuple[RangeStream, int]:
    opener = getattr(remote, "open_whole", None)
    if opener is not None:
        return opener(object_id)
    size = remote.size_of(object_id)
    if size is None:
        raise ObjectMissing(f"object {object_id} is not in the remote store")
    return remote.open_range(object_id, 0, size), size


class _Fill:
    """Downloads one whole object into a cache file in a background thread; readers follow."""

    def __init__(self, store: WriteBackStore, object_id: str, part: Path):
        self.store = store
        self.object_id = object_id
        self.part = part
        self.size: int | None = None
        self.written = 0
        self.error: BaseException | None = None
        self.done = False
        self._cancelled = False
        self._cond = threading.Condition()
        self._fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"fill-{self.object_id[:8]}", daemon=True).start()

    def cancel(self) -> None:
        self._cancelled = True

    def pread(self, n: int, offset: int) -> bytes:
        return os.pread(self._fd, n, offset)

    def _run(self) -> None:
        ok = False
        try:
            stream, size = _open_whole(self.store.remote, self.object_id)
            with self._cond:
                self.size = size
                self._cond.notify_all()
            written = 0
            with stream:
                while not self._cancelled:
                    block = stream.read(COPY_BLOCK)
                    if not block:
                        break
                    os.pwrite(self._fd, block, written)
                    written += len(block)
                    if written - self.written >= COPY_BLOCK or written == size:
                        # readers are woken per block, not per network piece: fewer thread switches
                        with self._cond:
                            self.written = written
                            self._cond.notify_all()
            with self._cond:
                self.written = written
            ok = not self._cancelled and self.written == size
            if not ok and not self._cancelled:
                raise IntegrityError(f"object {self.object_id}: got {self.written} of {size} bytes")
            if ok and self.store._fsync:
                # on disk before it is renamed into the cache (a crash must not leave a cached
                # object of the right name and the wrong bytes); then its pages are clean and
                # may go: readers still behind read the rest from disk
                os.fdatasync(self._fd)
                _drop_fd_pages(self._fd)
        except BaseException as exc:  # reported to every reader of this fill
            self.error = exc
        finally:
            with self._cond:
                self.done = True
                self._cond.notify_all()
            self.store._fill_done(self, ok)

    def wait_for(self, end: int) -> None:
        """Block until bytes up to ``end`` are written (or the fill ended)."""
        with self._cond:
            while not self.done and self.written < end:
                self._cond.wait(1.0)
            if self.error is not None and self.written < end:
                err = self.error
                if isinstance(err, StoreError):
                    raise err
                raise StoreError(f"reading object {self.object_id}: {err}", transient=True) from err

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def __del__(self):
        self.release()


class _FillReader(ReadStream):
    """Reads ``length`` bytes from ``offset`` of an object being filled into the cache."""

    def __init__(self, fill: _Fill, offset: int, length: int):
        self._fill = fill
        self._pos = offset
        self._end = offset + length

    def read(self, n: int = -1) -> bytes:
        if self._pos >= self._end:
            return b""
        if n is None or n < 0:
            n = self._end - self._pos
        n = min(n, self._end - self._pos, COPY_BLOCK)
        self._fill.wait_for(self._pos + 1)
        available = min(self._fill.written - self._pos, n)
        if available <= 0:
            raise IntegrityError(f"object {self._fill.object_id}: ended before byte {self._pos}")
        data = self._fill.pread(available, self._pos)
        if not data:
            raise IntegrityError(f"object {self._fill.object_id}: short read at {self._pos}")
        self._pos += len(data)
        return data


class _WindowedReader(ReadStream):
    """Uncached remote read in growing windows: the first ranged GET asks for what the first
    read wants (at least :data:`MIN_WINDOW`), each next one for twice as much up to
    :data:`MAX_WINDOW`."""

    def __init__(self, remote: ObjectStore, object_id: str, offset: int, length: int):
        self._remote = remote
        self._oid = object_id
        self._pos = offset
        self._end = offset + length
        self._window = 0
        self._stream: RangeStream | None = None
        self._stream_end = offset

    def read(self, n: int = -1) -> bytes:
        if self._pos >= self._end:
            return b""
        if n is None or n < 0:
            n = self._end - self._pos
        if self._stream is None or self._pos >= self._stream_end:
            self._next_window(n)
        data = self._stream.read(min(n, self._stream_end - self._pos))
        if not data:
            raise IntegrityError(f"object {self._oid}: remote stream ended at {self._pos}")
        self._pos += len(data)
        return data

    def _next_window(self, wanted: int) -> None:
        if self._stream is not None:
            self._stream.close()
        self._window = min(MAX_WINDOW, max(MIN_WINDOW, wanted, self._window * 2))
        size = min(self._window, self._end - self._pos)
        self._stream = self._remote.open_range(self._oid, self._pos, size)
        self._stream_end = self._pos + size

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        super().close()
