"""Signatures and payload forms: expiry, clock skew, payload hashes, aws-chunked bodies;
and what goes through the file service (trash, quota, checksums, modification times)."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
from unittest import mock

import pytest
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.inprocess import served_gateway
from tests.s3.conftest import WRITER, client, gateway_env
from tests.s3.test_basic import error_of


class _FixedPayload(S3SigV4Auth):
    """botocore's signer with a given ``x-amz-content-sha256`` (a STREAMING-… form)."""

    def __init__(self, payload, *args):
        super().__init__(*args)
        self._payload = payload

    def payload(self, request):
        return self._payload or super().payload(request)


def signed_request(method, url, body=b"", headers=None, user=WRITER, when=None, payload=None):
    """A request signed by botocore's own signer (``when``: the signing time; ``payload``: the
    payload hash to sign instead of the body's)."""
    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    auth = _FixedPayload(payload, Credentials(*user), "s3", "us-east-1")
    if when is not None:
        with mock.patch("botocore.auth.get_current_datetime", return_value=when):
            auth.add_auth(req)
    else:
        auth.add_auth(req)
    return req


def send(req: AWSRequest, body=None) -> requests.Response:
    return requests.request(req.method, req.url, data=req.body if body is None else body, headers=dict(req.headers))


def test_expired_presigned_url_is_access_denied(served, s3):
    s3.create_bucket(Bucket="exp")
    s3.put_object(Bucket="exp", Key="k", Body=b"v")
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=2)
    with mock.patch("botocore.auth.get_current_datetime", return_value=past):
        url = s3.generate_presigned_url("get_object", Params={"Bucket": "exp", "Key": "k"}, ExpiresIn=3600)
    r = requests.get(url)
    assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text and "expired" in r.text
    fresh = s3.generate_presigned_url("get_object", Params={"Bucket": "exp", "Key": "k"}, ExpiresIn=3600)
    assert requests.get(fresh).content == b"v"


def test_skewed_clock_is_refused(served, s3):
    base, _ = served
    s3.create_bucket(Bucket="skew")
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    r = send(signed_request("GET", base + "/s3/skew", when=old))
    assert r.status_code == 403 and "<Code>RequestTimeTooSkewed</Code>" in r.text


def test_payload_hash_is_checked_and_nothing_is_written(served, s3):
    base, gw = served
    s3.create_bucket(Bucket="ph")
    req = signed_request("PUT", base + "/s3/ph/k", body=b"the signed body")
    r = send(req, body=b"another body!!!")  # same length, other bytes
    assert r.status_code == 400 and "<Code>XAmzContentSHA256Mismatch</Code>" in r.text
    assert gw.repo.get("/ph/k") is None
    assert send(signed_request("PUT", base + "/s3/ph/k", body=b"the signed body")).status_code == 200
    assert s3.get_object(Bucket="ph", Key="k")["Body"].read() == b"the signed body"


def test_content_md5_mismatch_is_bad_digest(served, s3):
    s3.create_bucket(Bucket="md5")
    import base64

    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="md5", Key="k", Body=b"payload", ContentMD5=wrong)
    assert error_of(e) == ("BadDigest", 400)
    assert served[1].repo.get("/md5/k") is None


def _chunked_signed(body_chunks: list[bytes], seed: str, key: bytes, amz_date: str, scope: str) -> bytes:
    """The aws-chunked encoding of ``body_chunks`` with chunk signatures (AWS's documented
    algorithm, written out independently of the server)."""
    out, prev = [], seed
    empty = hashlib.sha256(b"").hexdigest()
    for chunk in [*body_chunks, b""]:
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, empty, hashlib.sha256(chunk).hexdigest()])
        sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        out.append(f"{len(chunk):x};chunk-signature={sig}\r\n".encode() + chunk + b"\r\n")
        prev = sig
    return b"".join(out)


