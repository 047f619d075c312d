"""Resumable uploads of the web front: the staging area and the protocol's state.

Protocol (all under ``/.hfdav-ui/api/uploads``, session cookie and CSRF token required):

1. ``POST /api/uploads`` with JSON ``{"path": "/dest/name", "size": N, "mtime": seconds}``
   → 201 ``{"id": ..., "offset": 0, "size": N}``. The quota is checked here.
2. ``PATCH /api/uploads/<id>`` with header ``Upload-Offset: <offset>`` and the next bytes as
   body → 200 ``{"offset": new offset}``. The offset must be the current one (409 with the
   current offset otherwise); bytes past ``size`` are refused. Bytes that arrived before a
   connection broke are kept: the client asks for the offset and goes on from there.
3. ``GET /api/uploads/<id>`` → ``{"offset": ..., "size": ...}`` (after a reconnect or reload).
4. ``POST /api/uploads/<id>/finish`` → the bytes are written to the drive as one new version of
   ``path`` (missing parent folders are made) and the staging copy is removed; 409 until
   ``offset == size``.
5. ``DELETE /api/uploads/<id>`` abandons it.

The staging area is ``<data dir>/webui-uploads/<id>/`` (``meta.json`` and ``data``), outside the
drive's tree: nothing of an upload is visible over WebDAV or in listings before it finishes.
Uploads not touched for :data:`STALE_SECONDS` are removed. An id is a random 128-bit token
and belongs to the user that created it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

STALE_SECONDS = 3 * 86400
_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


class UploadError(Exception):
    def __init__(self, status: str, message: str, **extra):
        super().__init__(message)
        self.status = status
        self.extra = extra


@dataclass
class Upload:
    id: str
    user: str
    path: str
    size: int
    mtime: float | None
    offset: int
    dir: Path

    @property
    def data(self) -> Path:
        return self.dir / "data"

    def as_json(self) -> dict:
        return {"id": self.id, "path": self.path, "size": self.size, "offset": self.offset}


class UploadArea:
    def __init__(self, root: Path, *, clock=time.time):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._clock = clock

    def create(self, user: str, path: str, size: int, mtime: float | None) -> Upload:
        self.clean()
        upload_id = secrets.token_urlsafe(16)
        d = self.root / upload_id
        d.mkdir()
        (d / "data").touch()
        meta = {"user": user, "path": path, "size": size, "mtime": mtime, "created": self._clock()}
        (d / "meta.json").write_text(json.dumps(meta))
        return Upload(upload_id, user, path, size, mtime, 0, d)

    def get(self, upload_id: str, user: str) -> Upload:
        if not _ID.fullmatch(upload_id or ""):
            raise UploadError("404 Not Found", "no such upload")
        d = self.root / upload_id
        try:
            meta = json.loads((d / "meta.json").read_text())
            offset = (d / "data").stat().st_size
        except (FileNotFoundError, ValueError):
            raise UploadError("404 Not Found", "no such upload") from None
        if meta["user"] != user:
            raise UploadError("404 Not Found", "no such upload")
        return Upload(upload_id, meta["user"], meta["path"], meta["size"], meta["mtime"], offset, d)

    def append(self, upload: Upload, offset: int, body, length: int | None, block: int = 1 << 20) -> int:
        """Write the body at ``offset`` (which must be the end of what is staged); returns the
        new offset. Bytes read before the body broke stay written."""
        fd = os.open(upload.data, os.O_WRONLY | os.O_APPEND)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise UploadError("409 Conflict", "another request is writing this upload",
                                  offset=upload.offset) from None  # fmt: skip
            current = os.fstat(fd).st_size
            if offset != current:
                raise UploadError("409 Conflict", f"offset is {current}, not {offset}", offset=current)
            if length is not None and current + length > upload.size:
                raise UploadError("413 Content Too Large", "more bytes than the upload's size", offset=current)
            left = length
            while left is None or left > 0:
                piece = body.read(block if left is None else min(block, left))
                if not piece:
                    break
                if current + len(piece) > upload.size:
                    raise UploadError("413 Content Too Large", "more bytes than the upload's size", offset=current)
                _write_all(fd, piece)
                current += len(piece)
                if left is not None:
                    left -= len(piece)
            os.utime(upload.dir)
            return current
        finally:
            os.close(fd)

    def remove(self, upload: Upload) -> None:
        shutil.rmtree(upload.dir, ignore_errors=True)

    def clean(self) -> int:
        """Remove uploads not touched for :data:`STALE_SECONDS`."""
        cutoff = self._clock() - STALE_SECONDS
        n = 0
        for d in self.root.iterdir():
            with contextlib.suppress(OSError):
                newest = max(d.stat().st_mtime, (d / "data").stat().st_mtime)
                if newest < cutoff:
                    shutil.rmtree(d, ignore_errors=True)
                    n += 1
        return n


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
