"""Binary formats of Xet storage: hashes as the CAS prints them, xorb chunks and MDB shards.

Written from xet-core's ``xet_core_structures`` (``merklehash/data_hash.rs``,
``xorb_object/xorb_chunk_format.rs``, ``xorb_object/compression_scheme.rs``,
``xorb_object/byte_grouping/bg4.rs``, ``metadata_shard/{shard_format,file_structs,xorb_structs}.rs``).

- **Hash hex**: a hash is 32 bytes read as four little-endian u64, each printed as 16 hex digits.
- **Xorb** (as uploaded): chunks back to back, each an 8-byte header (``version`` u8,
  ``compressed_length`` u24 LE, ``compression_scheme`` u8, ``uncompressed_length`` u24 LE) and its
  data; then a footer starting with ``XETBLOB`` (chunk hashes and boundaries, not needed here).
  Schemes: 0 none, 1 LZ4 frame, 2 byte grouping of 4 + LZ4 frame (bytes ``i, i+4, …`` of the chunk
  stored as group ``i % 4``, groups concatenated).
- **Shard** (MDB v2): a 48-byte header (32-byte tag, version u64, footer size u64), the file info
  section, the xorb info section, lookup tables and a footer. Every record of both sections is 48
  bytes. File info: per file a header (file hash, flags u32, entry count u32, u64) then its entries
  (xorb hash, xorb flags u32, unpacked bytes u32, chunk index start u32, end u32, end exclusive), then
  one verification record per entry if flag bit 31 is set, then one metadata record (sha256 + 16
  bytes) if bit 30 is set; a header whose hash is all ``0xff`` ends the section. Xorb info: per xorb
  a header (xorb hash, flags u32, chunk count u32, unpacked bytes u32, bytes on disk u32) then one
  record per chunk (chunk hash, unpacked offset u32, unpacked length u32, flags u32, u32); also ended
  by an all-``0xff`` header.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

SHARD_TAG = bytes(
    [*b"HFRepoMetaData", 0, 85, 105, 103, 69, 106, 123, 129, 87, 131, 165, 189, 217, 92, 205, 209, 74, 169]
)
SHARD_HEADER_SIZE = 48
RECORD = 48
BOOKEND = b"\xff" * 32
FLAG_VERIFICATION = 1 << 31
FLAG_METADATA_EXT = 1 << 30

CHUNK_HEADER = 8
XORB_FOOTER_IDENT = b"XETBLOB"
SCHEME_NONE, SCHEME_LZ4, SCHEME_BG4_LZ4 = 0, 1, 2


class FormatError(ValueError):
    """Malformed xorb or shard bytes."""


def hash_hex(raw: bytes) -> str:
    """The CAS's hex form of a 32-byte hash."""
    if len(raw) != 32:
        raise FormatError("a hash is 32 bytes")
    return "".join(f"{word:016x}" for word in struct.unpack("<4Q", raw))


def hash_raw(hex_hash: str) -> bytes:
    """Inverse of :func:`hash_hex`."""
    return struct.pack("<4Q", *(int(hex_hash[i : i + 16], 16) for i in range(0, 64, 16)))


# -- xorbs ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkHeader:
    version: int
    compressed: int
    scheme: int
    uncompressed: int

    @classmethod
    def parse(cls, raw: bytes) -> ChunkHeader:
        if len(raw) != CHUNK_HEADER:
            raise FormatError("truncated chunk header")
        header = cls(raw[0], int.from_bytes(raw[1:4], "little"), raw[4], int.from_bytes(raw[5:8], "little"))
        if header.version != 0 or header.scheme not in (SCHEME_NONE, SCHEME_LZ4, SCHEME_BG4_LZ4):
            raise FormatError(f"bad chunk header {raw.hex()}")
        return header


def scan_xorb(fh: BinaryIO, size: int) -> list[tuple[int, int]]:
    """``[(byte offset of chunk i, its uncompressed length)]`` plus a last ``(end of chunks, 0)``.

    Reads only the chunk headers (seeking over data) and stops at the footer or the end."""
    index: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        fh.seek(pos)
        raw = fh.read(CHUNK_HEADER)
        if raw[: len(XORB_FOOTER_IDENT)] == XORB_FOOTER_IDENT:
            break
        header = ChunkHeader.parse(raw)
        if pos + CHUNK_HEADER + header.compressed > size:
            raise FormatError(f"chunk at {pos} runs past the end of the xorb")
        index.append((pos, header.uncompressed))
        pos += CHUNK_HEADER + header.compressed
    if not index:
        raise FormatError("a xorb holds at least one chunk")
    index.append((pos, 0))
    return index