def _signing_key(secret: str, day: str) -> bytes:
    k = ("AWS4" + secret).encode()
    for part in (day, "us-east-1", "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


@pytest.mark.parametrize("tamper", [False, True])
def test_aws_chunked_signed_payload(served, s3, tamper):
    base, gw = served
    s3.create_bucket(Bucket="chunk")
    pieces = [os.urandom(64 * 1024), os.urandom(64 * 1024), os.urandom(1000)]
    decoded = b"".join(pieces)
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(decoded))}
    req = signed_request("PUT", base + "/s3/chunk/k", headers=headers, payload="STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
    auth = req.headers["Authorization"]
    seed = auth.rsplit("Signature=", 1)[1]
    amz_date = req.headers["X-Amz-Date"]
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    body = _chunked_signed(pieces, seed, _signing_key(WRITER[1], amz_date[:8]), amz_date, scope)
    if tamper:
        at = body.index(b"\r\n") + 10
        body = body[:at] + bytes([body[at] ^ 1]) + body[at + 1 :]
    hdrs = {k: v for k, v in req.headers.items()}
    hdrs["Content-Length"] = str(len(body))
    r = requests.put(req.url, data=body, headers=hdrs)
    if tamper:
        assert r.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in r.text
        assert gw.repo.get("/chunk/k") is None
        return
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == f'"{hashlib.md5(decoded).hexdigest()}"'
    assert s3.get_object(Bucket="chunk", Key="k")["Body"].read() == decoded


def test_streaming_unsigned_payload_with_trailer(served, s3):
    base, _ = served
    s3.create_bucket(Bucket="trail")
    data = os.urandom(200_000)
    import base64
    import zlib  # noqa: E401

    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    body = f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n" + f"x-amz-checksum-crc32:{crc}\r\n\r\n".encode()
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
               "x-amz-trailer": "x-amz-checksum-crc32"}  # fmt: skip
    req = signed_request("PUT", base + "/s3/trail/k", headers=headers, payload="STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    hdrs = dict(req.headers)
    hdrs["Content-Length"] = str(len(body))
    r = requests.put(req.url, data=body, headers=hdrs)
    assert r.status_code == 200, r.text
    assert s3.get_object(Bucket="trail", Key="k")["Body"].read() == data


def test_trailer_checksum_mismatch_is_bad_digest(served, s3):
    base, gw = served
    s3.create_bucket(Bucket="trail2")
    data = os.urandom(70_000)
    import base64
    import zlib

    wrong = base64.b64encode((zlib.crc32(data) ^ 1).to_bytes(4, "big")).decode()
    body = f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n" + f"x-amz-checksum-crc32:{wrong}\r\n\r\n".encode()
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
               "x-amz-trailer": "x-amz-checksum-crc32"}  # fmt: skip
    req = signed_request("PUT", base + "/s3/trail2/k", headers=headers, payload="STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    hdrs = dict(req.headers)
    hdrs["Content-Length"] = str(len(body))
    r = requests.put(req.url, data=body, headers=hdrs)
    assert r.status_code == 400 and "<Code>BadDigest</Code>" in r.text
    assert gw.repo.get("/trail2/k") is None


def test_header_checksums_are_checked(served, s3):
    s3.create_bucket(Bucket="ck")
    for algorithm in ("CRC32", "SHA1", "SHA256"):
        s3.put_object(Bucket="ck", Key=algorithm, Body=b"x" * 100_000, ChecksumAlgorithm=algorithm)
        assert s3.get_object(Bucket="ck", Key=algorithm)["Body"].read() == b"x" * 100_000
    with pytest.raises(ClientError) as e:
        empty_sha256 = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="  # of b"", not of the body
        s3.put_object(Bucket="ck", Key="bad", Body=b"payload", ChecksumSHA256=empty_sha256)
    assert error_of(e) == ("BadDigest", 400)
    assert served[1].repo.get("/ck/bad") is None


def test_delete_goes_to_trash_and_mtime_metadata_roundtrips(served, s3):
    base, gw = served
    s3.create_bucket(Bucket="t")
    s3.put_object(Bucket="t", Key="doc.txt", Body=b"keep me", Metadata={"mtime": "1600000000.123456789"})
    head = s3.head_object(Bucket="t", Key="doc.txt")
    assert head["Metadata"]["mtime"] == "1600000000.123456789"
    assert int(head["LastModified"].timestamp()) == 1600000000
    s3.delete_object(Bucket="t", Key="doc.txt")
    trashed = [n for n in gw.repo.walk("/.hfdav-trash") if n.name == "doc.txt"]
    assert len(trashed) == 1
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["t"]  # the trash is no bucket


def test_quota_applies(tmp_path):
    with served_gateway(gateway_env(tmp_path, HFDAV_QUOTA="2MiB")) as (base, _gw):
        s3 = client(base + "/s3")
        s3.create_bucket(Bucket="q")
        s3.put_object(Bucket="q", Key="a", Body=os.urandom(1 << 20))
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket="q", Key="b", Body=os.urandom(3 << 20))
        assert error_of(e) == ("QuotaExceeded", 403)
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="q")["Contents"]] == ["a"]


