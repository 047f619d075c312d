"""The dataset repo's own files: layout, format version, journal files and snapshots.

FORMAT.md at the project root describes this format for humans; this module is its code. A repo
written by hfdav holds:

``hfdav.json``
    ``{"format": "hfdav-dataset-repo", "version": 1, ...}``. A gateway refuses a repo whose
    version is newer than :data:`FORMAT_VERSION`, and a non-empty repo without this file.
``objects/ab/cd/<id>``
    LFS files, one per object (chunks of big files, packs of small files).
``journal/<batch>.jsonl``
    One file per commit that changed metadata: a header line, pack records, then the metadata
    changes (journal entries) in order. Committed in the same commit as the objects it needs.
``snapshots/<batch>.jsonl.gz``
    The whole tree as of journal batch ``<batch>``; a rebuild loads the newest snapshot and
    replays the journal files with a higher batch number.
"""

from __future__ import annotations

import gzip
import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from gateway.errors import ConfigError
from gateway.meta.repo import ObjectRecord, TreeRecord

FORMAT_NAME = "hfdav-dataset-repo"
#: Version of the repo layout and of the journal/snapshot files this code writes and reads.
FORMAT_VERSION = 1
MANIFEST = "hfdav.json"
GITATTRIBUTES = ".gitattributes"
JOURNAL_DIR = "journal"
SNAPSHOT_DIR = "snapshots"
#: Lines added to ``.gitattributes`` so that the Hub stores every object and snapshot as LFS
#: (a small text chunk would otherwise become a regular git file).
LFS_ATTRIBUTES = (
    "objects/** filter=lfs diff=lfs merge=lfs -text",
    "snapshots/** filter=lfs diff=lfs merge=lfs -text",
)

_JOURNAL_RE = re.compile(r"^journal/(\d{10})\.jsonl$")
_SNAPSHOT_RE = re.compile(r"^snapshots/(\d{10})\.jsonl\.gz$")


class FormatError(ConfigError):
    """The repo is not an hfdav repo, or was written by a newer hfdav (HF_DATASET_REPO must
    name another repo, or hfdav must be upgraded: a settings problem)."""

    def __init__(self, message: str):
        super().__init__([message])


def journal_path(batch: int) -> str:
    return f"{JOURNAL_DIR}/{batch:010d}.jsonl"


def snapshot_path(batch: int) -> str:
    return f"{SNAPSHOT_DIR}/{batch:010d}.jsonl.gz"


def journal_batch(path: str) -> int | None:
    m = _JOURNAL_RE.match(path)
    return int(m.group(1)) if m else None


