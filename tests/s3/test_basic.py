"""boto3 against the S3 API: buckets, objects, listings, ranges, errors."""

from __future__ import annotations

import hashlib
import os

import pytest
import requests
from botocore.exceptions import ClientError

from tests.s3.conftest import WRITER


def error_of(excinfo) -> tuple[str, int]:
    err = excinfo.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def test_bucket_object_roundtrip_visible_over_webdav(served, s3):
    base, _gw = served
    s3.create_bucket(Bucket="photos")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["photos"]
    data = os.urandom(3 * (1 << 20) + 123)  # several chunks
    put = s3.put_object(Bucket="photos", Key="2024/trip/a b+c.bin", Body=data, ContentType="image/x-test")
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket="photos", Key="2024/trip/a b+c.bin")
    assert got["Body"].read() == data
    assert got["ContentType"] == "image/x-test"
    assert got["ETag"] == put["ETag"]
    # the same file over WebDAV, and a WebDAV file over S3
    r = requests.get(f"{base}/photos/2024/trip/a%20b+c.bin", auth=WRITER)
    assert r.status_code == 200 and r.content == data
    r = requests.put(f"{base}/photos/from-dav.txt", data=b"hello dav", auth=WRITER)
    assert r.status_code in (201, 204)
    head = s3.head_object(Bucket="photos", Key="from-dav.txt")
    assert head["ContentLength"] == 9
    assert head["ETag"] == f'"{hashlib.md5(b"hello dav").hexdigest()}"'


def test_range_reads(s3):
    s3.create_bucket(Bucket="b")
    data = bytes(range(256)) * 8192  # 2 MiB
    s3.put_object(Bucket="b", Key="k", Body=data)
    r = s3.get_object(Bucket="b", Key="k", Range="bytes=1000-1048575")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert r["ContentRange"] == f"bytes 1000-1048575/{len(data)}"
    assert r["Body"].read() == data[1000:1048576]
    assert s3.get_object(Bucket="b", Key="k", Range="bytes=-10")["Body"].read() == data[-10:]
    assert s3.get_object(Bucket="b", Key="k", Range="bytes=2097000-")["Body"].read() == data[2097000:]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="b", Key="k", Range=f"bytes={len(data)}-")
    assert error_of(e) == ("InvalidRange", 416)


def test_listing_v2_prefix_delimiter_pagination(s3):
    s3.create_bucket(Bucket="lst")
    keys = [f"dir/{i:03d}.txt" for i in range(25)] + ["dir/sub/x.txt", "dir/sub/y.txt", "top.txt", "dir2/z"]
    for k in keys:
        s3.put_object(Bucket="lst", Key=k, Body=k.encode())
    r = s3.list_objects_v2(Bucket="lst", Delimiter="/")
    assert [c["Prefix"] for c in r["CommonPrefixes"]] == ["dir/", "dir2/"]
    assert [o["Key"] for o in r["Contents"]] == ["top.txt"]
    r = s3.list_objects_v2(Bucket="lst", Prefix="dir/", Delimiter="/")
    assert [c["Prefix"] for c in r["CommonPrefixes"]] == ["dir/sub/"]
    assert len(r["Contents"]) == 25
    # pagination without a delimiter: every key once, in order
    seen, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket="lst", MaxKeys=7, **kw)
        seen += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == sorted(keys)
    r = s3.list_objects_v2(Bucket="lst", Prefix="dir/0", StartAfter="dir/010.txt")
    assert [o["Key"] for o in r["Contents"]][0] == "dir/011.txt"
    assert r["Contents"][0]["ETag"] == f'"{hashlib.md5(b"dir/011.txt").hexdigest()}"'


