"""LocalStore: objects as files under a directory (the embedded default)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from gateway.errors import ObjectMissing, StoreError
from gateway.meta.records import ObjectState
from gateway.store.base import OBJECT_ID_RE, ExactReader, ObjectStore, RangeStream, shard_path

log = logging.getLogger(__name__)


class LocalStore(ObjectStore):
    """Objects at ``<root>/ab/cd/<id>``. ``adopt`` renames the source in (same file system),
    fsyncs it, so an acknowledged write survives a power cut."""

    initial_state = ObjectState.COMMITTED

    def __init__(self, root: Path, *, fsync: bool = True):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync

    def path_of(self, object_id: str) -> Path:
        return self.root / shard_path(object_id)

    def adopt(self, object_id: str, source: Path, size: int) -> None:
        target = self.path_of(object_id)
        try:
            if target.exists() and target.stat().st_size == size:
                source.unlink(missing_ok=True)
                return
            target.parent.mkdir(parents=True, exist_ok=True)
            if self._fsync:
                fd = os.open(source, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.replace(source, target)
            if self._fsync:
                dfd = os.open(target.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except OSError as exc:
            raise StoreError(f"cannot store object {object_id}: {exc}") from exc

    def open_range(self, object_id: str, offset: int, length: int) -> RangeStream:
        try:
            f = open(self.path_of(object_id), "rb", buffering=0)  # noqa: SIM115 - returned to caller
        except FileNotFoundError as exc:
            raise ObjectMissing(f"object {object_id} is missing from {self.root}") from exc
        except OSError as exc:
            raise StoreError(f"cannot read object {object_id}: {exc}") from exc
        if offset:
            f.seek(offset)
        return ExactReader(f, length, f"object {object_id}")

    def delete(self, object_ids: Iterable[str]) -> None:
        for oid in object_ids:
            try:
                self.path_of(oid).unlink(missing_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot delete object {oid}: {exc}") from exc

    def list_ids(self) -> Iterator[tuple[str, int]]:
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if OBJECT_ID_RE.match(name):
                    yield name, os.stat(os.path.join(dirpath, name)).st_size

    def size_of(self, object_id: str) -> int | None:
        try:
            return self.path_of(object_id).stat().st_size
        except FileNotFoundError:
            return None
