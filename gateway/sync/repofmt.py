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

With client-side encryption the repo's metadata is **sealed** (format version 2,
``"metadata": "sealed"`` in ``hfdav.json``): every journal file and snapshot is a sealed blob
(:class:`MetadataCodec`), so names, sizes, times and properties never reach the repo in clear.
"""

from __future__ import annotations

import gzip
import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Protocol

from gateway.crypto_keys import BLOB_MAGIC
from gateway.errors import ConfigError
from gateway.meta.repo import Checksums, ObjectRecord, TreeRecord

FORMAT_NAME = "hfdav-dataset-repo"
#: Highest repo format version this code reads. Version 1: journal files and snapshots in clear;
#: version 2: the same files sealed (client-side encryption). Unencrypted repos stay version 1.
FORMAT_VERSION = 2
PLAIN_FORMAT_VERSION = 1
SEALED_FORMAT_VERSION = 2
#: Version of the lines inside journal files and snapshots (the same in both repo versions).
CONTENT_VERSION = 1
#: ``metadata`` value in ``hfdav.json`` of a repo whose journal files and snapshots are sealed.
METADATA_SEALED = "sealed"
#: ``purpose`` bound into sealed journal files and snapshots (one cannot pass for the other).
JOURNAL_PURPOSE = "journal"
SNAPSHOT_PURPOSE = "snapshot"
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
#: In a sealed repo journal files are binary too: LFS, like every other binary file.
SEALED_LFS_ATTRIBUTES = ("journal/** filter=lfs diff=lfs merge=lfs -text",)

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
    *,
    chunk_size: int,
    object_ids: str,
    encryption: dict | None = None,
    now: float | None = None,
    sealed_from: int | None = None,
) -> bytes:
    """``object_ids``: ``sha256`` (content hashes) or ``keyed`` (client-side encryption);
    ``encryption``: the key record (no secret in it: scheme, KDF parameters, salt, key check).
    ``sealed_from``: the metadata is sealed (format version 2) from this journal batch on
    (1 for a repo sealed from its start); None: in clear (format version 1)."""
    doc: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": PLAIN_FORMAT_VERSION if sealed_from is None else SEALED_FORMAT_VERSION,
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
    if sealed_from is not None:
        doc["metadata"] = METADATA_SEALED
        doc["sealed_from"] = sealed_from
    return (json.dumps(doc, indent=2) + "\n").encode()


def manifest_sealed_from(doc: dict[str, Any]) -> int | None:
    """The first sealed journal batch of a repo whose manifest is ``doc``; None: in clear."""
    if doc.get("metadata") != METADATA_SEALED:
        if doc.get("version", PLAIN_FORMAT_VERSION) >= SEALED_FORMAT_VERSION:
            raise FormatError(f"{MANIFEST} of format version {doc.get('version')} names no sealed metadata")
        return None
    if not doc.get("encryption"):
        raise FormatError(f"{MANIFEST} says the metadata is sealed but holds no encryption key record")
    sealed_from = doc.get("sealed_from", 1)
    if not isinstance(sealed_from, int) or sealed_from < 1:
        raise FormatError(f"{MANIFEST}: sealed_from {sealed_from!r} is not a batch number")
    return sealed_from


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


def with_lfs_attributes(current: str, *, sealed: bool = False) -> str | None:
    """``current`` ``.gitattributes`` plus :data:`LFS_ATTRIBUTES` (and, for a sealed repo,
    :data:`SEALED_LFS_ATTRIBUTES`); None if nothing is missing."""
    lines = current.splitlines()
    wanted = LFS_ATTRIBUTES + (SEALED_LFS_ATTRIBUTES if sealed else ())
    missing = [line for line in wanted if line not in lines]
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
        header = {"v": CONTENT_VERSION, "batch": self.batch, "through": self.through, "at": self.at or time.time()}
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
        if header.get("v", 0) > CONTENT_VERSION:
            raise FormatError(f"journal file of format version {header.get('v')} (newer than {CONTENT_VERSION})")
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
        _line(out, {"v": CONTENT_VERSION, "snapshot": header.batch, "seq": header.seq, "at": header.at})
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
            if t.checksums.md5 or t.checksums.sha1:
                # a line of its own, right after its node: readers that predate it skip it
                _line(out, {"h": [t.checksums.md5, t.checksums.sha1]})
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
        if first.get("v", 0) > CONTENT_VERSION:
            raise FormatError(f"snapshot of format version {first.get('v')} (newer than {CONTENT_VERSION})")
        self.header = SnapshotHeader(int(first["snapshot"]), int(first["seq"]), float(first.get("at", 0)))

    def _items(self, key: str) -> Iterator[list]:
        with gzip.open(self.path, "rt", encoding="utf-8") as f:
            f.readline()
            for line in f:
                item = json.loads(line)
                if key in item:
                    yield item[key]

    def tree(self) -> Iterator[TreeRecord]:
        """Nodes, each with the checksums of the ``h`` line that follows it, if any."""
        pending: TreeRecord | None = None
        with gzip.open(self.path, "rt", encoding="utf-8") as f:
            f.readline()
            for line in f:
                item = json.loads(line)
                if "n" in item:
                    if pending is not None:
                        yield pending
                    path, is_dir, ctime, mtime, ctype, etag, parts = item["n"]
                    pending = TreeRecord(
                        path, bool(is_dir), ctime, mtime, ctype, etag, tuple((o, int(a), int(b)) for o, a, b in parts)
                    )
                elif "h" in item and pending is not None:
                    md5, sha1 = item["h"][:2]
                    pending = replace(pending, checksums=Checksums(md5, sha1))
        if pending is not None:
            yield pending

    def objects(self) -> Iterator[ObjectRecord]:
        for oid, size, pack, offset, is_pack in self._items("o"):
            yield ObjectRecord(oid, int(size), pack, offset, bool(is_pack))

    def properties(self) -> Iterator[tuple[str, str, str]]:
        yield from ((path, name, value) for path, name, value in self._items("p"))


# -- sealing --------------------------------------------------------------------------------
class BlobSealer(Protocol):
    """Seals and opens whole metadata blobs (:class:`gateway.crypto_keys.Keyring` is one)."""

    def seal_blob(self, data: bytes, *, purpose: str) -> bytes: ...

    def open_blob(self, blob: bytes, *, purpose: str) -> bytes: ...


@dataclass(frozen=True)
class MetadataCodec:
    """How journal files and snapshots travel to and from the repo: in clear (no ``sealer``,
    format version 1), or sealed with ``sealer`` (format version 2).

    ``sealed_from``: the first journal batch written sealed. A repo encrypted before its metadata
    was sealed keeps clear files below that batch until a snapshot replaces them; from that batch
    on a file in clear is refused (someone with write access to the repo could forge it).
    """

    sealer: BlobSealer | None = None
    sealed_from: int = 1

    @property
    def sealed(self) -> bool:
        return self.sealer is not None

    def journal_bytes(self, jf: JournalFile) -> bytes:
        """The repo file of ``jf``."""
        data = jf.encode()
        return self.sealer.seal_blob(data, purpose=JOURNAL_PURPOSE) if self.sealer is not None else data

    def read_journal(self, batch: int, data: bytes) -> JournalFile:
        """The journal file ``batch`` from its repo bytes (IntegrityError if a sealed one fails
        to open, FormatError if it cannot be read at all)."""
        return JournalFile.decode(self._open(batch, data, JOURNAL_PURPOSE))

    def seal_snapshot(self, path: Path) -> None:
        """Turn the snapshot file ``path`` (as :func:`write_snapshot` made it) into its repo form."""
        if self.sealer is not None:
            path.write_bytes(self.sealer.seal_blob(path.read_bytes(), purpose=SNAPSHOT_PURPOSE))

    def open_snapshot(self, batch: int, path: Path) -> None:
        """Turn the downloaded snapshot ``path`` of ``batch`` back into what :class:`SnapshotReader` reads."""
        if self.sealer is None:
            with path.open("rb") as f:
                if f.read(len(BLOB_MAGIC)) == BLOB_MAGIC:
                    raise FormatError(f"{snapshot_path(batch)} is sealed, but the repo's metadata is not")
            return
        path.write_bytes(self._open(batch, path.read_bytes(), SNAPSHOT_PURPOSE))

    def _open(self, batch: int, data: bytes, purpose: str) -> bytes:
        is_blob = data[: len(BLOB_MAGIC)] == BLOB_MAGIC
        if self.sealer is None:
            if is_blob:
                raise FormatError(f"the {purpose} file of batch {batch} is sealed, but the repo's metadata is not")
            return data
        if is_blob or batch >= self.sealed_from:
            return self.sealer.open_blob(data, purpose=purpose)
        return data  # written in clear before the repo's metadata was sealed