def snapshot_batch(path: str) -> int | None:
    m = _SNAPSHOT_RE.match(path)
    return int(m.group(1)) if m else None


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# -- manifest -------------------------------------------------------------------------------
def make_manifest(
    *, chunk_size: int, object_ids: str, encryption: dict | None = None, now: float | None = None
) -> bytes:
    """``object_ids``: ``sha256`` (content hashes) or ``keyed`` (client-side encryption);
    ``encryption``: the key record (no secret in it: scheme, KDF parameters, salt, key check)."""
    doc = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "created_at": _iso(now or time.time()),
        "chunk_size": chunk_size,
        "object_ids": object_ids,
        "encryption": encryption,
        "layout": {
            "objects": "objects/<id[0:2]>/<id[2:4]>/<id>",
            "journal": "journal/<batch>.jsonl",
            "snapshots": "snapshots/<batch>.jsonl.gz",
        },
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def check_manifest(data: bytes) -> dict[str, Any]:
    """Parse ``hfdav.json``; raise :class:`FormatError` for another format or a newer version."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise FormatError(f"{MANIFEST} is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise FormatError(f"{MANIFEST} does not describe an hfdav repo")
    version = doc.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise FormatError(
            f"the repo uses hfdav format version {version}, newer than this hfdav supports ({FORMAT_VERSION}); "
            "upgrade hfdav"
        )
    return doc


def with_lfs_attributes(current: str) -> str | None:
    """``current`` ``.gitattributes`` plus :data:`LFS_ATTRIBUTES`; None if nothing is missing."""
    lines = current.splitlines()
    missing = [line for line in LFS_ATTRIBUTES if line not in lines]
    if not missing:
        return None
    text = current if current.endswith("\n") or not current else current + "\n"
    return text + "\n".join(missing) + "\n"


# -- journal files --------------------------------------------------------------------------
@dataclass(frozen=True)
class PackRecord:
    """``pack`` holds ``members`` as ``(object_id, offset, size)``."""

    pack: str
    size: int
    members: tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class Entry:
    """One metadata change: ``seq``, when it happened (``at``), and the change itself."""

    seq: int
    at: float
    change: dict[str, Any]


@dataclass
class JournalFile:
    """One journal file. ``through``: every entry up to this seq is committed once this file
    is (the highest seq in it, or the previous file's when it holds none)."""

    batch: int
    through: int
    packs: list[PackRecord] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    at: float = 0.0

    def encode(self) -> bytes:
        header = {"v": FORMAT_VERSION, "batch": self.batch, "through": self.through, "at": self.at or time.time()}
        if self.entries:
            header["seqs"] = [self.entries[0].seq, self.entries[-1].seq]
        lines = [json.dumps(header, separators=(",", ":"))]
        for p in self.packs:
            lines.append(
                json.dumps(
                    {"pack": p.pack, "size": p.size, "members": [list(m) for m in p.members]}, separators=(",", ":")
                )
            )
        for e in self.entries:
            lines.append(
                json.dumps({"seq": e.seq, "at": e.at, "e": e.change}, separators=(",", ":"), ensure_ascii=False)
            )
        return ("\n".join(lines) + "\n").encode()

    @classmethod
    def decode(cls, data: bytes) -> JournalFile:
        lines = [line for line in data.decode().splitlines() if line.strip()]
        if not lines:
            raise FormatError("empty journal file")
        header = json.loads(lines[0])
        if header.get("v", 0) > FORMAT_VERSION:
            raise FormatError(f"journal file of format version {header.get('v')} (newer than {FORMAT_VERSION})")
        out = cls(batch=int(header["batch"]), through=int(header["through"]), at=float(header.get("at", 0)))
        for line in lines[1:]:
            item = json.loads(line)
            if "pack" in item:
                members = tuple((str(o), int(off), int(n)) for o, off, n in item["members"])
                out.packs.append(PackRecord(item["pack"], int(item["size"]), members))
            elif "seq" in item:
                out.entries.append(Entry(int(item["seq"]), float(item["at"]), item["e"]))
        return out


# -- snapshots ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SnapshotHeader:
    batch: int
    seq: int
    at: float


def write_snapshot(
    target: Path,
    header: SnapshotHeader,
    tree: Iterable[TreeRecord],
    objects: Iterable[ObjectRecord],
    props: Iterable[tuple[str, str, str]],
) -> int:
    """Stream a snapshot into ``target`` (gzip'd JSON lines); returns the number of nodes."""
    n = 0
    with gzip.open(target, "wt", encoding="utf-8", compresslevel=6) as out:
        _line(out, {"v": FORMAT_VERSION, "snapshot": header.batch, "seq": header.seq, "at": header.at})
        for t in tree:
            _line(
                out,
                {
                    "n": [
                        t.path,
                        t.is_dir,
                        t.created_at,
                        t.modified_at,
                        t.content_type,
                        t.etag,
                        [list(x) for x in t.extents],
                    ]
                },
            )
            n += 1
        for o in objects:
            _line(out, {"o": [o.id, o.size, o.pack_id, o.pack_offset, o.is_pack]})
        for path, name, value in props:
            _line(out, {"p": [path, name, value]})
    return n


def _line(out: IO[str], item: dict) -> None:
    out.write(json.dumps(item, separators=(",", ":"), ensure_ascii=False))
    out.write("\n")


class SnapshotReader:
    """Reads a snapshot file in three passes (nodes, objects, properties), each streamed."""

    def __init__(self, path: Path):
        self.path = path
        with gzip.open(path, "rt", encoding="utf-8") as f:
            first = json.loads(f.readline() or "{}")
        if "snapshot" not in first:
            raise FormatError(f"{path.name} is not an hfdav snapshot")
        if first.get("v", 0) > FORMAT_VERSION:
            raise FormatError(f"snapshot of format version {first.get('v')} (newer than {FORMAT_VERSION})")
        self.header = SnapshotHeader(int(first["snapshot"]), int(first["seq"]), float(first.get("at", 0)))

    def _items(self, key: str) -> Iterator[list]:
        with gzip.open(self.path, "rt", encoding="utf-8") as f:
            f.readline()
            for line in f:
                item = json.loads(line)
                if key in item:
                    yield item[key]

    def tree(self) -> Iterator[TreeRecord]:
        for path, is_dir, ctime, mtime, ctype, etag, parts in self._items("n"):
            yield TreeRecord(
                path, bool(is_dir), ctime, mtime, ctype, etag, tuple((o, int(a), int(b)) for o, a, b in parts)
            )

    def objects(self) -> Iterator[ObjectRecord]:
        for oid, size, pack, offset, is_pack in self._items("o"):
            yield ObjectRecord(oid, int(size), pack, offset, bool(is_pack))

    def properties(self) -> Iterator[tuple[str, str, str]]:
        yield from ((path, name, value) for path, name, value in self._items("p"))
