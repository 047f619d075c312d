"""Client-side encryption: EncryptedStore over a real LocalStore, the file service on top, key
handling at start (build_gateway), metadata blob sealing, and a scan of every stored byte for
plaintext. Segments are 4 KiB here so every boundary case stays small."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest
import requests

from gateway.app import ENCRYPTION_SETTING, build_gateway
from gateway.config import load_settings
from gateway.crypto_keys import (
    BLOB_SEGMENT_SIZE,
    TAG_BYTES,
    EncryptionSecret,
    Keyring,
    open_keyring,
    parse_encryption_key,
    plaintext_length,
)
from gateway.errors import ConfigError, IntegrityError, StoreError
from gateway.files import FileService
from gateway.meta.repo import MetadataRepository
from gateway.store.encrypted import HEADER_BYTES, EncryptedStore, ciphertext_length
from gateway.store.local import LocalStore
from tests.inprocess import serving

SEG = 4096
#: One chunk size that is not a multiple of the segment size, one that is.
CHUNK_ODD = 3 * SEG + 100
CHUNK_EVEN = 4 * SEG
#: A cheap scrypt cost for tests that create passphrase keyrings directly.
TEST_SCRYPT_N = 1 << 10


def new_key() -> str:
    return os.urandom(32).hex()


def make_ring(key: str | None = None) -> Keyring:
    return Keyring.create(parse_encryption_key(key or new_key()), segment_size=SEG)


class RecordingStore(LocalStore):
    """A LocalStore that remembers every ``open_range`` asked of it (to check what is fetched)."""

    def __init__(self, root: Path):
        super().__init__(root, fsync=False)
        self.ranges: list[tuple[str, int, int]] = []
        self.size_calls = 0

    def open_range(self, object_id, offset, length):
        self.ranges.append((object_id, offset, length))
        return super().open_range(object_id, offset, length)

    def size_of(self, object_id):
        self.size_calls += 1
        return super().size_of(object_id)


@pytest.fixture
def ring() -> Keyring:
    return make_ring()


@pytest.fixture
def inner(tmp_path) -> RecordingStore:
    return RecordingStore(tmp_path / "objects")


@pytest.fixture
def enc(inner, ring) -> EncryptedStore:
    return EncryptedStore(inner, ring)


@pytest.fixture
def meta(tmp_path):
    repo = MetadataRepository.open(f"sqlite:///{tmp_path / 'meta.sqlite3'}")
    yield repo
    repo.close()


def file_service(meta, store: EncryptedStore, tmp_path: Path, chunk_size: int) -> FileService:
    return FileService(meta, store, tmp_dir=tmp_path / "tmp", chunk_size=chunk_size, object_hasher=store.object_hasher)


@pytest.fixture(params=[CHUNK_ODD, CHUNK_EVEN], ids=["chunk-odd", "chunk-even"])
def efiles(request, meta, enc, tmp_path) -> FileService:
    return file_service(meta, enc, tmp_path, request.param)


def object_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def read_range(files: FileService, path: str, start: int, length: int) -> bytes:
    with files.open_read(files.stat(path)) as r:
        r.seek(start)
        return r.read(length)


# -- round trips ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        SEG - 1,
        SEG,
        SEG + 1,
        2 * SEG,
        CHUNK_ODD - 1,
        CHUNK_ODD,
        CHUNK_ODD + 1,
        CHUNK_EVEN + 1,
        3 * CHUNK_ODD + SEG + 7,
    ],
)
def test_round_trip(efiles, size):
    data = os.urandom(size)
    efiles.write_bytes("/f.bin", data)
    assert efiles.read_bytes("/f.bin") == data
    assert efiles.stat("/f.bin").size == size


def test_range_reads_at_segment_and_chunk_boundaries(efiles):
    chunk = efiles.chunk_size
    size = 3 * chunk + SEG + 7
    data = os.urandom(size)
    efiles.write_bytes("/r.bin", data)
    boundaries = {0, size}
    for c in range(0, size, chunk):
        boundaries.update(range(c, min(c + chunk, size) + 1, SEG))
        boundaries.add(c)
    checked = 0
    for b in sorted(boundaries):
        for start in (b - 1, b, b + 1):
            if not 0 <= start < size:
                continue
            for length in (1, 2, SEG - 1, SEG, SEG + 2, chunk, size - start):
                assert read_range(efiles, "/r.bin", start, length) == data[start : start + length], (start, length)
                checked += 1
            for end in (b - 1, b, b + 1):
                if start < end <= size:
                    assert read_range(efiles, "/r.bin", start, end - start) == data[start:end], (start, end)
    assert checked > 100


@pytest.mark.parametrize("cached", [True, False], ids=["size-known", "size-unknown"])
def test_store_slices_at_every_boundary(inner, ring, cached, tmp_path):
    """Ranges that end inside the object (pack members) with and without the size cached."""
    size = 3 * SEG + 100
    data = os.urandom(size)
    writer = EncryptedStore(inner, ring)
    oid = put_object(writer, tmp_path, data)
    store = writer if cached else EncryptedStore(inner, ring)
    points = sorted({p + d for p in range(0, size + 1, SEG) for d in (-1, 0, 1)} | {size - 1, size} - {-1})
    for start in points:
        for end in points:
            if 0 <= start < end <= size:
                store = store if cached else EncryptedStore(inner, ring)
                with store.open_range(oid, start, end - start) as s:
                    assert read_all(s) == data[start:end], (start, end)


def test_slices_of_an_object_of_unknown_size_ask_its_size_once(inner, ring, tmp_path):
    """After a restart, reading members of a pack learns the pack's size once, not per read."""
    data = os.urandom(8 * SEG + 123)
    oid = put_object(EncryptedStore(inner, ring), tmp_path, data)
    store = EncryptedStore(inner, ring)
    for start in range(0, 6 * SEG, SEG // 2):
        with store.open_range(oid, start, 700) as s:
            assert read_all(s) == data[start : start + 700]
    assert inner.size_calls == 1


def test_range_read_fetches_only_needed_segments(enc, inner, tmp_path):
    data = os.urandom(10 * SEG)
    oid = put_object(enc, tmp_path, data)
    inner.ranges.clear()
    start = 5 * SEG + 10
    with enc.open_range(oid, start, 100) as s:
        assert read_all(s) == data[start : start + 100]
    assert inner.ranges == [(oid, enc.segment_offset(5), SEG + TAG_BYTES)]
    inner.ranges.clear()
    with enc.open_range(oid, SEG - 1, 2) as s:  # straddles segments 0 and 1: header + two segments
        assert read_all(s) == data[SEG - 1 : SEG + 1]
    assert inner.ranges == [(oid, 0, HEADER_BYTES + 2 * (SEG + TAG_BYTES))]


def test_reads_return_what_was_asked_across_segments(enc, tmp_path):
    data = os.urandom(4 * SEG + 5)
    oid = put_object(enc, tmp_path, data)
    with enc.open_range(oid, 3, len(data) - 3) as s:
        assert s.read(2 * SEG + 1) == data[3 : 2 * SEG + 4]
        assert s.read(1) == data[2 * SEG + 4 : 2 * SEG + 5]
        assert s.read() == data[2 * SEG + 5 :]
        assert s.read(10) == b""


# -- tampering --------------------------------------------------------------------------------
def put_object(store: EncryptedStore, tmp_path: Path, data: bytes) -> str:
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    h = store.object_hasher()
    h.update(data)
    oid = h.hexdigest()
    src = tmp / f"put-{oid[:8]}-{random.random()}"
    src.write_bytes(data)
    store.adopt(oid, src, len(data))
    return oid


def read_all(stream) -> bytes:
    out = bytearray()
    while True:
        block = stream.read(1 << 20)
        if not block:
            return bytes(out)
        out += block


def read_until_error(store: EncryptedStore, oid: str, size: int) -> tuple[bytes, Exception | None]:
    """What a reader got before the store raised (it must be a true prefix)."""
    out = bytearray()
    try:
        with store.open_range(oid, 0, size) as s:
            while True:
                block = s.read(SEG)
                if not block:
                    return bytes(out), None
                out += block
    except IntegrityError as exc:
        return bytes(out), exc


@pytest.mark.parametrize("where", ["header", "first-byte", "middle", "tag", "last-byte"])
def test_flipped_byte_fails_the_read(enc, inner, tmp_path, where):
    data = os.urandom(3 * SEG + 50)
    oid = put_object(enc, tmp_path, data)
    path = inner.path_of(oid)
    raw = bytearray(path.read_bytes())
    at = {
        "header": 5,
        "first-byte": HEADER_BYTES,
        "middle": enc.segment_offset(1) + SEG // 2,
        "tag": enc.segment_offset(2) - 3,
        "last-byte": len(raw) - 1,
    }[where]
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))
    for store in (enc, EncryptedStore(inner, enc.keyring)):
        got, exc = read_until_error(store, oid, len(data))
        assert isinstance(exc, IntegrityError), where
        assert oid in str(exc)
        assert data.startswith(got)


