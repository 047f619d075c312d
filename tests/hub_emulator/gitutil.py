"""Git and Git-LFS object identities as the Hub reports them.

- A regular file's ``oid`` is its git blob SHA-1: ``sha1(b"blob <len>\\0" + content)``.
- An LFS file's ``oid`` is the blob SHA-1 of its pointer file
  ``version https://git-lfs.github.com/spec/v1\\noid sha256:<sha256>\\nsize <n>\\n``;
  its ``lfs.oid`` is the SHA-256 of the content and ``lfs.pointerSize`` the pointer length.
- A directory's ``oid`` is its git tree SHA-1 (entries ``<mode> <name>\\0<20-byte oid>``,
  sorted by name, directories compared as ``name/``).
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

LFS_POINTER_VERSION = "https://git-lfs.github.com/spec/v1"
FILE_MODE = b"100644"
DIR_MODE = b"40000"

DEFAULT_GITATTRIBUTES = (
    "*.7z filter=lfs diff=lfs merge=lfs -text\n"
    "*.arrow filter=lfs diff=lfs merge=lfs -text\n"
    "*.bin filter=lfs diff=lfs merge=lfs -text\n"
    "*.bz2 filter=lfs diff=lfs merge=lfs -text\n"
    "*.gz filter=lfs diff=lfs merge=lfs -text\n"
    "*.npy filter=lfs diff=lfs merge=lfs -text\n"
    "*.parquet filter=lfs diff=lfs merge=lfs -text\n"
    "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    "*.tar filter=lfs diff=lfs merge=lfs -text\n"
    "*.zip filter=lfs diff=lfs merge=lfs -text\n"
    "*.zst filter=lfs diff=lfs merge=lfs -text\n"
)


def git_blob_sha1(content: bytes) -> str:
    """Return the git blob SHA-1 (hex) of ``content``."""
    digest = hashlib.sha1(b"blob %d\0" % len(content))
    digest.update(content)
    return digest.hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """Return the Git-LFS pointer file that git stores in place of an LFS object."""
    return f"version {LFS_POINTER_VERSION}\noid sha256:{sha256}\nsize {size}\n".encode()


def git_tree_sha1(entries: Iterable[tuple[str, bool, str]]) -> str:
    """Return the git tree SHA-1 for ``(name, is_dir, hex_oid)`` entries."""

    def sort_key(entry: tuple[str, bool, str]) -> bytes:
        name, is_dir, _ = entry
        return name.encode() + (b"/" if is_dir else b"")

    body = b"".join(
        (DIR_MODE if is_dir else FILE_MODE) + b" " + name.encode() + b"\0" + bytes.fromhex(oid)
        for name, is_dir, oid in sorted(entries, key=sort_key)
    )
    return hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()


def directory_oids(files: Mapping[str, str]) -> dict[str, str]:
    """Map every directory of a flat ``path -> blob oid`` tree to its git tree SHA-1 ("" is the root)."""
    children: dict[str, dict[str, tuple[bool, str]]] = {"": {}}
    for path in files:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent, name = "/".join(parts[: depth - 1]), parts[depth - 1]
            children.setdefault(parent, {})[name] = (True, "")
            children.setdefault("/".join(parts[:depth]), {})
        children.setdefault("/".join(parts[:-1]), {})[parts[-1]] = (False, files[path])
    oids: dict[str, str] = {}
    for directory in sorted(children, key=lambda d: d.count("/") + (d != ""), reverse=True):
        entries = []
        for name, (is_dir, oid) in children[directory].items():
            full = f"{directory}/{name}" if directory else name
            entries.append((name, is_dir, oids[full] if is_dir else oid))
        oids[directory] = git_tree_sha1(entries)
    return oids


def is_binary_sample(sample: bytes) -> bool:
    """Whether a content sample looks binary: it holds a NUL byte or is not UTF-8.

    A multi-byte character cut at the end of the sample does not count as invalid.
    """
    if b"\0" in sample:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as err:
        return not (err.reason == "unexpected end of data" and err.start >= len(sample) - 3)
    return False


def lfs_patterns(gitattributes: str) -> list[str]:
    """Patterns of a ``.gitattributes`` text whose attributes include ``filter=lfs``."""
    patterns = []
    for line in gitattributes.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#") and "filter=lfs" in fields[1:]:
            patterns.append(fields[0])
    return patterns


def matches_lfs_pattern(path: str, patterns: Iterable[str]) -> bool:
    """Git-style match: a pattern without ``/`` matches the basename, otherwise the full path."""
    basename = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        if "/" in pattern.strip("/"):
            if fnmatch.fnmatchcase(path, pattern.lstrip("/")):
                return True
        elif fnmatch.fnmatchcase(basename, pattern.strip("/")):
            return True
    return False


def iso_now() -> str:
    """Current UTC time as the Hub formats it: ISO-8601 with milliseconds and ``Z``."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
