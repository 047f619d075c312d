"""Seekable readers of one file version, over the object store's chunks."""

from __future__ import annotations

import bisect
import io
import logging

from gateway.errors import ObjectMissing
from gateway.meta.records import Extent
from gateway.store.base import ObjectStore, RangeStream, ReadStream

log = logging.getLogger(__name__)


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