def test_tampered_segment_fails_ranges_that_touch_it_only(enc, inner, tmp_path):
    data = os.urandom(4 * SEG)
    oid = put_object(enc, tmp_path, data)
    path = inner.path_of(oid)
    raw = bytearray(path.read_bytes())
    raw[enc.segment_offset(2) + 7] ^= 0x80
    path.write_bytes(bytes(raw))
    with enc.open_range(oid, SEG, SEG) as s:  # segment 1 only: intact
        assert read_all(s) == data[SEG : 2 * SEG]
    with enc.open_range(oid, 0, len(data)) as s:
        assert s.read(2 * SEG) == data[: 2 * SEG]
        with pytest.raises(IntegrityError):
            s.read(10)
        with pytest.raises(IntegrityError):  # a failed stream stays failed
            s.read(10)
    with (
        pytest.raises(IntegrityError, match="failed authentication at segment 2"),
        enc.open_range(oid, 2 * SEG + 100, 10) as s,
    ):
        s.read(10)


def test_failed_readinto_leaves_no_unauthenticated_bytes(enc, inner, tmp_path):
    data = os.urandom(3 * SEG)
    oid = put_object(enc, tmp_path, data)
    path = inner.path_of(oid)
    raw = bytearray(path.read_bytes())
    raw[enc.segment_offset(1) + 1] ^= 0xFF
    path.write_bytes(bytes(raw))
    buf = bytearray(b"\xaa" * len(data))
    with enc.open_range(oid, 0, len(data)) as s, pytest.raises(IntegrityError):
        s.readinto(buf)
    assert buf[:SEG] == data[:SEG]  # segment 0 authenticated
    assert buf[SEG : 2 * SEG] == bytes(SEG)  # segment 1 was decrypted in place, then wiped


