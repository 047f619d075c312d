"""Multipart uploads with boto3 and as Cloudreve's browser uploads do (presigned parts, CORS)."""

from __future__ import annotations

import hashlib
import os
from urllib.parse import quote

import pytest
import requests
from botocore.exceptions import ClientError

from tests.s3.conftest import WRITER
from tests.s3.test_basic import error_of

MiB = 1 << 20
ORIGIN = "https://cloudreve.example"


def presign_with_length(url: str, length: int) -> str:
    """A presigned PUT URL whose signature covers the Content-Length (botocore's query signer
    with the header set, as aws-sdk-go v1 presigns an UploadPart that names its length)."""
    from botocore.auth import S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method="PUT", url=url, headers={"Content-Length": str(length)})
    S3SigV4QueryAuth(Credentials(*WRITER), "s3", "us-east-1", expires=3600).add_auth(req)
    return req.url


def md5s_etag(parts: list[bytes]) -> str:
    return hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}"


def test_multipart_parts_become_extents_and_nothing_shows_before_complete(served, s3):
    base, gw = served
    s3.create_bucket(Bucket="mp")
    up = s3.create_multipart_upload(Bucket="mp", Key="big/file.bin", ContentType="video/mp4")
    uid = up["UploadId"]
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB + 17), os.urandom(MiB // 2)]
    etags = []
    for i, data in enumerate(parts, 1):
        r = s3.upload_part(Bucket="mp", Key="big/file.bin", UploadId=uid, PartNumber=i, Body=data)
        assert r["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
        etags.append(r["ETag"])
    listed = s3.list_parts(Bucket="mp", Key="big/file.bin", UploadId=uid)
    assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [(1, 5 * MiB), (2, 5 * MiB + 17), (3, MiB // 2)]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="mp")["Uploads"]] == [uid]
    # nothing visible yet: not over S3, not over WebDAV, and the staging folder is not listed
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="mp", Key="big/file.bin")
    assert error_of(e)[1] == 404
    assert "Contents" not in s3.list_objects_v2(Bucket="mp", Prefix="big/")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["mp"]
    r = requests.request("PROPFIND", base + "/", auth=WRITER, headers={"Depth": "1"})
    assert r.status_code == 207 and ".hfdav-s3-uploads" not in r.text and "/mp/" in r.text
    part_objects = set()
    for i in range(1, 4):
        node = gw.repo.get(f"/.hfdav-s3-uploads/{uid}/{i:05d}")
        part_objects |= {e.object_id for e in gw.repo.extents(node.version_id, physical=False)}
    done = s3.complete_multipart_upload(Bucket="mp", Key="big/file.bin", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": i, "ETag": t} for i, t in enumerate(etags, 1)]})  # fmt: skip
    assert done["ETag"] == f'"{md5s_etag(parts)}"'
    head = s3.head_object(Bucket="mp", Key="big/file.bin")
    assert head["ContentLength"] == sum(map(len, parts)) and head["ETag"] == done["ETag"]
    assert head["ContentType"] == "video/mp4"
    assert s3.get_object(Bucket="mp", Key="big/file.bin")["Body"].read() == b"".join(parts)
    # the file's extents are the parts' chunks: nothing was copied
    node = gw.repo.get("/mp/big/file.bin")
    assert {e.object_id for e in gw.repo.extents(node.version_id, physical=False)} == part_objects
    assert gw.repo.get(f"/.hfdav-s3-uploads/{uid}") is None
    assert s3.list_multipart_uploads(Bucket="mp").get("Uploads", []) == []
    r = requests.get(base + "/mp/big/file.bin", auth=WRITER, headers={"Range": "bytes=5242870-5242889"})
    assert r.status_code == 206 and r.content == b"".join(parts)[5242870:5242890]
    from gateway.fsck import Fsck

    report = Fsck(gw.repo, gw.store, object_hasher=gw.files.object_hasher).run(verify=1.0)
    assert report.clean, report.findings


def test_complete_refuses_bad_parts_and_abort_discards(served, s3):
    _base, gw = served
    s3.create_bucket(Bucket="mp2")
    uid = s3.create_multipart_upload(Bucket="mp2", Key="k")["UploadId"]
    small = s3.upload_part(Bucket="mp2", Key="k", UploadId=uid, PartNumber=1, Body=b"tiny")["ETag"]
    last = s3.upload_part(Bucket="mp2", Key="k", UploadId=uid, PartNumber=2, Body=b"end")["ETag"]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket="mp2", Key="k", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": small}, {"PartNumber": 2, "ETag": last}]})  # fmt: skip
    assert error_of(e) == ("EntityTooSmall", 400)
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket="mp2", Key="k", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 2, "ETag": '"00000000000000000000000000000000"'}]})  # fmt: skip
    assert error_of(e) == ("InvalidPart", 400)
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket="mp2", Key="k", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 2, "ETag": last}, {"PartNumber": 1, "ETag": small}]})  # fmt: skip
    assert error_of(e) == ("InvalidPartOrder", 400)
    s3.abort_multipart_upload(Bucket="mp2", Key="k", UploadId=uid)
    assert gw.repo.get(f"/.hfdav-s3-uploads/{uid}") is None
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket="mp2", Key="k", UploadId=uid, PartNumber=3, Body=b"x")
    assert error_of(e) == ("NoSuchUpload", 404)
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="mp2", Key="k")
    assert error_of(e)[1] == 404


