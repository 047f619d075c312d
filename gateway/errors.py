"""The one error tree of hfdav.

Every adapter translates foreign exceptions into these classes once, at its edge
(``raise ... from exc``). The DAV adapter maps them to HTTP statuses in one table
(:mod:`gateway.dav.errors`). ``transient`` tells the retry helper whether trying
again may succeed.
"""

from __future__ import annotations

import errno


class HfdavError(Exception):
    """Base class of every error raised by hfdav code."""

    transient: bool = False


class ConfigError(HfdavError):
    """Settings are invalid. ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in self.problems))


class HubUnreachable(HfdavError):
    """A first start (no drive in the data dir yet) could not reach the Hub: nothing can be
    served before the dataset repo is read. The message is one line naming the endpoint."""


class NotFound(HfdavError):
    """The path (or an object) does not exist."""


class AlreadyExists(HfdavError):
    """The target name is taken."""


class Conflict(HfdavError):
    """The operation does not fit the tree (missing parent, file where a folder is needed, ...)."""


class InvalidPath(HfdavError):
    """A name or path is not acceptable (``..``, NUL, too long, ...)."""


class IncompleteUpload(HfdavError):
    """The body ended before (or after) the announced length; nothing was changed."""


class ChecksumMismatch(IncompleteUpload):
    """The body's digest differs from the one the client announced with it; nothing was changed."""


class LengthRequired(HfdavError):
    """A PUT without Content-Length, chunked framing or X-Expected-Entity-Length."""


class QuotaExceeded(HfdavError):
    """Storing this would exceed the configured quota."""


class InsufficientStorage(HfdavError):
    """The disk (or the database's disk) is full; nothing was changed."""


class Reserved(HfdavError):
    """The path belongs to hfdav itself (the trash) and cannot be written by clients."""


class StoreError(HfdavError):
    """The object store failed. ``transient`` says whether a retry may help."""

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class ObjectMissing(StoreError):
    """An object referenced by the metadata is not in the store."""


class IntegrityError(StoreError):
    """An object's bytes do not match what the metadata (or the authentication tag) promises."""


class ReadOnly(HfdavError):
    """The server or the user has no write access."""


#: errno values that mean "no space left" (a full disk, or a user's disk quota).
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` or one of its causes is an OSError saying the disk is full."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False