def test_plain_object_in_an_encrypted_store_is_refused(enc, inner, tmp_path):
    src = tmp_path / "put-plain"
    src.write_bytes(b"plain bytes, never encrypted" * 100)
    oid = hashlib.sha256(src.read_bytes()).hexdigest()
    inner.adopt(oid, src, 2800)
    with pytest.raises(IntegrityError, match="not an encrypted hfdav object"), enc.open_range(oid, 0, 100) as s:
        s.read()


def test_swapped_objects_are_detected(enc, inner, tmp_path):
    a, b = os.urandom(2 * SEG + 9), os.urandom(2 * SEG + 9)
    oid_a, oid_b = put_object(enc, tmp_path, a), put_object(enc, tmp_path, b)
    pa, pb = inner.path_of(oid_a), inner.path_of(oid_b)
    ca, cb = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(cb)
    pb.write_bytes(ca)
    for oid, size in ((oid_a, len(a)), (oid_b, len(b))):
        got, exc = read_until_error(EncryptedStore(inner, enc.keyring), oid, size)
        assert isinstance(exc, IntegrityError)
        assert got == b""


def test_reordered_segments_are_detected(enc, inner, tmp_path):
    data = os.urandom(3 * SEG)
    oid = put_object(enc, tmp_path, data)
    path = inner.path_of(oid)
    raw = path.read_bytes()
    s0, s1 = enc.segment_offset(0), enc.segment_offset(1)
    seg_len = SEG + TAG_BYTES
    path.write_bytes(raw[:s0] + raw[s1 : s1 + seg_len] + raw[s0 : s0 + seg_len] + raw[s1 + seg_len :])
    got, exc = read_until_error(enc, oid, len(data))
    assert isinstance(exc, IntegrityError)
    assert got == b""