def test_listing_v1_with_markers(s3):
    s3.create_bucket(Bucket="v1")
    for k in ["a", "b/1", "b/2", "c", "d e"]:
        s3.put_object(Bucket="v1", Key=k, Body=b"x")
    r = s3.list_objects(Bucket="v1", MaxKeys=2, Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["a"] and [p["Prefix"] for p in r["CommonPrefixes"]] == ["b/"]
    assert r["IsTruncated"] and r["NextMarker"] == "b/"
    r = s3.list_objects(Bucket="v1", Marker="b/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["c", "d e"] and not r["IsTruncated"]
    paginator = s3.get_paginator("list_objects")
    keys = [o["Key"] for page in paginator.paginate(Bucket="v1", PaginationConfig={"PageSize": 2})
            for o in page.get("Contents", [])]  # fmt: skip
    assert keys == ["a", "b/1", "b/2", "c", "d e"]


def test_folder_markers_and_delete(s3):
    s3.create_bucket(Bucket="f")
    s3.put_object(Bucket="f", Key="empty/", Body=b"")
    r = s3.list_objects_v2(Bucket="f")
    assert [o["Key"] for o in r["Contents"]] == ["empty/"]
    assert s3.head_object(Bucket="f", Key="empty/")["ContentLength"] == 0
    # listed as a prefix of its parent; its own listing is empty (OpenList's v1 listing would
    # show a key equal to the prefix as a member)
    r = s3.list_objects(Bucket="f", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["empty/"] and "Contents" not in r
    assert "Contents" not in s3.list_objects(Bucket="f", Prefix="empty/", Delimiter="/")
    s3.put_object(Bucket="f", Key="x/y.txt", Body=b"1")
    s3.delete_object(Bucket="f", Key="x/y.txt")
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="f", Key="x/y.txt")
    assert error_of(e)[1] == 404
    # the prefix went with its last key; the empty folder made as a marker stays
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="f")["Contents"]] == ["empty/"]
    s3.put_object(Bucket="f", Key="x/deep/er/z.txt", Body=b"1")
    s3.put_object(Bucket="f", Key="x/keep.txt", Body=b"2")
    s3.delete_object(Bucket="f", Key="x/deep/er/z.txt")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="f", Prefix="x/")["Contents"]] == ["x/keep.txt"]
    s3.delete_object(Bucket="f", Key="x/keep.txt")
    s3.delete_object(Bucket="f", Key="empty/")
    assert "Contents" not in s3.list_objects_v2(Bucket="f")
    s3.head_bucket(Bucket="f")
    s3.delete_object(Bucket="f", Key="never-there")  # S3: no error
    for k in ("d/1", "d/2", "d/3"):
        s3.put_object(Bucket="f", Key=k, Body=b"z")
    out = s3.delete_objects(Bucket="f", Delete={"Objects": [{"Key": "d/1"}, {"Key": "d/2"}, {"Key": "nope"}]})
    assert sorted(d["Key"] for d in out["Deleted"]) == ["d/1", "d/2", "nope"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="f", Prefix="d/")["Contents"]] == ["d/3"]


def test_bucket_lifecycle_and_errors(s3):
    s3.create_bucket(Bucket="tmpb")
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket="tmpb")
    assert error_of(e) == ("BucketAlreadyOwnedByYou", 409)
    s3.put_object(Bucket="tmpb", Key="k", Body=b"1")
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket="tmpb")
    assert error_of(e) == ("BucketNotEmpty", 409)
    s3.delete_object(Bucket="tmpb", Key="k")
    s3.delete_bucket(Bucket="tmpb")
    with pytest.raises(ClientError) as e:
        s3.list_objects_v2(Bucket="tmpb")
    assert error_of(e) == ("NoSuchBucket", 404)
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="nobucket", Key="k", Body=b"1")
    assert error_of(e) == ("NoSuchBucket", 404)
    s3.create_bucket(Bucket="b2")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="b2", Key="missing")
    assert error_of(e) == ("NoSuchKey", 404)


def test_wrong_secret_is_signature_mismatch(served):
    from tests.s3.conftest import client

    bad = client(served[0] + "/s3", (WRITER[0], "not-the-password"))
    with pytest.raises(ClientError) as e:
        bad.list_buckets()
    assert error_of(e) == ("SignatureDoesNotMatch", 403)
    unknown = client(served[0] + "/s3", ("mallory", "whatever-secret"))
    with pytest.raises(ClientError) as e:
        unknown.list_buckets()
    assert error_of(e) == ("InvalidAccessKeyId", 403)


def test_read_only_user_cannot_write(s3, s3_ro):
    s3.create_bucket(Bucket="ro")
    s3.put_object(Bucket="ro", Key="k", Body=b"data")
    assert s3_ro.get_object(Bucket="ro", Key="k")["Body"].read() == b"data"
    for call in (lambda: s3_ro.put_object(Bucket="ro", Key="k2", Body=b"x"),
                 lambda: s3_ro.delete_object(Bucket="ro", Key="k"),
                 lambda: s3_ro.create_bucket(Bucket="other")):  # fmt: skip
        with pytest.raises(ClientError) as e:
            call()
        assert error_of(e) == ("AccessDenied", 403)
    assert s3.get_object(Bucket="ro", Key="k")["Body"].read() == b"data"