def _bg4_regroup(data: bytes) -> bytes:
    n = len(data)
    split, rem = divmod(n, 4)
    sizes = [split + (1 if rem > i else 0) for i in range(4)]
    out = bytearray(n)
    start = 0
    for i, length in enumerate(sizes):
        out[i::4] = data[start : start + length]
        start += length
    return bytes(out)


def decompress_chunk(header: ChunkHeader, data: bytes) -> bytes:
    """The uncompressed bytes of one chunk."""
    if header.scheme == SCHEME_NONE:
        out = data
    else:
        import lz4.frame  # test extra; only Xet reads need it

        try:
            out = lz4.frame.decompress(data)
        except RuntimeError as err:
            raise FormatError(f"bad LZ4 frame: {err}") from err
        if header.scheme == SCHEME_BG4_LZ4:
            out = _bg4_regroup(out)
    if len(out) != header.uncompressed:
        raise FormatError(f"chunk decompressed to {len(out)} bytes, header says {header.uncompressed}")
    return out


def iter_chunks(raw: bytes) -> Iterator[bytes]:
    """Decompress consecutive serialized chunks (a byte range of a xorb cut at chunk boundaries)."""
    pos = 0
    while pos < len(raw):
        header = ChunkHeader.parse(raw[pos : pos + CHUNK_HEADER])
        start = pos + CHUNK_HEADER
        yield decompress_chunk(header, raw[start : start + header.compressed])
        pos = start + header.compressed


# -- shards -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """Chunks ``[start, end)`` of xorb ``xorb``; ``size`` bytes once decompressed."""

    xorb: str
    start: int
    end: int
    size: int


@dataclass
class ShardFile:
    file_hash: str
    terms: list[Term]
    sha256: str | None

    @property
    def size(self) -> int:
        return sum(term.size for term in self.terms)


@dataclass
class ShardXorb:
    xorb: str
    chunks: int
    unpacked: int
    on_disk: int


@dataclass
class Shard:
    files: list[ShardFile]
    xorbs: list[ShardXorb]


def parse_shard(data: bytes) -> Shard:
    """Files (hash, terms, sha256) and xorbs an uploaded shard declares."""
    if len(data) < SHARD_HEADER_SIZE or data[:32] != SHARD_TAG:
        raise FormatError("not an MDB shard (bad tag)")
    version, _footer_size = struct.unpack_from("<QQ", data, 32)
    if version != 2:
        raise FormatError(f"unsupported shard header version {version}")
    pos = SHARD_HEADER_SIZE

    def record(at: int) -> bytes:
        if at + RECORD > len(data):
            raise FormatError("shard truncated")
        return data[at : at + RECORD]

    files: list[ShardFile] = []
    while True:
        head = record(pos)
        pos += RECORD
        if head[:32] == BOOKEND:
            break
        flags, count = struct.unpack_from("<II", head, 32)
        terms = []
        for _ in range(count):
            entry = record(pos)
            pos += RECORD
            _xflags, size, start, end = struct.unpack_from("<IIII", entry, 32)
            if end <= start:
                raise FormatError("empty or reversed chunk range in a file entry")
            terms.append(Term(hash_hex(entry[:32]), start, end, size))
        if flags & FLAG_VERIFICATION:
            pos += RECORD * count
        sha256 = None
        if flags & FLAG_METADATA_EXT:
            sha256 = hash_hex(record(pos)[:32])
            pos += RECORD
        files.append(ShardFile(hash_hex(head[:32]), terms, sha256))
    xorbs: list[ShardXorb] = []
    while True:
        head = record(pos)
        pos += RECORD
        if head[:32] == BOOKEND:
            break
        _flags, count, unpacked, on_disk = struct.unpack_from("<IIII", head, 32)
        pos += RECORD * count
        xorbs.append(ShardXorb(hash_hex(head[:32]), count, unpacked, on_disk))
    return Shard(files, xorbs)