@pytest.mark.parametrize("cut", ["final-segment", "mid-segment", "one-byte", "header-only"])
@pytest.mark.parametrize("cached", [True, False], ids=["size-known", "size-unknown"])
def test_truncated_object_is_detected(enc, inner, tmp_path, cut, cached):
    data = os.urandom(3 * SEG + 50)
    oid = put_object(enc, tmp_path, data)
    path = inner.path_of(oid)
    raw = path.read_bytes()
    keep = {
        "final-segment": enc.segment_offset(3),
        "mid-segment": enc.segment_offset(1) + 100,
        "one-byte": len(raw) - 1,
        "header-only": HEADER_BYTES,
    }[cut]
    path.write_bytes(raw[:keep])
    store = enc if cached else EncryptedStore(inner, enc.keyring)
    got, exc = read_until_error(store, oid, len(data))
    assert isinstance(exc, IntegrityError), cut
    assert data.startswith(got)
    with pytest.raises(IntegrityError), store.open_range(oid, len(data) - 10, 10) as s:
        s.read(10)


def test_object_truncated_to_a_segment_boundary_is_not_read_as_complete(enc, inner, tmp_path):
    """A store that believes the object ends at a segment boundary must not accept a
    non-final segment as the last one."""
    data = os.urandom(3 * SEG)
    oid = put_object(enc, tmp_path, data)
    path = inner.path_of(oid)
    path.write_bytes(path.read_bytes()[: enc.segment_offset(2)])
    fresh = EncryptedStore(inner, enc.keyring)
    assert fresh.size_of(oid) == 2 * SEG
    fresh.remember_size(oid, 2 * SEG)  # what a reader trusting size_of would assume
    got, exc = read_until_error(fresh, oid, 2 * SEG)
    assert isinstance(exc, IntegrityError)
    assert got == data[:SEG]


def test_object_of_another_key_is_reported_as_such(inner, tmp_path):
    ours, theirs = make_ring(), make_ring()
    data = os.urandom(SEG + 1)
    oid = put_object(EncryptedStore(inner, theirs), tmp_path, data)
    with (
        pytest.raises(IntegrityError, match="different key"),
        EncryptedStore(inner, ours).open_range(oid, 0, len(data)) as s,
    ):
        s.read()


def test_adopt_refuses_an_id_that_is_not_the_keyed_hash(enc, inner, tmp_path):
    src = tmp_path / "put-x"
    src.write_bytes(b"some bytes")
    plain_sha = hashlib.sha256(b"some bytes").hexdigest()
    with pytest.raises(IntegrityError, match="not the keyed hash"):
        enc.adopt(plain_sha, src, 10)
    assert list(inner.list_ids()) == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["put-x"]
    with pytest.raises(IntegrityError, match="of 11 bytes"):
        enc.adopt(plain_sha, src, 11)


def test_adopt_without_minted_id_verifies_and_stores(inner, ring, tmp_path):
    data = os.urandom(SEG * 2 + 3)
    h = ring.object_hasher()  # computed outside the store: not minted, so adopt re-hashes
    h.update(data)
    src = tmp_path / "put-y"
    src.write_bytes(data)
    store = EncryptedStore(inner, ring)
    store.adopt(h.hexdigest(), src, len(data))
    assert not src.exists()
    with store.open_range(h.hexdigest(), 0, len(data)) as s:
        assert read_all(s) == data


def test_sizes_are_plaintext(enc, inner, tmp_path):
    sizes = [0, 1, SEG, SEG + 1, 5 * SEG]
    ids = {put_object(enc, tmp_path, os.urandom(n)): n for n in sizes}
    assert dict(enc.list_ids()) == ids
    for oid, n in ids.items():
        assert enc.size_of(oid) == n
        assert inner.size_of(oid) == ciphertext_length(n, SEG)
    assert enc.size_of("ab" * 32) is None
    for n in range(0, 4 * SEG):
        assert plaintext_length(ciphertext_length(n, SEG) - HEADER_BYTES, SEG) == n
    assert plaintext_length(TAG_BYTES - 1, SEG) is None
    assert plaintext_length(SEG + TAG_BYTES + TAG_BYTES, SEG) is None  # empty final segment after a full one