def test_presigned_get_and_put_with_plain_http(s3):
    s3.create_bucket(Bucket="pre")
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "pre", "Key": "up.bin"}, ExpiresIn=300)
    body = os.urandom(100_000)
    r = requests.put(url, data=body)
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    url = s3.generate_presigned_url(
        "get_object",
        Params={"Bucket": "pre", "Key": "up.bin", "ResponseContentDisposition": 'attachment; filename="x.bin"'},
        ExpiresIn=300,
    )
    r = requests.get(url)
    assert r.status_code == 200 and r.content == body
    assert r.headers["Content-Disposition"] == 'attachment; filename="x.bin"'
    # a tampered URL is refused
    r = requests.get(url.replace("up.bin", "up2.bin"))
    assert r.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in r.text


def test_copy_object_is_metadata_only_and_upload_part_copy(served, s3):
    _base, gw = served
    s3.create_bucket(Bucket="src")
    s3.create_bucket(Bucket="dst")
    data = os.urandom(6 * (1 << 20) + 99)
    s3.put_object(Bucket="src", Key="orig.bin", Body=data, Metadata={"color": "blue"})
    out = s3.copy_object(Bucket="dst", Key="copies/c.bin", CopySource={"Bucket": "src", "Key": "orig.bin"})
    assert out["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    head = s3.head_object(Bucket="dst", Key="copies/c.bin")
    assert head["Metadata"]["color"] == "blue" and head["ContentLength"] == len(data)
    src_node, dst_node = gw.repo.get("/src/orig.bin"), gw.repo.get("/dst/copies/c.bin")
    ext = [(e.object_id, e.length) for e in gw.repo.extents(src_node.version_id, physical=False)]
    assert ext == [(e.object_id, e.length) for e in gw.repo.extents(dst_node.version_id, physical=False)]
    # metadata replaced in place (what rclone does to set a modification time)
    s3.copy_object(Bucket="dst", Key="copies/c.bin", CopySource={"Bucket": "dst", "Key": "copies/c.bin"},
                   MetadataDirective="REPLACE", Metadata={"mtime": "1500000000"})  # fmt: skip
    head = s3.head_object(Bucket="dst", Key="copies/c.bin")
    assert head["Metadata"] == {"mtime": "1500000000"} and int(head["LastModified"].timestamp()) == 1500000000
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket="dst", Key="x", CopySource={"Bucket": "src", "Key": "missing"})
    assert error_of(e) == ("NoSuchKey", 404)
    # UploadPartCopy: two ranges of the source, no bytes copied
    uid = s3.create_multipart_upload(Bucket="dst", Key="joined.bin")["UploadId"]
    cut = 5 * (1 << 20) + 1
    source = {"Bucket": "src", "Key": "orig.bin"}
    p1 = s3.upload_part_copy(Bucket="dst", Key="joined.bin", UploadId=uid, PartNumber=1, CopySource=source,
                             CopySourceRange=f"bytes=0-{cut - 1}")  # fmt: skip
    p2 = s3.upload_part_copy(Bucket="dst", Key="joined.bin", UploadId=uid, PartNumber=2, CopySource=source,
                             CopySourceRange=f"bytes={cut}-{len(data) - 1}")  # fmt: skip
    assert p1["CopyPartResult"]["ETag"] == f'"{hashlib.md5(data[:cut]).hexdigest()}"'
    parts = [{"PartNumber": n, "ETag": p["CopyPartResult"]["ETag"]} for n, p in ((1, p1), (2, p2))]
    s3.complete_multipart_upload(Bucket="dst", Key="joined.bin", UploadId=uid, MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket="dst", Key="joined.bin")["Body"].read() == data
    joined = gw.repo.get("/dst/joined.bin")
    assert {e.object_id for e in gw.repo.extents(joined.version_id, physical=False)} <= {oid for oid, _ in ext}
    # shared and partial extents keep the metadata consistent: refcounts, coverage, bytes
    from gateway.fsck import Fsck

    report = Fsck(gw.repo, gw.store, object_hasher=gw.files.object_hasher).run(verify=1.0)
    assert report.clean, report.findings


def test_conditional_get(s3):
    s3.create_bucket(Bucket="cond")
    etag = s3.put_object(Bucket="cond", Key="k", Body=b"v1")["ETag"]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="cond", Key="k", IfNoneMatch=etag)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="cond", Key="k", IfMatch='"0123"')
    assert error_of(e) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket="cond", Key="k", IfMatch=etag)["Body"].read() == b"v1"
