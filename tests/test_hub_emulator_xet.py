"""The Hub emulator's Xet path: formats (hashes, xorb chunks, shards) and the real huggingface_hub +
hf_xet uploading and downloading through it, with tokens, signed URLs and injected faults."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import lz4.frame
import pytest
import requests
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.utils import disable_progress_bars

from tests.hub_emulator import HubEmulator
from tests.hub_emulator.xet import fail_shard_uploads, fail_xorb_uploads
from tests.hub_emulator.xet_format import (
    BOOKEND,
    SHARD_TAG,
    ChunkHeader,
    hash_hex,
    hash_raw,
    iter_chunks,
    parse_shard,
)
from tests.hub_fixtures import REPO, TOKEN, emulator_fixture  # noqa: F401  (the emulator fixture)

pytestmark = pytest.mark.timeout(180)
disable_progress_bars()  # hf_xet's bars (the environment variable counts only before the import)
MiB = 1 << 20
XET = pytest.mark.parametrize("hub_transport", ["xet"], indirect=True)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# -- formats --------------------------------------------------------------------------------------------------


def _chunk(scheme: int, raw: bytes) -> bytes:
    if scheme == 0:
        body = raw
    else:
        grouped = b"".join(raw[i::4] for i in range(4)) if scheme == 2 else raw
        body = lz4.frame.compress(grouped)
    return bytes([0]) + len(body).to_bytes(3, "little") + bytes([scheme]) + len(raw).to_bytes(3, "little") + body


def test_hashes_print_as_four_little_endian_words():
    raw = bytes(range(32))
    assert hash_hex(raw) == "07060504030201000f0e0d0c0b0a090817161514131211101f1e1d1c1b1a1918"
    assert hash_raw(hash_hex(raw)) == raw


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 4099])
def test_chunks_of_every_scheme_decompress(size: int):
    raw = bytes((i * 7 + i // 5) % 251 for i in range(size))
    serialized = b"".join(_chunk(scheme, raw) for scheme in (0, 1, 2))
    assert list(iter_chunks(serialized)) == [raw, raw, raw]


def test_a_bad_chunk_header_is_refused():
    with pytest.raises(ValueError):
        ChunkHeader.parse(bytes([0, 1, 0, 0, 7, 1, 0, 0]))  # scheme 7
    with pytest.raises(ValueError):
        list(iter_chunks(_chunk(1, b"x" * 100)[:9] + b"\xff" * 20))  # not an LZ4 frame any more


def _record(hash32: bytes, *words: int) -> bytes:
    return hash32 + struct.pack("<IIII", *words)


def test_a_shard_lists_files_with_their_terms_and_sha256():
    xorb, other, file_a, file_b = (bytes([n]) * 32 for n in (1, 2, 3, 4))
    sha = hashlib.sha256(b"content").digest()
    # sha256 as the client writes it: the digest read as hex words, like every hash
    sha_field = hash_raw(sha.hex())
    files = (
        _record(file_a, 1 << 31 | 1 << 30, 2, 0, 0)[:40]
        + struct.pack("<Q", 0)
        + _record(xorb, 0, 1000, 0, 3)
        + _record(other, 0, 500, 5, 6)
        + _record(b"\x09" * 32, 0, 0, 0, 0) * 2  # verification records
        + sha_field
        + bytes(16)
        + _record(file_b, 0, 1, 0, 0)[:40]
        + struct.pack("<Q", 0)
        + _record(xorb, 0, 10, 3, 4)
        + BOOKEND
        + bytes(16)
    )
    xorbs = _record(xorb, 0, 2, 1010, 900) + _record(b"\x05" * 32, 0, 1000, 0, 0) * 2 + BOOKEND + bytes(16)
    shard = SHARD_TAG + struct.pack("<QQ", 2, 200) + files + xorbs + bytes(200)
    parsed = parse_shard(shard)
    first, second = parsed.files
    assert first.file_hash == hash_hex(file_a) and first.sha256 == sha.hex() and first.size == 1500
    assert [(t.xorb, t.start, t.end, t.size) for t in first.terms] == [
        (hash_hex(xorb), 0, 3, 1000),
        (hash_hex(other), 5, 6, 500),
    ]
    assert second.sha256 is None and second.size == 10
    assert [(x.xorb, x.chunks, x.unpacked) for x in parsed.xorbs] == [(hash_hex(xorb), 2, 1010)]
    with pytest.raises(ValueError):
        parse_shard(b"not a shard" * 10)
    with pytest.raises(ValueError):
        parse_shard(shard[:100])


# -- the real client ------------------------------------------------------------------------------------------


def _content() -> bytes:
    """Incompressible, compressible and numeric parts (the client picks a scheme per chunk)."""
    numbers = b"".join(struct.pack("<f", i * 0.25) for i in range(300_000))
    return os.urandom(2 * MiB) + b"hfdav " * 200_000 + numbers + os.urandom(12345)


def _upload(emu: HubEmulator, tmp_path: Path, data: bytes, path: str = "objects/a.bin", repo: str = REPO) -> HfApi:
    api = HfApi(endpoint=emu.url, token=TOKEN)
    api.create_repo(repo, repo_type="dataset", private=True, exist_ok=True)
    src = tmp_path / f"src-{hashlib.sha256(data).hexdigest()[:8]}"
    src.write_bytes(data)
    api.upload_file(path_or_fileobj=str(src), path_in_repo=path, repo_id=repo, repo_type="dataset")
    return api


def _schemes(emu: HubEmulator) -> set[int]:
    cas = emu._ctx.xet
    seen = set()
    for idx in (cas.root / "xorbs").glob("*.idx"):
        index = json.loads(idx.read_text())
        with open(cas.xorb_path(idx.stem), "rb") as fh:
            for offset, _ in index[:-1]:
                fh.seek(offset)
                seen.add(ChunkHeader.parse(fh.read(8)).scheme)
    return seen


@XET
def test_the_client_uploads_through_xet_and_reads_back_through_resolve_and_the_cas(
    emulator: HubEmulator, tmp_path: Path, hub_transport: str
):
    data = _content()
    api = _upload(emulator, tmp_path, data)
    stats = emulator.stats
    assert stats["lfs_batches"] == 0 and stats["lfs_puts"] == 0
    assert stats["xet_tokens"] >= 1 and stats["xet_grant_requests"] >= 1 and stats["xet_grant_puts"] >= 1
    assert stats["xet_xorbs"] >= 1 and stats["xet_shards"] == 1 and stats["xet_files"] == 1
    schemes = _schemes(emulator)
    assert 0 in schemes and schemes & {1, 2}  # stored as is, and compressed
    xet_hash = emulator.xet_files(REPO)["objects/a.bin"]
    assert emulator.read_file(REPO, "objects/a.bin") == data

    url = f"{emulator.url}/datasets/{REPO}/resolve/main/objects/a.bin"
    head = requests.head(url, headers=AUTH, timeout=30)
    assert head.status_code == 302
    assert head.headers["X-Xet-Hash"] == xet_hash and int(head.headers["X-Linked-Size"]) == len(data)
    assert head.headers["X-Linked-Etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert 'rel="xet-auth"' in head.headers["Link"] and "/xet-read-token/" in head.headers["Link"]
    storage = head.headers["Location"]
    part = requests.get(storage, headers={"Range": "bytes=2097000-2200000"}, timeout=30)
    assert part.status_code == 206 and part.content == data[2097000:2200001]
    assert part.headers["Content-Range"] == f"bytes 2097000-2200000/{len(data)}"
    assert requests.get(storage, timeout=30).content == data
    past = requests.get(storage, headers={"Range": f"bytes={len(data)}-"}, timeout=30)
    assert past.status_code == 416 and past.headers["Content-Range"] == f"bytes */{len(data)}"

    files = {f.path: f for f in api.list_repo_tree(REPO, repo_type="dataset", recursive=True)}
    assert files["objects/a.bin"].xet_hash == xet_hash

    local = hf_hub_download(REPO, "objects/a.bin", repo_type="dataset", endpoint=emulator.url, token=TOKEN,
                            cache_dir=tmp_path / "dl")  # fmt: skip
    assert Path(local).read_bytes() == data
    assert emulator.stats["xet_reconstructions"] >= 1 and emulator.stats["xet_xorb_gets"] >= 1

    emulator.stop()  # the CAS survives a restart on the same directory
    with HubEmulator(emulator.data_dir, token=TOKEN) as again:
        assert again.read_file(REPO, "objects/a.bin") == data


def _cas_token(emu: HubEmulator, scope: str = "write", repo: str = REPO) -> dict:
    answer = requests.get(f"{emu.url}/api/datasets/{repo}/xet-{scope}-token/main", headers=AUTH, timeout=30)
    assert answer.status_code == 200
    body = answer.json()
    assert answer.headers["X-Xet-Access-Token"] == body["accessToken"]
    assert int(answer.headers["X-Xet-Token-Expiration"]) == body["exp"]
    return body


@XET
def test_reconstructions_point_at_the_chunks_of_a_range(emulator: HubEmulator, tmp_path: Path, hub_transport: str):
    data = _content()
    _upload(emulator, tmp_path, data)
    xet_hash = emulator.xet_files(REPO)["objects/a.bin"]
    token = _cas_token(emulator, "read")
    cas = {"Authorization": f"Bearer {token['accessToken']}"}
    start, end = 3 * MiB + 17, 3 * MiB + 50_000
    for version in (1, 2):
        url = f"{token['casUrl']}/v{version}/reconstructions/{xet_hash}"
        answer = requests.get(url, headers={**cas, "Range": f"bytes={start}-{end}"}, timeout=30).json()
        out = b""
        for term in answer["terms"]:
            fetches = answer["fetch_info" if version == 1 else "xorbs"][term["hash"]]
            for fetch in fetches:
                if version == 1:
                    chunks, span = fetch["range"], fetch["url_range"]
                else:
                    chunks, span = fetch["ranges"][0]["chunks"], fetch["ranges"][0]["bytes"]
                if chunks == term["range"]:
                    break
            raw = requests.get(fetch["url"], headers={"Range": f"bytes={span['start']}-{span['end']}"}, timeout=30)
            assert raw.status_code == 206
            piece = b"".join(iter_chunks(raw.content))
            assert len(piece) == term["unpacked_length"]
            out += piece
        offset = answer["offset_into_first_range"]
        assert out[offset : offset + end - start + 1] == data[start : end + 1]
    whole = requests.get(f"{token['casUrl']}/v1/reconstructions/{xet_hash}", headers=cas, timeout=30).json()
    assert whole["offset_into_first_range"] == 0
    assert sum(t["unpacked_length"] for t in whole["terms"]) == len(data)
    past = requests.get(url, headers={**cas, "Range": f"bytes={len(data)}-{len(data) + 5}"}, timeout=30)
    assert past.status_code == 416
    assert requests.get(url, timeout=30).status_code == 401  # no CAS token
    assert requests.get(f"{token['casUrl']}/v1/reconstructions/{'0' * 64}", headers=cas, timeout=30).status_code == 404


@XET
def test_tokens_scopes_and_signed_urls_expire(emulator: HubEmulator, tmp_path: Path, hub_transport: str):
    data = os.urandom(MiB)
    _upload(emulator, tmp_path, data)
    read = _cas_token(emulator, "read")
    xorb = "ab" * 32
    upload = requests.post(f"{read['casUrl']}/v1/xorbs/default/{xorb}", data=b"x", timeout=30,
                           headers={"Authorization": f"Bearer {read['accessToken']}"})  # fmt: skip
    assert upload.status_code == 403  # a read token does not write
    forged = read["accessToken"][:-2] + ("00" if not read["accessToken"].endswith("00") else "11")
    assert requests.post(f"{read['casUrl']}/v2/shards", data=b"x", timeout=30,
                         headers={"Authorization": f"Bearer {forged}"}).status_code == 401  # fmt: skip

    url = f"{emulator.url}/datasets/{REPO}/resolve/main/objects/a.bin"
    location = requests.head(url, headers=AUTH, timeout=30).headers["Location"]
    tampered = location.replace("X-Xet-Signature=", "X-Xet-Signature=0")
    assert requests.get(tampered, timeout=30).status_code == 403
    emulator.config.xet_url_ttl = -1
    emulator.config.xet_token_ttl = -1
    expired = requests.head(url, headers=AUTH, timeout=30).headers["Location"]
    answer = requests.get(expired, timeout=30)
    assert answer.status_code == 403 and "expired" in answer.text
    old = _cas_token(emulator, "read")
    dedup = requests.get(f"{old['casUrl']}/v1/chunks/default-merkledb/{xorb}", timeout=30,
                         headers={"Authorization": f"Bearer {old['accessToken']}"})  # fmt: skip
    assert dedup.status_code == 401


def _commit_lfs_file(emu: HubEmulator, repo: str, path: str, sha256: str, size: int) -> requests.Response:
    lines = [
        {"key": "header", "value": {"summary": f"add {path}"}},
        {"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": sha256, "size": size}},
    ]
    body = "".join(json.dumps(line) + "\n" for line in lines)
    return requests.post(f"{emu.url}/api/datasets/{repo}/commit/main", data=body, timeout=30,
                         headers={**AUTH, "Content-Type": "application/x-ndjson"})  # fmt: skip


@XET
def test_a_commit_names_only_files_a_shard_declared_for_this_repo(
    emulator: HubEmulator, tmp_path: Path, hub_transport: str
):
    data = os.urandom(MiB + 3)
    sha = hashlib.sha256(data).hexdigest()
    _upload(emulator, tmp_path, data)
    other = "testuser/other"
    HfApi(endpoint=emulator.url, token=TOKEN).create_repo(other, repo_type="dataset", private=True)
    assert _commit_lfs_file(emulator, other, "copy.bin", sha, len(data)).status_code == 400
    assert _commit_lfs_file(emulator, REPO, "copy.bin", sha, len(data) + 1).status_code == 400  # wrong size
    assert _commit_lfs_file(emulator, REPO, "copy.bin", "0" * 64, 5).status_code == 400  # unknown
    assert _commit_lfs_file(emulator, REPO, "copy.bin", sha, len(data)).status_code == 200
    assert emulator.read_file(REPO, "copy.bin") == data
    assert emulator.xet_files(REPO)["copy.bin"] == emulator.xet_files(REPO)["objects/a.bin"]


@XET
@pytest.mark.parametrize("grants", [True, False], ids=["grants", "direct"])
def test_failed_xorb_and_shard_uploads_are_retried(emulator: HubEmulator, tmp_path: Path, hub_transport: str, grants):
    emulator.config.xet_upload_grants = grants
    fail_xorb_uploads(emulator.faults, times=2, status=503)
    fail_shard_uploads(emulator.faults, times=1, status=500)
    data = os.urandom(3 * MiB)
    _upload(emulator, tmp_path, data)
    assert not emulator.faults.rules, "every fault fired"
    assert emulator.stats["faults_fired"] == 3
    assert (emulator.stats["xet_grant_puts"] > 0) == grants  # the failed PUTs were answered by the faults
    assert emulator.read_file(REPO, "objects/a.bin") == data


@XET
def test_telemetry_stays_off_for_hfdav_clients(emulator: HubEmulator, tmp_path: Path, hub_transport: str):
    """hf_xet reports to ``/v1/telemetry`` unless told not to; the test environment (like the
    gateway) turns it off."""
    _upload(emulator, tmp_path, os.urandom(MiB))
    assert emulator.stats["xet_telemetry"] == 0


@XET
def test_without_redirects_resolve_serves_a_xet_file_itself(emulator: HubEmulator, tmp_path: Path, hub_transport: str):
    data = os.urandom(MiB) + b"z" * MiB
    _upload(emulator, tmp_path, data)
    emulator.config.lfs_redirect = False
    url = f"{emulator.url}/datasets/{REPO}/resolve/main/objects/a.bin"
    whole = requests.get(url, headers=AUTH, timeout=30, allow_redirects=False)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["X-Xet-Hash"] == emulator.xet_files(REPO)["objects/a.bin"]
    part = requests.get(url, headers={**AUTH, "Range": "bytes=-10"}, timeout=30, allow_redirects=False)
    assert part.status_code == 206 and part.content == data[-10:]


def test_each_xet_test_gets_its_own_client_session_and_cache(tmp_path: Path):
    """An emulator of a later test on the same port holds none of an earlier test's xorbs: the same
    bytes uploaded again are sent again (not deduplicated against the earlier upload) and read back."""
    from tests.hub_fixtures import use_hub_transport

    data = os.urandom(2 * MiB)
    port = None
    for run in ("first", "second"):
        with pytest.MonkeyPatch.context() as mp:
            use_hub_transport("xet", mp, tmp_path / run / "xet-cache")
            with HubEmulator(tmp_path / run / "hub", token=TOKEN, storage_port=port or 0) as emu:
                port = int(emu.storage_url.rsplit(":", 1)[1])
                _upload(emu, tmp_path / run, data)
                assert emu.read_file(REPO, "objects/a.bin") == data
                assert emu.stats["xet_xorbs"] >= 1  # sent again: nothing deduplicated against the first run