# -- dedup ------------------------------------------------------------------------------------
def test_identical_content_is_stored_once(meta, enc, inner, tmp_path):
    files = file_service(meta, enc, tmp_path, CHUNK_ODD)
    data = os.urandom(2 * CHUNK_ODD + 500)
    files.write_bytes("/a.bin", data)
    before = object_files(inner.root)
    assert len(before) == 3
    files.write_bytes("/b.bin", data)
    files.mkdir("/c")
    files.write_bytes("/c/a-copy.bin", data)
    assert object_files(inner.root) == before
    files.write_bytes("/d.bin", data[:CHUNK_ODD] + os.urandom(CHUNK_ODD))  # shares chunk 0 only
    assert len(object_files(inner.root)) == 4
    assert files.read_bytes("/b.bin") == data


def test_equal_chunks_give_equal_ciphertext_and_other_keys_other_ids(tmp_path):
    key = new_key()
    data = os.urandom(SEG * 3)
    ring1 = make_ring(key)
    one = EncryptedStore(LocalStore(tmp_path / "one", fsync=False), ring1)
    two = EncryptedStore(
        LocalStore(tmp_path / "two", fsync=False), Keyring.unlock(parse_encryption_key(key), ring1.record)
    )
    other = EncryptedStore(LocalStore(tmp_path / "three", fsync=False), make_ring())
    a, b, c = (put_object(s, tmp_path, data) for s in (one, two, other))
    assert a == b != c
    assert one.inner.path_of(a).read_bytes() == two.inner.path_of(b).read_bytes()
    assert hashlib.sha256(data).hexdigest() not in (a, c)


# -- no plaintext in the repo ------------------------------------------------------------------
def shares_window(plain: bytes, stored: bytes, width: int = 32) -> bool:
    """Whether some ``width``-byte window of ``plain`` occurs in ``stored``.

    Any common run of ≥ 32 bytes contains a 16-byte piece of ``stored`` that starts at a multiple
    of 16; index those, look up every 16-byte window of ``plain``, then measure the match."""
    anchors: dict[bytes, list[int]] = {}
    for j in range(0, len(stored) - 15, 16):
        anchors.setdefault(stored[j : j + 16], []).append(j)
    for k in range(len(plain) - 15):
        for j in anchors.get(plain[k : k + 16], ()):
            back = 0
            while back < k and back < j and plain[k - back - 1] == stored[j - back - 1]:
                back += 1
            fwd = 16
            while k + fwd < len(plain) and j + fwd < len(stored) and plain[k + fwd] == stored[j + fwd]:
                fwd += 1
            if back + fwd >= width:
                return True
    return False


def test_window_scanner_finds_what_it_should():
    plain = os.urandom(5000)
    assert shares_window(plain, os.urandom(100) + plain[1234:1266] + os.urandom(100))
    # the bytes around the 31-byte run differ from plain's neighbours of it: random ones would
    # lengthen the run to 32 one time in 128
    before = os.urandom(99) + bytes([plain[1233] ^ 0xFF])
    after = bytes([plain[1265] ^ 0xFF]) + os.urandom(99)
    assert not shares_window(plain, before + plain[1234:1265] + after)


def test_no_plaintext_or_plaintext_hash_in_any_stored_object(meta, enc, inner, tmp_path):
    files = file_service(meta, enc, tmp_path, CHUNK_ODD)
    rng = random.Random(5)
    contents = {
        "/random.bin": os.urandom(2 * CHUNK_ODD + 77),
        "/zeros.bin": bytes(CHUNK_ODD + SEG),
        "/text.txt": b"".join(f"line {i}: the quick brown fox jumps over the lazy dog\n".encode() for i in range(400)),
        "/pattern.bin": bytes(rng.randrange(4) for _ in range(SEG * 3)),
        "/small.txt": b"a small secret file with a recognisable sentence in it",
    }
    for path, data in contents.items():
        files.write_bytes(path, data)
    hashes: set[bytes] = set()
    for data in contents.values():
        pieces = [data] + [data[i : i + CHUNK_ODD] for i in range(0, len(data), CHUNK_ODD)]
        for piece in pieces:
            digest = hashlib.sha256(piece).digest()
            hashes.update({digest, digest.hex().encode(), digest.hex().upper().encode()})
    stored = object_files(inner.root)
    assert len(stored) >= 8
    for obj in stored:
        blob = obj.read_bytes()
        for h in hashes:
            assert h not in blob, obj
            assert h.decode("latin-1") not in obj.name
        for path, data in contents.items():
            assert not shares_window(data, blob), (path, obj)
    for path, data in contents.items():
        assert files.read_bytes(path) == data