def test_checksums_off_still_gives_md5_etags(tmp_path):
    with served_gateway(gateway_env(tmp_path, HFDAV_CHECKSUMS="off")) as (base, _gw):
        s3 = client(base + "/s3")
        s3.create_bucket(Bucket="c")
        put = s3.put_object(Bucket="c", Key="a", Body=b"abc")
        md5 = f'"{hashlib.md5(b"abc").hexdigest()}"'
        assert put["ETag"] == md5
        assert s3.head_object(Bucket="c", Key="a")["ETag"] == md5
        assert s3.list_objects_v2(Bucket="c")["Contents"][0]["ETag"] == md5


def test_s3_can_be_turned_off_and_moved(tmp_path):
    with served_gateway(gateway_env(tmp_path, HFDAV_S3_PREFIX="off")) as (base, _gw):
        r = requests.get(base + "/s3/", auth=WRITER)
        assert r.status_code == 404  # a WebDAV path like any other
    with served_gateway(gateway_env(tmp_path, HFDAV_S3_PREFIX="/objects", HFDAV_PREFIX="/dav")) as (base, _gw):
        s3 = client(base + "/objects")
        s3.create_bucket(Bucket="moved")
        assert requests.request("PROPFIND", base + "/dav/moved", auth=WRITER, headers={"Depth": "0"}).status_code == 207
        r = requests.get(base + "/objects/")  # unsigned: an S3 error, not a WebDAV challenge
        assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text


def test_webdav_folder_named_like_the_prefix_stays_reachable(served):
    base, _ = served
    assert requests.request("MKCOL", base + "/s3", auth=WRITER).status_code == 201
    assert requests.put(base + "/s3/note.txt", data=b"dav file", auth=WRITER).status_code == 201
    assert requests.get(base + "/s3/note.txt", auth=WRITER).content == b"dav file"


def test_configured_keys_act_as_their_user(tmp_path):
    import bcrypt

    users_file = tmp_path / "htpasswd"
    users_file.write_text("hashed:" + bcrypt.hashpw(b"web-password-123", bcrypt.gensalt(4)).decode() + ":ro\n")
    keys = "AKIAHASHED:s3-secret-for-hashed:hashed,AKIAALICE:another-secret:alice"
    env = gateway_env(tmp_path, HFDAV_USERS_FILE=str(users_file), HFDAV_S3_KEYS=keys)
    with served_gateway(env) as (base, _gw):
        alice_key = client(base + "/s3", ("AKIAALICE", "another-secret"))
        alice_key.create_bucket(Bucket="keys")
        alice_key.put_object(Bucket="keys", Key="k", Body=b"by key")
        hashed = client(base + "/s3", ("AKIAHASHED", "s3-secret-for-hashed"))
        assert hashed.get_object(Bucket="keys", Key="k")["Body"].read() == b"by key"
        with pytest.raises(ClientError) as e:  # the user's rights: read-only
            hashed.put_object(Bucket="keys", Key="k2", Body=b"x")
        assert error_of(e) == ("AccessDenied", 403)
        with pytest.raises(ClientError) as e:  # a bcrypt user's own name cannot sign
            client(base + "/s3", ("hashed", "web-password-123")).list_buckets()
        assert error_of(e)[1] == 403


def test_bad_key_settings_are_reported():
    from gateway.config import load_settings
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load_settings({"HFDAV_DATA_DIR": "/tmp/x", "SYS_TOKEN": "admin-password-0123", "HFDAV_S3_PREFIX": "no-slash",
                       "HFDAV_S3_KEYS": "key1:secret:nobody,bad key:s:admin,key3:secret"})  # fmt: skip
    text = str(e.value)
    assert "entry 1: names no configured user" in text and "entry 2" in text and "entry 3" in text
    assert "HFDAV_S3_PREFIX" in text and "secret" not in text.replace("key-id:secret:user", "")


def test_body_cut_short_stores_nothing(served, s3):
    import socket
    from urllib.parse import urlsplit

    base, gw = served
    s3.create_bucket(Bucket="cut")
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "cut", "Key": "k"}, ExpiresIn=300)
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                     "Content-Length: 3000000\r\n\r\n".encode() + b"x" * 100_000)  # fmt: skip
    # the connection closed with the body incomplete: the next request sees no object
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="cut", Key="k")
    assert error_of(e)[1] == 404
    assert gw.repo.get("/cut/k") is None


