"""The object store contract.

An *object* is an immutable blob named by a lowercase hex id (a content hash: an id never
gets new content). The file service is the only caller. Every implementation passes
``tests/test_store_contract.py``.

Stores are thread-safe. Methods raise :class:`gateway.errors.StoreError` (``transient`` set
when a retry may help) or :class:`gateway.errors.ObjectMissing`; never a foreign exception.
"""

from __future__ import annotations

import io
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, Self

from gateway.errors import IntegrityError
from gateway.meta.records import ObjectState


class RangeStream(Protocol):
    """What :meth:`ObjectStore.open_range` returns: a binary stream read by ``read(n)`` (a
    :class:`ReadStream`, or an in-memory stream for an empty range)."""

    def read(self, n: int = -1, /) -> bytes: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None, /
    ) -> None: ...


OBJECT_ID_RE = re.compile(r"^[0-9a-f]{16,64}$")


def shard_path(object_id: str) -> str:
    """``objects/ab/cd/<id>``: two levels of 256 folders keep every folder far below the Hub's
    10k-entries limit up to ~600M objects, and local directories small."""
    return f"{object_id[:2]}/{object_id[2:4]}/{object_id}"


class ObjectStore(ABC):
    """Put, read (by range), delete and list immutable objects."""

    #: State a new object has in the metadata once :meth:`adopt` returned (see schema.OBJECT_STATES).
    initial_state: ObjectState = ObjectState.COMMITTED

    @abstractmethod
    def adopt(self, object_id: str, source: Path, size: int) -> None:
        """Store the bytes of the local file ``source`` (``size`` bytes) as ``object_id``.

        Takes ownership of ``source`` (it may be renamed away or deleted). Idempotent: storing an
        id that exists keeps the existing bytes. When it returns, :meth:`open_range` can read the
        object and the object is at least as durable as ``initial_state`` says.
        """

    @abstractmethod
    def open_range(self, object_id: str, offset: int, length: int) -> RangeStream:
        """A readable stream of ``length`` bytes of the object starting at ``offset``.

        Lazy where it can be (a remote store starts transferring on the first read). The stream
        must not return fewer bytes than asked before EOF of the range; a store that cannot
        deliver raises instead.
        """

    @abstractmethod
    def delete(self, object_ids: Iterable[str]) -> None:
        """Remove objects; ids that are absent are ignored (idempotent)."""

    @abstractmethod
    def list_ids(self) -> Iterator[tuple[str, int]]:
        """Every stored object as ``(id, size)``, in no particular order."""

    def size_of(self, object_id: str) -> int | None:
        """Stored size, or None if absent. Default: a linear scan of :meth:`list_ids`."""
        for oid, size in self.list_ids():
            if oid == object_id:
                return size
        return None

    # -- optional capabilities: every store has them, a decorator forwards them ---------------
    def prefetch(self, object_id: str, offset: int, length: int) -> None:  # noqa: B027 - optional
        """Read-ahead hint: a reader is about to need ``length`` bytes of the object from
        ``offset``. A remote store may start fetching them now. Default: nothing."""

    def status(self) -> dict | None:
        """Health details for ``/healthz`` (uploads, commits, local areas), or None when the
        store has nothing to report beyond having opened. Default: None."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, deliberately not abstract
        """Release resources (threads, connections). Default: nothing."""


class ReadStream(io.RawIOBase):
    """Base of hfdav's read streams: readable, defined by ``read(n)``, with ``readinto`` built
    on it (the streams hand on the blocks they read without copying them into a buffer first)."""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class ExactReader(ReadStream):
    """Wraps a stream that must yield exactly ``length`` bytes; raises if it ends early."""

    def __init__(self, raw: BinaryIO, length: int, what: str):
        self._raw = raw
        self._left = length
        self._what = what

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._raw.read(n)
        if not data:
            raise IntegrityError(f"{self._what}: stream ended {self._left} bytes early")
        self._left -= len(data)
        return data

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()