def test_sealed_metadata_hides_names(ring):
    journal = json.dumps(
        [{"op": "put", "path": "/finance/salaries-2024.xlsx", "extents": [["ab" * 32, 0, 123456]]}]
    ).encode()
    sealed = ring.seal_blob(journal, purpose="journal")
    assert b"salaries" not in sealed and b"finance" not in sealed
    assert not shares_window(journal, sealed, width=16)
    assert ring.open_blob(sealed, purpose="journal") == journal


# -- metadata blobs ---------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, 1000, BLOB_SEGMENT_SIZE, BLOB_SEGMENT_SIZE + 1, 2 * BLOB_SEGMENT_SIZE + 5])
def test_blob_round_trip(ring, size):
    data = os.urandom(size)
    sealed = ring.seal_blob(data, purpose="snapshot")
    assert ring.open_blob(sealed, purpose="snapshot") == data
    assert ring.seal_blob(data, purpose="snapshot") != sealed  # fresh salt every time


def test_blob_failures(ring):
    data = os.urandom(BLOB_SEGMENT_SIZE + 100)
    sealed = ring.seal_blob(data, purpose="journal")
    with pytest.raises(IntegrityError, match="failed authentication"):
        ring.open_blob(sealed, purpose="snapshot")
    flipped = bytearray(sealed)
    flipped[len(flipped) // 2] ^= 1
    with pytest.raises(IntegrityError):
        ring.open_blob(bytes(flipped), purpose="journal")
    for cut in (len(sealed) - 1, 32 + BLOB_SEGMENT_SIZE + TAG_BYTES, 40):
        with pytest.raises(IntegrityError):
            ring.open_blob(sealed[:cut], purpose="journal")
    with pytest.raises(IntegrityError, match="different key"):
        make_ring().open_blob(sealed, purpose="journal")
    with pytest.raises(IntegrityError, match="not an encrypted"):
        ring.open_blob(b'{"plain": "json"}', purpose="journal")


# -- keys and start-up ------------------------------------------------------------------------
def test_key_rule():
    raw = os.urandom(32)
    import base64

    assert parse_encryption_key(raw.hex()).material == raw
    assert parse_encryption_key(raw.hex().upper()).material == raw
    assert parse_encryption_key(base64.b64encode(raw).decode()).material == raw
    assert parse_encryption_key(base64.urlsafe_b64encode(raw).decode().rstrip("=")).material == raw
    phrase = parse_encryption_key("passphrase:correct horse battery staple")
    assert phrase == EncryptionSecret("passphrase", b"correct horse battery staple")
    for bad in ("passphrase:short", raw.hex()[:-2], base64.b64encode(os.urandom(31)).decode(), "hunter2", "zz" * 32):
        with pytest.raises(ValueError) as info:
            parse_encryption_key(bad)
        assert bad not in str(info.value)
    assert raw.hex() not in repr(parse_encryption_key(raw.hex()))


def test_settings_validate_and_hide_the_key(tmp_path):
    key = new_key()
    s = load_settings({"HFDAV_DATA_DIR": str(tmp_path), "HFDAV_ENCRYPTION_KEY": key})
    assert s.encryption_key.material == bytes.fromhex(key)
    assert key not in repr(s)
    assert load_settings({"HFDAV_DATA_DIR": str(tmp_path)}).encryption_key is None
    with pytest.raises(ConfigError) as info:
        load_settings({"HFDAV_DATA_DIR": str(tmp_path), "HFDAV_ENCRYPTION_KEY": "passphrase:tiny"})
    assert any("HFDAV_ENCRYPTION_KEY" in p for p in info.value.problems)
    assert "tiny" not in str(info.value)


def gateway_settings(data_dir: Path, key: str | None):
    env = {"HFDAV_DATA_DIR": str(data_dir), "SYS_TOKEN": "pw", "HFDAV_CHUNK_SIZE": "1MiB"}
    if key is not None:
        env["HFDAV_ENCRYPTION_KEY"] = key
    return load_settings(env)


def start(data_dir: Path, key: str | None):
    return build_gateway(gateway_settings(data_dir, key))


def test_start_refuses_wrong_or_missing_key(tmp_path):
    data_dir, key = tmp_path / "data", new_key()
    gw = start(data_dir, key)
    assert isinstance(gw.store, EncryptedStore)
    assert gw.files.object_hasher == gw.store.object_hasher
    gw.files.write_bytes("/secret.txt", b"attack at dawn" * 1000)
    gw.close()
    with pytest.raises(ConfigError, match="not the key it was encrypted with") as info:
        start(data_dir, new_key())
    assert key not in str(info.value)
    with pytest.raises(ConfigError, match="is encrypted: set HFDAV_ENCRYPTION_KEY"):
        start(data_dir, None)
    with pytest.raises(ConfigError, match="encrypted with a key, and a passphrase was given"):
        start(data_dir, "passphrase:this is not the key at all")
    gw = start(data_dir, key)
    assert gw.files.read_bytes("/secret.txt") == b"attack at dawn" * 1000
    gw.close()


def test_start_refuses_key_for_unencrypted_data(tmp_path):
    data_dir = tmp_path / "data"
    gw = start(data_dir, None)
    assert not isinstance(gw.store, EncryptedStore)
    gw.files.write_bytes("/plain.txt", b"plain")
    gw.close()
    with pytest.raises(ConfigError, match="is not encrypted and already holds data"):
        start(data_dir, new_key())
    gw = start(data_dir, None)  # still usable without the key
    assert gw.files.read_bytes("/plain.txt") == b"plain"
    assert gw.repo.get_setting(ENCRYPTION_SETTING) is None
    gw.close()


def test_empty_data_dir_becomes_encrypted(tmp_path):
    data_dir = tmp_path / "data"
    start(data_dir, None).close()  # created, no objects yet
    key = new_key()
    gw = start(data_dir, key)
    record = json.loads(gw.repo.get_setting(ENCRYPTION_SETTING))
    assert record["scheme"] == "hfdav-aes256gcm-v1" and record["kdf"] == "none"
    assert key not in json.dumps(record)
    gw.close()


def test_passphrase_repo(tmp_path):
    data_dir = tmp_path / "data"
    phrase = "passphrase:a long and unguessable phrase"
    gw = start(data_dir, phrase)
    record = json.loads(gw.repo.get_setting(ENCRYPTION_SETTING))
    assert record["kdf"] == "scrypt" and len(record["salt"]) == 24
    gw.files.write_bytes("/x", b"x" * 5000)
    gw.close()
    with pytest.raises(ConfigError, match="not the key"):
        start(data_dir, "passphrase:a long and unguessable phrasE")
    with pytest.raises(ConfigError, match="encrypted with a passphrase, and a key was given"):
        start(data_dir, new_key())
    gw = start(data_dir, phrase)
    assert gw.files.read_bytes("/x") == b"x" * 5000
    gw.close()


def test_open_keyring_decisions():
    secret = parse_encryption_key(new_key())
    never = lambda: pytest.fail("has_data must not be consulted")  # noqa: E731
    assert open_keyring(None, None, has_data=never, where="r") == (None, None)
    ring, record = open_keyring(secret, None, has_data=lambda: False, where="r")
    assert ring is not None and record == ring.record
    again, new = open_keyring(secret, record, has_data=never, where="r")
    assert new is None and again.key_check == ring.key_check
    with pytest.raises(ConfigError, match="r is encrypted"):
        open_keyring(None, record, has_data=never, where="r")
    with pytest.raises(ConfigError, match="r is not encrypted"):
        open_keyring(secret, None, has_data=lambda: True, where="r")


def test_damaged_or_foreign_records_are_refused():
    secret = EncryptionSecret("passphrase", b"a passphrase long enough")
    ring = Keyring.create(secret, segment_size=SEG, scrypt_n=TEST_SCRYPT_N)
    assert Keyring.unlock(secret, ring.record).key_check == ring.key_check
    for change, message in (
        ({"scheme": "hfdav-future-v9"}, "this hfdav knows"),
        ({"scrypt_n": 1 << 30}, "out of bounds"),
        ({"segment_size": 1000}, "damaged"),
        ({"key_check": "%%%"}, "damaged"),
    ):
        with pytest.raises(ConfigError, match=message):
            Keyring.unlock(secret, {**ring.record, **change})


def test_segment_size_comes_from_the_record(tmp_path):
    key = new_key()
    big = Keyring.create(parse_encryption_key(key), segment_size=1 << 16)
    reopened = Keyring.unlock(parse_encryption_key(key), json.loads(json.dumps(big.record)))
    assert reopened.segment_size == 1 << 16
    store = EncryptedStore(LocalStore(tmp_path / "o", fsync=False), reopened)
    data = os.urandom(70000)
    oid = put_object(store, tmp_path, data)
    with EncryptedStore(store.inner, big).open_range(oid, 65530, 100) as s:
        assert read_all(s) == data[65530:65630]


# -- whole stack ------------------------------------------------------------------------------
def test_http_range_get_on_encrypted_gateway(tmp_path):
    gw = start(tmp_path / "data", new_key())
    try:
        with serving(gw.wsgi_app) as base:
            _range_gets_round_trip(base)
    finally:
        gw.close()


def _range_gets_round_trip(base: str) -> None:
    data = os.urandom(3 * (1 << 20) + 12345)
    r = requests.put(base + "/big.bin", data=data, auth=("admin", "pw"), timeout=60)
    assert r.status_code == 201
    for start_at, end in ((0, 0), (65535, 65536), ((1 << 20) - 3, (1 << 20) + 3), (len(data) - 10, len(data) - 1)):
        r = requests.get(
            base + "/big.bin", headers={"Range": f"bytes={start_at}-{end}"}, auth=("admin", "pw"), timeout=60
        )
        assert r.status_code == 206
        assert r.content == data[start_at : end + 1]
    assert requests.get(base + "/big.bin", auth=("admin", "pw"), timeout=60).content == data


def test_store_errors_are_store_errors(enc, tmp_path):
    with pytest.raises(StoreError):
        enc.open_range("cd" * 32, 0, 10).read(10)


# -- optional store capabilities pass through the encryption layer ------------------------------
class HintedStore(RecordingStore):
    """A RecordingStore that also records read-ahead hints and reports a status, as the Hub
    backend's write-back store does."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.hints: list[tuple[str, int, int]] = []

    def prefetch(self, object_id, offset, length):
        self.hints.append((object_id, offset, length))

    def status(self):
        return {"ok": True, "staged_bytes": 123, "pending_changes": 0}


def test_read_ahead_hints_reach_the_store_under_encryption(meta, ring, tmp_path):
    inner = HintedStore(tmp_path / "objects")
    enc = EncryptedStore(inner, ring)
    files = file_service(meta, enc, tmp_path, CHUNK_ODD)
    data = os.urandom(3 * CHUNK_ODD)
    files.write_bytes("/big.bin", data)
    chunks = [e.object_id for e in meta.get_with_extents("/big.bin")[1]]
    inner.hints.clear()
    assert files.read_bytes("/big.bin") == data
    stored = ciphertext_length(CHUNK_ODD, SEG)
    # a sequential read hints the second and third chunks, each as its whole stored object
    assert inner.hints == [(oid, 0, stored) for oid in chunks[1:]]


def test_read_ahead_hint_maps_a_mid_object_range_to_its_segments(ring, tmp_path):
    inner = HintedStore(tmp_path / "objects")
    enc = EncryptedStore(inner, ring)
    enc.prefetch("ab" * 32, 5 * SEG + 10, SEG)  # touches segments 5 and 6 (its first 10 bytes)
    assert inner.hints == [("ab" * 32, enc.segment_offset(5), SEG + TAG_BYTES + 10 + TAG_BYTES)]


def test_store_status_shows_through_encryption(ring, tmp_path):
    from gateway.store.writeback import WriteBackStore
    from gateway.web import store_check

    wb = WriteBackStore(LocalStore(tmp_path / "remote"), tmp_path / "wb", staging_limit=1 << 26, cache_size=0)
    enc = EncryptedStore(wb, ring)
    data = os.urandom(2 * SEG + 1)
    put_object(enc, tmp_path, data)
    report = store_check(enc)()
    assert report["staged_bytes"] == ciphertext_length(len(data), SEG), report
    assert report["kind"] == "EncryptedStore"
    wb.close()
