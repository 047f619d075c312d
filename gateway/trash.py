"""Trash: deleted files and folders stay restorable for a number of days.

A DELETE moves the node (metadata only) to ``/.hfdav-trash/<stamp>/<original path>``, where
``<stamp>`` is the UTC deletion time. The trash folder is hidden from the root listing but can
be browsed by URL, and anything in it can be moved back with any WebDAV client, or restored
with ``hfdav trash restore``. Deleting inside the trash deletes for good; ``hfdav gc`` (and the
server's background collector) purges entries older than ``HFDAV_TRASH_DAYS``.

The path is reserved: clients cannot write there (PUT, MKCOL, or MOVE/COPY into it get 403, see
:meth:`gateway.files.FileService.check_writable`). A file a client stored under that name before
it was reserved is renamed at start (:func:`free_reserved_name`), or every DELETE would fail.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.errors import AlreadyExists, NotFound
from gateway.meta.repo import MetadataRepository, Node
from gateway.paths import TRASH_NAME

TRASH_PATH = "/" + TRASH_NAME
_STAMP_FORMAT = "%Y-%m-%dT%H-%M-%S"


@dataclass(frozen=True)
class TrashEntry:
    trash_path: str
    original_path: str
    deleted_at: float
    is_dir: bool
    size: int


def _stamp(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime(_STAMP_FORMAT) + "Z-" + secrets.token_hex(3)


def _parse_folder(name: str) -> tuple[float, int] | None:
    """``<UTC stamp>Z-<random>-<depth>`` → (deletion time, segments of the original path)."""
    try:
        stamp, _, rest = name.partition("Z-")
        when = datetime.strptime(stamp, _STAMP_FORMAT).replace(tzinfo=UTC).timestamp()
        return when, int(rest.rsplit("-", 1)[1])
    except (ValueError, IndexError):
        return None


def in_trash(path: str) -> bool:
    return path == TRASH_PATH or path.startswith(TRASH_PATH + "/")


def free_reserved_name(repo: MetadataRepository) -> str | None:
    """If a file (not the trash folder) sits at the trash path, rename it to
    ``/.hfdav-trash.user-file`` (``-2``, ``-3``, ... if taken); returns its new path, or None."""
    node = repo.get(TRASH_PATH)
    if node is None or node.is_dir:
        return None
    for i in range(1, 1000):
        target = f"{TRASH_PATH}.user-file" + (f"-{i}" if i > 1 else "")
        if repo.get(target) is None:
            with contextlib.suppress(AlreadyExists):  # taken meanwhile: try the next name
                repo.move(TRASH_PATH, target)
                return target
    return None


class Trash:
    def __init__(self, repo: MetadataRepository, *, days: float, clock=time.time):
        self.repo = repo
        self.days = days
        self._clock = clock

    def stash(self, path: str) -> str:
        """Move ``path`` into the trash; returns where it went."""
        if self.repo.get(path) is None:
            raise NotFound(path)
        depth = path.count("/")
        folder = f"{TRASH_PATH}/{_stamp(self._clock())}-{depth}"
        target = folder + path
        self._makedirs(target.rpartition("/")[0])
        self.repo.move(path, target)
        return target

    def _makedirs(self, path: str) -> None:
        parts = [p for p in path.strip("/").split("/") if p]
        for i in range(1, len(parts) + 1):
            sub = "/" + "/".join(parts[:i])
            if self.repo.get(sub) is None:
                with contextlib.suppress(AlreadyExists):  # created concurrently
                    self.repo.mkdir(sub)

    def entries(self) -> list[TrashEntry]:
        """What can be restored, oldest first."""
        trash = self.repo.get(TRASH_PATH)
        if trash is None:
            return []
        out = []
        for folder in self.repo.children(trash.id):
            parsed = _parse_folder(folder.name)
            if parsed is None:
                continue
            deleted_at, depth = parsed
            node = self._deleted_node(folder.path, depth)
            if node is not None:
                original = node.path[len(folder.path) :]
                out.append(TrashEntry(node.path, original, deleted_at, node.is_dir, self._size(node)))
        return sorted(out, key=lambda e: e.deleted_at)

    def _deleted_node(self, folder_path: str, depth: int) -> Node | None:
        node = self.repo.get(folder_path)
        for _ in range(depth):
            if node is None or not node.is_dir:
                return None
            kids = self.repo.children(node.id)
            if len(kids) != 1:
                return None
            node = kids[0]
        return node

    def _size(self, node: Node) -> int:
        return sum(n.size for n in self.repo.walk(node.path)) if node.is_dir else node.size

    def restore(self, trash_path: str, *, to: str | None = None) -> str:
        rel = trash_path[len(TRASH_PATH) + 1 :]
        _, _, original = rel.partition("/")
        target = to or "/" + original
        if self.repo.get(target) is not None:
            raise AlreadyExists(f"{target} exists; restore it elsewhere with --to")
        self._makedirs(target.rpartition("/")[0])
        self.repo.move(trash_path, target)
        folder = TRASH_PATH + "/" + rel.partition("/")[0]
        if not self.repo.walk(folder)[1:] or all(n.is_dir for n in self.repo.walk(folder)):
            self.repo.delete(folder)  # nothing else was deleted with it
        return target

    def purge(self, *, older_than_days: float | None = None) -> int:
        """Delete trash folders older than ``older_than_days`` (default: the configured days);
        returns how many went. Unparseable names in the trash are purged too."""
        trash = self.repo.get(TRASH_PATH)
        if trash is None:
            return 0
        days = self.days if older_than_days is None else older_than_days
        cutoff = self._clock() - days * 86400
        n = 0
        for stamp_dir in self.repo.children(trash.id):
            parsed = _parse_folder(stamp_dir.name)
            if parsed is None or parsed[0] <= cutoff:
                self.repo.delete(stamp_dir.path)
                n += 1
        return n