def test_encrypted_drive_with_part_copies(tmp_path):
    """With client-side encryption: objects, multipart and UploadPartCopy ranges (extents that
    start inside a chunk) read back right, and the stored chunks are not the plain bytes."""
    env = gateway_env(tmp_path, HFDAV_ENCRYPTION_KEY="ab" * 32)
    with served_gateway(env) as (base, gw):
        s3 = client(base + "/s3")
        s3.create_bucket(Bucket="enc")
        data = os.urandom(6 * (1 << 20) + 3)
        s3.put_object(Bucket="enc", Key="src.bin", Body=data)
        uid = s3.create_multipart_upload(Bucket="enc", Key="dst.bin")["UploadId"]
        cut = 5 * (1 << 20) + 12345  # not on a chunk boundary
        src = {"Bucket": "enc", "Key": "src.bin"}
        p1 = s3.upload_part_copy(Bucket="enc", Key="dst.bin", UploadId=uid, PartNumber=1, CopySource=src,
                                 CopySourceRange=f"bytes=0-{cut - 1}")["CopyPartResult"]["ETag"]  # fmt: skip
        p2 = s3.upload_part_copy(Bucket="enc", Key="dst.bin", UploadId=uid, PartNumber=2, CopySource=src,
                                 CopySourceRange=f"bytes={cut}-{len(data) - 1}")["CopyPartResult"]["ETag"]  # fmt: skip
        s3.complete_multipart_upload(Bucket="enc", Key="dst.bin", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": p1}, {"PartNumber": 2, "ETag": p2}]})  # fmt: skip
        assert s3.get_object(Bucket="enc", Key="dst.bin")["Body"].read() == data
        assert s3.get_object(Bucket="enc", Key="dst.bin", Range=f"bytes={cut - 5}-{cut + 5}")["Body"].read() == \
            data[cut - 5 : cut + 6]  # fmt: skip
        data_dir = tmp_path / "data"
        stored = b"".join(p.read_bytes() for p in [*(data_dir / "objects").rglob("*"), *data_dir.glob("small-objects*")]
                          if p.is_file())  # fmt: skip
        assert data[:4096] not in stored


def test_anonymous_read_only_access(tmp_path):
    """HFDAV_ANONYMOUS=ro: unsigned reads are served (the share at /dav, so /s3 is S3's alone),
    unsigned writes are AccessDenied, signed requests keep their user's rights."""
    env = gateway_env(tmp_path, HFDAV_ANONYMOUS="ro", HFDAV_PREFIX="/dav")
    with served_gateway(env) as (base, _gw):
        s3 = client(base + "/s3")
        s3.create_bucket(Bucket="pub")
        s3.put_object(Bucket="pub", Key="readme.txt", Body=b"public")
        assert requests.get(base + "/s3/pub/readme.txt").content == b"public"
        assert "<Key>readme.txt</Key>" in requests.get(base + "/s3/pub?list-type=2").text
        r = requests.put(base + "/s3/pub/new.txt", data=b"x")
        assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text
        assert requests.delete(base + "/s3/pub/readme.txt").status_code == 403
        assert s3.get_object(Bucket="pub", Key="readme.txt")["Body"].read() == b"public"


def test_repeated_bad_signatures_are_throttled(tmp_path):
    with served_gateway(gateway_env(tmp_path, HFDAV_LOGIN_FAILURES="4")) as (base, _gw):
        bad = client(base + "/s3", (WRITER[0], "wrong-secret-0000"))
        codes = []
        for _ in range(6):
            with pytest.raises(ClientError) as e:
                bad.list_buckets()
            codes.append(error_of(e))
        assert codes[0] == ("SignatureDoesNotMatch", 403)
        assert codes[-1] == ("SlowDown", 503), codes


def test_openlist_style_flow(served, s3):
    """What OpenList's S3 storage does: a folder made with a placeholder object, v1 listings
    with a delimiter, a rename as CopyObject (its source path-escaped, ``/`` as %2F) plus
    DeleteObject, and a presigned download."""
    base, _gw = served
    s3.create_bucket(Bucket="ol")
    s3.put_object(Bucket="ol", Key="movies/.openlist", Body=b"")
    s3.put_object(Bucket="ol", Key="movies/a film+1.mkv", Body=b"frames")
    r = s3.list_objects(Bucket="ol", Prefix="movies/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["movies/.openlist", "movies/a film+1.mkv"]
    source = "ol%2Fmovies%2Fa%20film%2B1.mkv"  # Go's url.PathEscape, then + as %2B
    req = signed_request("PUT", base + "/s3/ol/movies/renamed.mkv", headers={"x-amz-copy-source": source})
    r = send(req)
    assert r.status_code == 200 and "<CopyObjectResult " in r.text, r.text
    s3.delete_object(Bucket="ol", Key="movies/a film+1.mkv")
    r = s3.list_objects(Bucket="ol", Prefix="movies/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["movies/.openlist", "movies/renamed.mkv"]
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "ol", "Key": "movies/renamed.mkv"})
    assert requests.get(url, headers={"Range": "bytes=1-3"}).content == b"ram"
