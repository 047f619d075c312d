"""Byte ranges of a GET (RFC 9110 §14): parse the ``Range`` header, resolve it against the size
of the file, and frame the answer (one part, or ``multipart/byteranges``).

What a request gets:

* no ``Range``, a range unit other than ``bytes``, a syntax error anywhere in the header
  (``bytes=10-5`` included), an ``If-Range`` that does not match, an empty file, or a request
  beyond the limits below: the whole file, 200 (RFC 9110 §14.2: an invalid or unsupported
  ``Range`` is ignored);
* at least one satisfiable range: the satisfiable ranges, overlapping and adjacent ones
  coalesced, in ascending order; one left is a plain 206 with ``Content-Range``, several are one
  206 ``multipart/byteranges`` whose parts carry ``Content-Type`` and ``Content-Range``;
* none satisfiable: 416 with ``Content-Range: bytes */size``.

Limits (RFC 9110 §17.15 allows ignoring abusive range sets): a header longer than
:data:`MAX_RANGE_HEADER` is not parsed and more than :data:`MAX_RANGES` ranges after coalescing
are not served; both get the whole file, so the cost of a request stays that of a plain GET.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

#: Longest ``Range`` header parsed, in characters. Real clients send one or a few ranges
#: (``bytes=0-104857599``, a PDF reader's dozen); 10,000 one-byte ranges cost seconds of CPU.
MAX_RANGE_HEADER = 4096
#: Most parts in one multipart answer, counted after coalescing.
MAX_RANGES = 100

_SPEC = re.compile(r"(\d*)-(\d*)")


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` to ``end`` inclusive, as in ``Content-Range``."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


#: One range-spec as written: (first, last) with last None for ``first-``, or (None, suffix).
Spec = tuple[int | None, int | None]


def parse_range(header: str | None) -> list[Spec] | None:
    """The range-specs of a ``Range: bytes=...`` header, or None when the header is to be
    ignored (absent, another unit, invalid syntax, too long). Empty list elements are allowed
    (RFC 9110 §5.6.1), but at least one spec must be present."""
    if header is None or len(header) > MAX_RANGE_HEADER:
        return None
    unit, sep, ranges = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    specs: list[Spec] = []
    for item in ranges.split(","):
        item = item.strip(" \t")
        if not item:
            continue
        m = _SPEC.fullmatch(item)
        if m is None:
            return None
        first, last = m.group(1), m.group(2)
        if first:
            if last and int(last) < int(first):
                return None  # an invalid int-range makes the whole header invalid
            specs.append((int(first), int(last) if last else None))
        elif last:
            specs.append((None, int(last)))
        else:
            return None  # a bare "-"
    return specs or None


def resolve(specs: list[Spec], size: int) -> list[ByteRange]:
    """The satisfiable ranges of ``specs`` for a file of ``size`` bytes (> 0), sorted and with
    overlapping or adjacent ranges merged. Empty when none is satisfiable."""
    wanted: list[ByteRange] = []
    for first, last in specs:
        if first is None:  # suffix: the last `last` bytes
            if last:
                wanted.append(ByteRange(max(0, size - last), size - 1))
        elif first < size:
            wanted.append(ByteRange(first, size - 1 if last is None else min(last, size - 1)))
    wanted.sort(key=lambda r: r.start)
    merged: list[ByteRange] = []
    for r in wanted:
        if merged and r.start <= merged[-1].end + 1:
            if r.end > merged[-1].end:
                merged[-1] = ByteRange(merged[-1].start, r.end)
        else:
            merged.append(r)
    return merged


@dataclass(frozen=True)
class Multipart:
    """The framing of a ``multipart/byteranges`` body: ``head(i)`` precedes part ``i``'s bytes,
    ``tail`` ends the body."""

    ranges: list[ByteRange]
    size: int
    part_type: str
    boundary: str

    @classmethod
    def new(cls, ranges: list[ByteRange], size: int, part_type: str) -> Multipart:
        return cls(ranges, size, part_type, secrets.token_hex(16))

    @property
    def content_type(self) -> str:
        return f"multipart/byteranges; boundary={self.boundary}"

    def head(self, i: int) -> bytes:
        lead = "\r\n" if i else ""
        r = self.ranges[i]
        return (
            f"{lead}--{self.boundary}\r\nContent-Type: {self.part_type}\r\n"
            f"Content-Range: {r.content_range(self.size)}\r\n\r\n"
        ).encode("latin-1")

    @property
    def tail(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode("latin-1")

    @property
    def content_length(self) -> int:
        heads = sum(len(self.head(i)) for i in range(len(self.ranges)))
        return heads + sum(r.length for r in self.ranges) + len(self.tail)
