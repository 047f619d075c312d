"""EncryptedStore: client-side authenticated encryption as an :class:`ObjectStore` decorator.

The file service hands it plaintext chunks named by a *keyed* hash (``object_hasher``: HMAC-SHA256
with the keyring's object-id subkey); the inner store (local, Hub, write-back) only ever sees
ciphertext. Format and threat model: docs/ENCRYPTION.md. In short, a stored object is::

    header (16 bytes): "HFDE" | version 1 | log2(segment size) | 0x0000 | key id (8 bytes)
    segment 0 .. n-1:  AES-256-GCM(ciphertext of ≤ segment-size plaintext bytes) | 16-byte tag

* key: one AES-256-GCM key per object, HMAC-SHA256(data subkey, object id);
* nonce: the segment index as a 96-bit counter;
* associated data: header | segment index | final-segment flag | total plaintext length (final
  segment only, else 0) | object id.

Why a deterministic nonce is safe here: the object id is a MAC of the plaintext, so one object
key only ever encrypts one plaintext. :meth:`EncryptedStore.adopt` refuses an id that is not
the keyed hash of the bytes it is given: ids minted by this store's ``object_hasher`` (the file
service hashes exactly the bytes it stages) are trusted, any other id is recomputed. Equal
chunks give equal ciphertext, so the store still stores them once.

Swapping objects, reordering or truncating segments, or changing any stored byte that a read
covers fails authentication; a failed segment raises :class:`IntegrityError` and none of its
bytes is returned. (Bytes appended after the final segment are never read; they change the size
:meth:`size_of` reports, which is how a check of sizes notices them.)

Sizes: :meth:`list_ids` and :meth:`size_of` report **plaintext** sizes (what the metadata
records), computed from the stored size without reading the object.
"""

from __future__ import annotations

import hmac
import io
import logging
import struct
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag

from gateway.crypto_keys import TAG_BYTES, Keyring, plaintext_length, segment_nonce
from gateway.errors import IntegrityError, ObjectMissing, StoreError
from gateway.store.base import ObjectStore, RangeStream

log = logging.getLogger(__name__)

OBJECT_MAGIC = b"HFDE"
OBJECT_VERSION = 1
_HEADER = struct.Struct("!4sBBH8s")
HEADER_BYTES = _HEADER.size

#: Ids computed by ``object_hasher`` and not yet adopted, kept so adopt need not hash the chunk
#: a second time. Past this many (a 6 TB upload in 50 MiB chunks) the oldest are forgotten and
#: adopt recomputes their HMAC instead: slower, never wrong. About 20 MB at most.
MINTED_IDS_MAX = 1 << 17

#: Ciphertext asked of the inner stream at a time (rounded up to whole segments): one read
#: per MiB instead of one per segment keeps allocations few and large, like the plain path's.
FETCH_BYTES = 1 << 20

#: Plaintext sizes remembered (from adopt, or once a final segment authenticated), so a read of
#: a slice that ends inside an object (a pack member) maps to exact segments without asking the
#: inner store. 64k entries of ~150 bytes: about 10 MB at most.
SIZE_CACHE_ENTRIES = 1 << 16


