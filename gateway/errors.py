"""The one error tree of hfdav.

Every adapter translates foreign exceptions into these classes once, at its edge
(``raise ... from exc``). The DAV adapter maps them to HTTP statuses in one table
(:mod:`gateway.dav.errors`). ``transient`` tells the retry helper whether trying
again may succeed.
"""

from __future__ import annotations


class HfdavError(Exception):
    """Base class of every error raised by hfdav code."""

    transient: bool = False


class ConfigError(HfdavError):
    """Settings are invalid. ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in self.problems))


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