def test_single_part_completion_of_one_small_part(s3):
    s3.create_bucket(Bucket="one")
    uid = s3.create_multipart_upload(Bucket="one", Key="k")["UploadId"]
    etag = s3.upload_part(Bucket="one", Key="k", UploadId=uid, PartNumber=1, Body=b"only part")["ETag"]
    s3.complete_multipart_upload(Bucket="one", Key="k", UploadId=uid,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})  # fmt: skip
    assert s3.get_object(Bucket="one", Key="k")["Body"].read() == b"only part"


def test_boto3_transfer_manager_multipart_roundtrip(s3, tmp_path):
    from boto3.s3.transfer import TransferConfig

    s3.create_bucket(Bucket="tm")
    src = tmp_path / "src.bin"
    data = os.urandom(13 * MiB + 5)
    src.write_bytes(data)
    cfg = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=3)
    s3.upload_file(str(src), "tm", "nested/dir/src.bin", Config=cfg)
    head = s3.head_object(Bucket="tm", Key="nested/dir/src.bin")
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-3"')
    dst = tmp_path / "dst.bin"
    s3.download_file("tm", "nested/dir/src.bin", str(dst), Config=cfg)  # ranged GETs in parallel
    assert dst.read_bytes() == data


def test_cloudreve_browser_upload_flow(served, s3):
    """Cloudreve's S3 policy: the server sets CORS and creates the upload, the browser PUTs the
    parts to presigned URLs (after a preflight) and POSTs the presigned complete; the server
    then checks the object with HeadObject and hands out presigned GETs."""
    base, _gw = served
    s3.create_bucket(Bucket="cloudreve")
    s3.put_bucket_cors(Bucket="cloudreve", CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": ["*"], "AllowedMethods": ["GET", "POST", "PUT", "DELETE", "HEAD"],
        "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 3600}]})  # fmt: skip
    rules = s3.get_bucket_cors(Bucket="cloudreve")["CORSRules"]
    assert rules[0]["AllowedMethods"] == ["GET", "POST", "PUT", "DELETE", "HEAD"]
    key = "uploads/1/user file.mp4"
    uid = s3.create_multipart_upload(Bucket="cloudreve", Key=key)["UploadId"]
    parts = [os.urandom(5 * MiB), os.urandom(2 * MiB + 3)]
    etags = []
    for i, data in enumerate(parts, 1):
        # Cloudreve's Go SDK presigns each part with its Content-Length among the signed headers
        url = presign_with_length(f"{base}/s3/cloudreve/{quote(key)}?partNumber={i}&uploadId={uid}", len(data))
        assert "content-length%3Bhost" in url
        short = requests.put(url, data=data[:-1], headers={"Origin": ORIGIN})  # not the length signed
        assert short.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in short.text
        assert short.headers["Access-Control-Allow-Origin"] == "*"  # a browser can read the error
        pre = requests.options(url, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "PUT",
                                             "Access-Control-Request-Headers": "content-type"})  # fmt: skip
        assert pre.status_code == 200, pre.text
        assert pre.headers["Access-Control-Allow-Origin"] == "*"
        assert "PUT" in pre.headers["Access-Control-Allow-Methods"]
        assert pre.headers["Access-Control-Allow-Headers"] == "content-type"
        r = requests.put(url, data=data, headers={"Origin": ORIGIN, "Content-Type": "application/octet-stream"})
        assert r.status_code == 200, r.text
        assert "ETag" in r.headers["Access-Control-Expose-Headers"]
        etags.append(r.headers["ETag"])
    complete_url = s3.generate_presigned_url("complete_multipart_upload", ExpiresIn=3600, Params={
        "Bucket": "cloudreve", "Key": key, "UploadId": uid})  # fmt: skip
    body = (
        "<CompleteMultipartUpload>"
        + "".join(f"<Part><PartNumber>{i}</PartNumber><ETag>{t}</ETag></Part>" for i, t in enumerate(etags, 1))
        + "</CompleteMultipartUpload>"
    )
    r = requests.post(complete_url, data=body.encode(), headers={"Origin": ORIGIN, "Content-Type": "application/xml"})
    assert r.status_code == 200, r.text
    assert f"&quot;{md5s_etag(parts)}&quot;" in r.text or f'"{md5s_etag(parts)}"' in r.text
    head = s3.head_object(Bucket="cloudreve", Key=key)
    assert head["ContentLength"] == sum(map(len, parts))
    week = 7 * 24 * 3600
    get_url = s3.generate_presigned_url("get_object", ExpiresIn=week, Params={"Bucket": "cloudreve", "Key": key})
    r = requests.get(get_url, headers={"Origin": ORIGIN, "Range": "bytes=0-"})
    assert r.status_code == 206 and r.content == b"".join(parts)
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    # over WebDAV too
    r = requests.get(base + "/cloudreve/uploads/1/user%20file.mp4", auth=WRITER)
    assert r.content == b"".join(parts)


