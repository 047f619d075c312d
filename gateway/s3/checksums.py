"""S3's additional checksums (``x-amz-checksum-crc32``, ``-sha1``, ``-sha256``): the SDKs send one
with every upload, in a header or, with ``aws-chunked`` bodies, in a trailer. The body is checked
against it while it streams; a mismatch is BadDigest and nothing is stored. CRC32C and CRC64NVME
(no implementation in the standard library) are accepted unchecked."""

from __future__ import annotations

import base64
import hashlib
import zlib

from gateway.s3.xml import S3Error

_HEADER = "x-amz-checksum-"
CHECKED = ("crc32", "sha1", "sha256")
UNCHECKED = ("crc32c", "crc64nvme")


class _Crc32:
    def __init__(self):
        self.value = 0

    def update(self, data) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


class BodyChecksum:
    """The checksum a request announces for its body (``header(name)`` reads its headers);
    ``update`` with every body block, then ``check(trailers)``."""

    def __init__(self, header):
        self._algorithm = None
        self._expected = None
        self._trailer = None
        trailer = (header("x-amz-trailer") or "").strip().lower()
        for name in (*CHECKED, *UNCHECKED):
            value = header(_HEADER + name)
            if value is not None:
                self._algorithm, self._expected = name, value.strip()
                break
        else:
            if trailer.startswith(_HEADER) and trailer[len(_HEADER) :] in (*CHECKED, *UNCHECKED):
                self._algorithm, self._trailer = trailer[len(_HEADER) :], trailer
        self._hash = None
        if self._algorithm in CHECKED:
            self._hash = _Crc32() if self._algorithm == "crc32" else hashlib.new(self._algorithm)

    @property
    def active(self) -> bool:
        return self._hash is not None

    def update(self, data) -> None:
        if self._hash is not None:
            self._hash.update(data)

    def check(self, trailers: dict[str, str] | None = None) -> None:
        if self._hash is None:
            return
        expected = self._expected
        if expected is None and self._trailer is not None:
            expected = (trailers or {}).get(self._trailer)
            if expected is None:
                raise S3Error("InvalidRequest", f"the body ended without the announced trailer {self._trailer}")
        if base64.b64encode(self._hash.digest()).decode() != expected:
            raise S3Error("BadDigest", f"The {self._algorithm.upper()} you specified did not match the calculated "
                          "checksum.")  # fmt: skip