def ciphertext_length(plain_len: int, segment_size: int) -> int:
    """Stored bytes of an object of ``plain_len`` plaintext bytes (an empty object has one tag)."""
    return HEADER_BYTES + plain_len + TAG_BYTES * max(1, -(-plain_len // segment_size))


class EncryptedStore(ObjectStore):
    """Encrypts on :meth:`adopt`, decrypts and verifies on :meth:`open_range`; delegates the rest.

    The whole :class:`ObjectStore` contract is forwarded, the optional capabilities included
    (:meth:`prefetch` with its range mapped to the stored segments, :meth:`status` as is); a
    capability of the inner store that takes plaintext must be added here explicitly, never
    reached around this class.
    """

    def __init__(self, inner: ObjectStore, keyring: Keyring):
        self.inner = inner
        self.keyring = keyring
        self.segment_size = keyring.segment_size
        self._header = _HEADER.pack(OBJECT_MAGIC, OBJECT_VERSION, self.segment_size.bit_length() - 1, 0, keyring.key_id)
        self._sizes: dict[str, int] = {}
        self._sizes_lock = threading.Lock()
        self._minted: dict[str, None] = {}
        self._minted_lock = threading.Lock()

    @property
    def initial_state(self) -> str:  # type: ignore[override]
        return self.inner.initial_state

    def object_hasher(self) -> _MintingHasher:
        """A keyed hasher naming one object (``update``/``hexdigest``, HMAC-SHA256 with the
        keyring's object-id subkey). Pass the bound method to ``FileService(object_hasher=...)``.
        The ids it returns are remembered, so :meth:`adopt` need not hash those chunks again."""
        return _MintingHasher(self.keyring.object_hasher(), self._mint)

    def _mint(self, object_id: str) -> None:
        with self._minted_lock:
            if len(self._minted) >= MINTED_IDS_MAX:
                self._minted.pop(next(iter(self._minted)))
            self._minted[object_id] = None

    def _take_minted(self, object_id: str) -> bool:
        with self._minted_lock:
            return self._minted.pop(object_id, False) is None

    def aad(self, object_id: str, index: int, final: bool, total: int) -> bytes:
        return self._header + struct.pack("!QBQ", index, final, total if final else 0) + object_id.encode("ascii")

    def segment_offset(self, index: int) -> int:
        """Where segment ``index`` starts in the stored object."""
        return HEADER_BYTES + index * (self.segment_size + TAG_BYTES)

    # -- writing --------------------------------------------------------------------------------
    def adopt(self, object_id: str, source: Path, size: int) -> None:
        """Encrypt ``source`` (plaintext, ``size`` bytes) segment by segment into a temporary
        file beside it, hand that to the inner store, then remove ``source``. Memory: one segment.

        Raises :class:`IntegrityError` if ``object_id`` is not the keyed hash of the content (the
        nonce-safety argument depends on it) or the file is not ``size`` bytes long.
        """
        seg = self.segment_size
        cipher = self.keyring.object_cipher(object_id)
        mac = None if self._take_minted(object_id) else self.keyring.object_hasher()
        count = max(1, -(-size // seg))
        tmp = source.with_name(source.name + ".enc")
        try:
            with open(source, "rb", buffering=0) as src, open(tmp, "xb") as dst:
                dst.write(self._header)
                view = memoryview(bytearray(seg))
                sealed = memoryview(bytearray(seg + TAG_BYTES))
                for i in range(count):
                    want = min(seg, size - i * seg)
                    got = _read_into(src, view[:want])
                    if got != want:
                        raise IntegrityError(
                            f"cannot store object {object_id}: file has {i * seg + got} of {size} bytes"
                        )
                    piece = view[:want]
                    if mac is not None:
                        mac.update(piece)
                    out = sealed[: want + TAG_BYTES]
                    cipher.encrypt_into(segment_nonce(i), piece, self.aad(object_id, i, i == count - 1, size), out)
                    dst.write(out)
                if src.read(1):
                    raise IntegrityError(f"cannot store object {object_id}: file is longer than {size} bytes")
            if mac is not None and not hmac.compare_digest(mac.hexdigest(), object_id):
                raise IntegrityError(f"object id {object_id} is not the keyed hash of its content; not storing it")
            self.inner.adopt(object_id, tmp, ciphertext_length(size, seg))
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot encrypt object {object_id}: {exc}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        source.unlink(missing_ok=True)
        self.remember_size(object_id, size)

    # -- reading --------------------------------------------------------------------------------
    def open_range(self, object_id: str, offset: int, length: int) -> RangeStream:
        """A lazy stream of plaintext bytes ``[offset, offset+length)``.

        Fetches from the inner store only the segments that overlap the range (one inner
        ``open_range`` for all of them), and decrypts one segment at a time as the caller reads.
        Raises :class:`IntegrityError` when a segment fails authentication or the object is
        shorter than the range; bytes of a failed segment are never returned.
        """
        if offset < 0 or length < 0:
            raise ValueError(f"bad range {offset}+{length}")
        if length == 0:
            self.inner.open_range(object_id, 0, 0).close()
            return io.BytesIO(b"")
        return _DecryptingReader(self, object_id, offset, length)

    def prefetch(self, object_id: str, offset: int, length: int) -> None:
        """Forward the read-ahead hint for the stored segments that hold ``[offset, offset+length)``."""
        if offset < 0 or length <= 0:
            return
        seg = self.segment_size
        end = offset + length
        first, last = offset // seg, (end - 1) // seg
        start = 0 if first == 0 else self.segment_offset(first)  # the first segment needs the header
        # up to the last byte's tag: exact when the range ends the object, which a hint of a
        # whole chunk does; a shorter range's last segment is read whole anyway
        stop = self.segment_offset(last) + (end - last * seg) + TAG_BYTES
        self.inner.prefetch(object_id, start, stop - start)

    def status(self) -> dict | None:
        return self.inner.status()

    def known_size(self, object_id: str) -> int | None:
        with self._sizes_lock:
            return self._sizes.get(object_id)

    def remember_size(self, object_id: str, size: int) -> None:
        """Remember an object's plaintext size. A wrong size cannot make a read return wrong
        bytes (segment geometry is authenticated); it makes reads fail until it is forgotten."""
        with self._sizes_lock:
            if len(self._sizes) >= SIZE_CACHE_ENTRIES:
                self._sizes.pop(next(iter(self._sizes)))
            self._sizes[object_id] = size

    def forget_size(self, object_id: str) -> None:
        with self._sizes_lock:
            self._sizes.pop(object_id, None)

    # -- the rest of the contract ---------------------------------------------------------------
    def delete(self, object_ids: Iterable[str]) -> None:
        ids = list(object_ids)
        self.inner.delete(ids)
        with self._sizes_lock:
            for oid in ids:
                self._sizes.pop(oid, None)

    def list_ids(self) -> Iterator[tuple[str, int]]:
        """``(id, plaintext size)``; size -1 for a stored object too short to be well-formed."""
        for oid, stored in self.inner.list_ids():
            yield oid, self._plain_size(stored)

    def size_of(self, object_id: str) -> int | None:
        """Plaintext size (-1 if the stored object cannot be well-formed), None if absent."""
        stored = self.inner.size_of(object_id)
        return None if stored is None else self._plain_size(stored)

    def _plain_size(self, stored: int) -> int:
        plain = plaintext_length(stored - HEADER_BYTES, self.segment_size)
        return -1 if plain is None else plain

    def close(self) -> None:
        self.inner.close()


class _MintingHasher:
    """An HMAC that reports the id it produced (see :meth:`EncryptedStore.object_hasher`)."""

    def __init__(self, mac: hmac.HMAC, mint):
        self._mac = mac
        self._mint = mint

    def update(self, data) -> None:
        self._mac.update(data)

    def hexdigest(self) -> str:
        digest = self._mac.hexdigest()
        self._mint(digest)
        return digest


def _read_into(f, view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    return got


class _DecryptingReader(io.RawIOBase):
    """Plaintext of one range of one object, decrypted segment by segment as it is read.

    The object's plaintext size decides which segment is final and how long it is. When the
    store does not know it yet, the reader assumes the range ends where the object ends (how
    the file service reads whole extents) and asks the inner store for the real size only if
    the last segment does not authenticate under that assumption.

    Memory: ciphertext is fetched :data:`FETCH_BYTES` at a time; segments are decrypted into
    one private buffer and output is assembled in another, both reused (a fresh allocation per
    segment makes the C allocator hand memory back and fault it in again, which costs more than
    the decryption). Plaintext is copied out only after its segment authenticated; after a
    failure the reader refuses every further read.
    """

    def __init__(self, store: EncryptedStore, object_id: str, offset: int, length: int):
        self._store = store
        self._oid = object_id
        self._seg = store.segment_size
        self._cipher = store.keyring.object_cipher(object_id)
        self._end = offset + length
        self._left = length
        self._index = offset // self._seg
        self._skip = offset - self._index * self._seg
        self._last = (self._end - 1) // self._seg
        self._total = store.known_size(object_id)
        self._raw: RangeStream | None = None
        self._raw_left = 0
        self._fetched = memoryview(b"")
        self._plain = memoryview(bytearray(min(self._seg, max(length + self._skip, 1))))
        self._out = memoryview(bytearray(0))
        self._buf = memoryview(b"")
        self._failed: IntegrityError | None = None

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all that is left if ``n`` < 0); fewer only at the end of the range."""
        n = self._left if n is None or n < 0 else min(n, self._left)
        if len(self._out) < n:
            self._out = memoryview(bytearray(n))
        got = self.readinto(self._out[:n])
        return bytes(self._out[:got])

    def readinto(self, b) -> int:
        """Fill ``b`` (fewer bytes only at the end of the range); raises IntegrityError."""
        if self._failed is not None:
            raise self._failed
        view = memoryview(b).cast("B")
        n, pos = min(len(view), self._left), 0
        try:
            while pos < n:
                if not self._buf:
                    plain = self._next_segment(view[pos:n])
                    if plain.obj is view.obj:  # decrypted in place: a whole segment
                        pos += len(plain)
                        continue
                    self._buf = plain
                take = min(n - pos, len(self._buf))
                view[pos : pos + take] = self._buf[:take]
                self._buf = self._buf[take:]
                pos += take
        except IntegrityError as exc:
            self._failed = exc
            raise
        self._left -= n
        return n

    def _geometry(self, index: int, total: int) -> tuple[int, bool]:
        """(plaintext length, is final) of segment ``index`` in an object of ``total`` bytes."""
        return min(self._seg, total - index * self._seg), (index + 1) * self._seg >= total

    def _next_segment(self, dest: memoryview) -> memoryview:
        """The wanted part of the next segment: decrypted straight into ``dest`` when it is the
        whole segment and fits, else into the private buffer."""
        i = self._index
        total = self._total if self._total is not None else self._end
        plen, final = self._geometry(i, total)
        if plen <= 0 or total < self._end:
            self._store.forget_size(self._oid)
            raise IntegrityError(f"object {self._oid} is {total} bytes, shorter than the range read")
        sealed = self._read_sealed(i, plen)
        whole = self._skip == 0 and plen <= min(len(dest), self._end - i * self._seg)
        plain = self._open(sealed, i, final, total, dest[:plen] if whole else None)
        if plain is None and self._total is None and i == self._last:
            plain = self._open_unknown_last(sealed, i, plen)
        if plain is None:
            self._store.forget_size(self._oid)  # the next reader learns it afresh
            raise IntegrityError(
                f"object {self._oid} failed authentication at segment {i}: damaged, truncated, "
                "swapped with another object, or encrypted with another key"
            )
        self._index += 1
        start, self._skip = self._skip, 0
        stop = min(len(plain), self._end - i * self._seg)
        return plain[start:stop]

    def _open(
        self, sealed: memoryview, index: int, final: bool, total: int, target: memoryview | None = None
    ) -> memoryview | None:
        """Decrypt a segment into ``target`` (default: the private buffer) and return it, or None
        if it does not authenticate; then ``target`` is zeroed, so no unauthenticated byte stays."""
        n = len(sealed) - TAG_BYTES
        if target is None:
            if n > len(self._plain):
                self._plain = memoryview(bytearray(self._seg))
            target = self._plain[:n]
        aad = self._store.aad(self._oid, index, final, total)
        try:
            self._cipher.decrypt_into(segment_nonce(index), sealed, aad, target)
        except InvalidTag:
            target[:] = bytes(n)
            return None
        if final:
            self._store.remember_size(self._oid, total)
        return target

    def _open_unknown_last(self, sealed: memoryview, index: int, plen: int) -> memoryview | None:
        """The guess "the object ends where the range ends" did not authenticate: try the
        other reading of a full segment, else learn the real size and read the segment again."""
        if plen == self._seg:
            plain = self._open(sealed, index, False, 0)
            if plain is not None:
                return plain
        total = self._store.inner.size_of(self._oid)
        if total is None:
            raise ObjectMissing(f"object {self._oid} is missing")
        total = self._store._plain_size(total)
        if total <= self._end:
            return None
        self._total = total
        self._store.remember_size(self._oid, total)  # so the next slice needs no size_of
        real_len, final = self._geometry(index, total)
        self._close_raw()
        return self._open(self._read_sealed(index, real_len), index, final, total)

    def _read_sealed(self, index: int, plen: int) -> memoryview:
        """The stored bytes of segment ``index`` (``plen`` + tag), from the current fetch."""
        if self._raw is None:
            self._open_raw(index, plen)
        want = plen + TAG_BYTES
        if len(self._fetched) < want:
            step = self._seg + TAG_BYTES
            size = min(self._raw_left, max(want, -(-FETCH_BYTES // step) * step))
            if size < want:
                raise IntegrityError(f"object {self._oid}: segment {index} lies past the range fetched")
            self._fetched = memoryview(self._read_raw(size, index))
        sealed, self._fetched = self._fetched[:want], self._fetched[want:]
        return sealed

    def _read_raw(self, size: int, index: int) -> bytes:
        parts, got = [], 0
        while got < size:
            data = self._raw.read(size - got)
            if not data:
                raise IntegrityError(f"object {self._oid} is truncated: segment {index} ends early")
            parts.append(data)
            got += len(data)
        self._raw_left -= got
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _open_raw(self, index: int, plen: int) -> None:
        """One inner range from segment ``index`` (from the header if 0) through the last one."""
        store = self._store
        total = self._total if self._total is not None else self._end
        last_len = plen if index == self._last else self._geometry(self._last, total)[0]
        start = 0 if index == 0 else store.segment_offset(index)
        stop = store.segment_offset(self._last) + last_len + TAG_BYTES
        self._raw = store.inner.open_range(self._oid, start, stop - start)
        self._raw_left = stop - start
        self._fetched = memoryview(b"")
        if start == 0:
            self._check_header()

    def _check_header(self) -> None:
        try:
            got = self._read_raw(HEADER_BYTES, 0)
        except IntegrityError:
            raise IntegrityError(f"object {self._oid} is truncated inside its header") from None
        if got == self._store._header:
            return
        if got[:4] != OBJECT_MAGIC:
            raise IntegrityError(f"object {self._oid} is not an encrypted hfdav object (unknown header)")
        _magic, version, shift, _reserved, key_id = _HEADER.unpack(got)
        if key_id != self._store.keyring.key_id:
            raise IntegrityError(f"object {self._oid} was encrypted with a different key")
        raise IntegrityError(f"object {self._oid} has format version {version}, segment 2^{shift}: not this repo's")

    def _close_raw(self) -> None:
        if self._raw is not None:
            try:
                self._raw.close()
            except Exception:  # closing a read stream loses nothing
                log.debug("closing object stream failed", exc_info=True)
            self._raw = None

    def close(self) -> None:
        self._close_raw()
        super().close()