def test_preflight_refused_without_matching_rule(served, s3):
    base, _gw = served
    s3.create_bucket(Bucket="nocors")
    r = requests.options(base + "/s3/nocors/k", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "PUT"})
    assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text
    s3.put_bucket_cors(Bucket="nocors", CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": ["https://other.example"], "AllowedMethods": ["GET"]}]})  # fmt: skip
    r = requests.options(base + "/s3/nocors/k", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
    assert r.status_code == 403
    r = requests.options(base + "/s3/nocors/k", headers={"Origin": "https://other.example",
                                                          "Access-Control-Request-Method": "GET"})  # fmt: skip
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "https://other.example"


def test_stale_uploads_expire(served, s3):
    _base, gw = served
    from gateway.s3.multipart import EXPIRE_S, Uploads

    s3.create_bucket(Bucket="old")
    uid = s3.create_multipart_upload(Bucket="old", Key="k")["UploadId"]
    s3.upload_part(Bucket="old", Key="k", UploadId=uid, PartNumber=1, Body=b"abandoned")
    fresh = s3.create_multipart_upload(Bucket="old", Key="k2")["UploadId"]
    uploads = Uploads(gw.files)
    assert uploads.expire(gw.repo.get(f"/.hfdav-s3-uploads/{uid}").created_at - 1) == 0
    later = Uploads(gw.files, clock=lambda: gw.repo.get(f"/.hfdav-s3-uploads/{fresh}").created_at + EXPIRE_S + 1)
    later.expire_now_and_then()
    assert s3.list_multipart_uploads(Bucket="old").get("Uploads", []) == []
    assert gw.repo.get(f"/.hfdav-s3-uploads/{uid}") is None
