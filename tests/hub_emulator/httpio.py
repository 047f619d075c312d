"""HTTP plumbing independent of the Hub API: request view, streamed bodies, responses, errors, ranges.

Request bodies are read lazily from the socket, with ``Content-Length`` or ``Transfer-Encoding:
chunked``, so that large uploads can be streamed to disk. Every response carries ``Content-Length``
(also on HEAD, where it is the size of the body a GET would return) so HTTP/1.1 keep-alive works.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, unquote

BLOCK = 1 << 20


class HttpError(Exception):
    """An error answer: ``{"error": message}`` plus optional ``X-Error-Code`` / ``X-Error-Message``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_code: str | None = None,
        headers: dict[str, str] | None = None,
        header_message: bool = False,
    ) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        if error_code:
            self.headers["X-Error-Code"] = error_code
        if header_message or error_code:
            self.headers["X-Error-Message"] = message

    def to_response(self) -> Response:
        return json_response({"error": self.message}, self.status, self.headers)


def not_found(code: str, message: str, headers: dict[str, str] | None = None) -> HttpError:
    """404 with ``X-Error-Code`` (RepoNotFound | RevisionNotFound | EntryNotFound)."""
    return HttpError(404, message, error_code=code, headers=headers)


@dataclass
class Response:
    """A response: ``body`` bytes, ``length`` bytes of ``file`` from ``offset``, or ``length`` bytes
    produced by ``stream`` (not called for HEAD)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    file: Path | None = None
    offset: int = 0
    length: int = 0
    stream: Callable[[], Iterator[bytes]] | None = None

    @property
    def content_length(self) -> int:
        return self.length if self.file is not None or self.stream is not None else len(self.body)


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(obj).encode()
    return Response(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body)


class BodyReader(io.RawIOBase):
    """Raw stream over a request body framed by Content-Length or chunked transfer encoding."""

    def __init__(self, rfile: BinaryIO, content_length: int | None, chunked: bool) -> None:
        super().__init__()
        self._rfile = rfile
        self._chunked = chunked
        self._remaining = 0 if chunked else (content_length or 0)
        self._eof = not chunked and not content_length
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> None:
        line = self._rfile.readline(1024)
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while self._rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            self._eof = True
        self._remaining = size

    def readinto(self, buffer: Any) -> int:
        if self._eof:
            return 0
        if self._remaining == 0:
            if not self._chunked:
                self._eof = True
                return 0
            self._next_chunk()
            if self._eof:
                return 0
        view = memoryview(buffer)[: min(len(buffer), self._remaining)]
        count = self._rfile.readinto(view)
        if not count:
            raise ConnectionError("client closed the connection before the end of the body")
        self._remaining -= count
        self.bytes_read += count
        if self._chunked and self._remaining == 0:
            self._rfile.readline(16)  # CRLF after the chunk data
        elif not self._chunked and self._remaining == 0:
            self._eof = True
        return count

    @property
    def finished(self) -> bool:
        return self._eof


class Request:
    """Parsed request line and headers; the body is read on demand."""

    def __init__(self, method: str, target: str, headers: Message, rfile: BinaryIO) -> None:
        self.method = method
        self.target = target
        raw_path, _, query = target.partition("?")
        self.raw_path = raw_path
        self.query_string = query
        self.query = parse_qs(query, keep_blank_values=True)
        self.headers = headers
        self.segments = [s for s in raw_path.split("/")[1:]]
        length = headers.get("Content-Length")
        chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        self.content_length = int(length) if length and not chunked else None
        self._raw = BodyReader(rfile, self.content_length, chunked)
        self._buffered = io.BufferedReader(self._raw, BLOCK)

    @staticmethod
    def decode(segment: str) -> str:
        """Percent-decode one raw path segment (``%2F`` becomes ``/`` only after splitting)."""
        return unquote(segment)

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def flag(self, name: str) -> bool:
        return (self.arg(name) or "").lower() in ("1", "true", "yes")

    @property
    def bytes_read(self) -> int:
        return self._raw.bytes_read

    @property
    def body_finished(self) -> bool:
        return self._raw.finished

    def iter_body(self, block: int = BLOCK) -> Iterator[bytes]:
        while chunk := self._buffered.read1(block):
            yield chunk

    def read_body(self, limit: int = 256 << 20) -> bytes:
        data = self._buffered.read(limit + 1)
        if len(data) > limit:
            raise HttpError(413, "Request body too large")
        return data

    def readline(self, limit: int = -1) -> bytes:
        return self._buffered.readline(limit)

    def json(self) -> Any:
        body = self.read_body()
        try:
            return json.loads(body or b"null")
        except ValueError as err:
            raise HttpError(400, f"Invalid JSON body: {err}") from err

    def form_or_json(self) -> dict[str, Any]:
        """A form body as ``{name: [values]}`` or a JSON object as is."""
        content_type = (self.headers.get("Content-Type") or "").lower()
        if "json" in content_type:
            data = self.json()
            if not isinstance(data, dict):
                raise HttpError(400, "Expected a JSON object")
            return data
        return parse_qs(self.read_body().decode("utf-8", "replace"), keep_blank_values=True)

    def drain(self, limit: int | None = None) -> bool:
        """Discard the rest of the body; False if more than ``limit`` bytes would have to be read."""
        if self.body_finished:
            return True
        if limit is not None and self.content_length is not None and self.content_length - self.bytes_read > limit:
            return False
        for _ in self.iter_body():
            pass
        return True


class RangeNotSatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Parse a single ``bytes=`` range into ``(start, end_inclusive)``.

    None means "send the whole body with 200" (no header, a malformed one or several ranges).
    Raises ``RangeNotSatisfiable`` when the range starts at or past the end (the answer is 416 with
    ``Content-Range: bytes */<size>``).
    """
    if not header or not header.strip().lower().startswith("bytes="):
        return None
    spec = header.strip()[6:].strip()
    if "," in spec or "-" not in spec:
        return None
    first, _, last = (part.strip() for part in spec.partition("-"))
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0 or size == 0:
                raise RangeNotSatisfiable
            return max(0, size - suffix), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if last and end < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable
    return start, min(end, size - 1)


def file_response(path: Path, size: int, range_header: str | None, headers: dict[str, str]) -> Response:
    """200 with the whole file, 206 with ``Content-Range`` for a satisfiable range, or 416."""
    headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream", **headers}
    try:
        byte_range = parse_range(range_header, size)
    except RangeNotSatisfiable:
        return Response(416, {**headers, "Content-Range": f"bytes */{size}"})
    if byte_range is None:
        return Response(200, headers, file=path, offset=0, length=size)
    start, end = byte_range
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return Response(206, headers, file=path, offset=start, length=end - start + 1)
