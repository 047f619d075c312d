"""The values the metadata repository hands out: frozen dataclasses, never database rows.

The WebDAV layer, the file service, the S3 and browser fronts import these from here, not from
the persistence modules.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from gateway.errors import HfdavError


class ObjectState(StrEnum):
    """Where an object is in its life, in the order it moves through them. The values are the
    strings the ``objects.state`` column holds (a member equals its value: ``"staged" ==
    ObjectState.STAGED``)."""

    #: the bytes are on local disk only (write-back area), not yet in the remote store
    STAGED = "staged"
    #: the bytes are in the remote store (an LFS object) but no commit references them
    UPLOADED = "uploaded"
    #: a commit of the remote store references the object (durable); with the local store,
    #: objects are ``committed`` as soon as they are written
    COMMITTED = "committed"
    #: refcount is 0 and the grace period is over; removal from the store is pending
    DELETING = "deleting"
    #: the bytes live inside a pack object (``pack_id``); the pack has its own state
    PACKED = "packed"


@dataclass(frozen=True)
class Checksums:
    """Hex digests of a file's content, as sync clients compare them (None: not known)."""

    md5: str | None = None
    sha1: str | None = None


NO_CHECKSUMS = Checksums()


@dataclass(frozen=True)
class Node:
    """A file or folder as the file service sees it."""

    id: int
    parent_id: int | None
    name: str
    path: str
    is_dir: bool
    created_at: float
    modified_at: float
    content_type: str | None
    version_id: int | None
    size: int
    etag: str | None
    #: digests of the content (files written before checksums were kept have none)
    checksums: Checksums = NO_CHECKSUMS


@dataclass(frozen=True)
class Extent:
    """``length`` bytes of a file starting at ``file_offset``, found at ``object_offset`` in an object."""

    file_offset: int
    object_id: str
    object_offset: int
    length: int


@dataclass(frozen=True)
class NewObject:
    """An object a write created; registered (or its refcount bumped) with the version."""

    id: str
    size: int


@dataclass(frozen=True)
class ObjectRow:
    id: str
    size: int
    state: str
    refcount: int
    orphaned_at: float | None
    pack_id: str | None = None
    pack_offset: int | None = None
    is_pack: bool = False


@dataclass(frozen=True)
class LockRow:
    token: str
    root: str
    depth: str
    scope: str
    type: str
    owner: str
    principal: str | None
    timeout: float
    expire: float


def version_etag(parts: Iterable[tuple[str, int, int]]) -> str:
    """Strong etag of a content made of ``(object_id, offset, length)`` parts.

    Object ids are content hashes, so equal content written the same way gives the same etag,
    and a rebuild from the repo reproduces it.
    """
    h = hashlib.blake2b(digest_size=16)
    for oid, off, length in parts:
        h.update(f"{oid}:{off}:{length};".encode())
    return h.hexdigest()


EMPTY_ETAG = version_etag([])


@dataclass(frozen=True)
class SyncObject:
    """An object as the Hub sync sees it. ``pinned``: unreferenced but held by an upload in
    progress. ``remote_sha256``: the LFS oid once uploaded."""

    id: str
    size: int
    state: str
    refcount: int
    pinned: bool
    pack_id: str | None
    is_pack: bool
    remote_sha256: str | None
    remote_size: int | None


@dataclass(frozen=True)
class JournalRow:
    seq: int
    created_at: float
    entry: str
    commit_oid: str | None


@dataclass(frozen=True)
class TreeRecord:
    """A node as a snapshot stores it; ``extents`` are logical ``(object_id, offset, length)``."""

    path: str
    is_dir: bool
    created_at: float
    modified_at: float
    content_type: str | None
    etag: str | None
    extents: tuple[tuple[str, int, int], ...]
    checksums: Checksums = NO_CHECKSUMS


@dataclass(frozen=True)
class ObjectRecord:
    id: str
    size: int
    pack_id: str | None
    pack_offset: int | None
    is_pack: bool


class LockLimitReached(HfdavError):
    """Granting one more lock would pass the limit on locks (in total or per user)."""


def lock_parent(root: str) -> str:
    """The folder holding lock root ``root``: ``/a`` for ``/a/b``, ``/`` for ``/a``, ``""`` for ``/``."""
    if root == "/":
        return ""
    return root.rsplit("/", 1)[0] or "/"


def lock_ancestors(root: str) -> list[str]:
    """``root`` and every folder above it: ``/a/b`` → ``["/a/b", "/a", "/"]``."""
    out = [root]
    while root != "/":
        root = lock_parent(root)
        out.append(root)
    return out
