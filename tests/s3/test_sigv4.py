"""The signature checks against the worked examples of AWS's Signature Version 4 documentation
for S3 (header-signed GET with a Range, presigned GET), and the aws-chunked decoder."""

from __future__ import annotations

import io

import pytest

from gateway.s3 import sigv4
from gateway.s3.xml import S3Error

KEY, SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
WHEN = 1369353600.0  # 2013-05-24T00:00:00Z
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def lookup(key):
    return SECRET if key == KEY else None


def header_example(signature: str) -> dict:
    return {
        "REQUEST_METHOD": "GET",
        "REQUEST_URI": "/test.txt",
        "PATH_INFO": "/test.txt",
        "QUERY_STRING": "",
        "HTTP_HOST": "examplebucket.s3.amazonaws.com",
        "HTTP_RANGE": "bytes=0-9",
        "HTTP_X_AMZ_CONTENT_SHA256": EMPTY,
        "HTTP_X_AMZ_DATE": "20130524T000000Z",
        "HTTP_AUTHORIZATION": f"AWS4-HMAC-SHA256 Credential={KEY}/20130524/us-east-1/s3/aws4_request,"
        f"SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature={signature}",
    }


def test_documented_header_example():
    sig = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    signed = sigv4.verify(header_example(sig), lookup, now=WHEN + 60)
    assert signed.access_key == KEY and signed.payload == EMPTY
    with pytest.raises(S3Error) as e:
        sigv4.verify(header_example(sig[:-1] + "0"), lookup, now=WHEN + 60)
    assert e.value.code == "SignatureDoesNotMatch"
    with pytest.raises(S3Error) as e:
        sigv4.verify(header_example(sig), lookup, now=WHEN + 3600)
    assert e.value.code == "RequestTimeTooSkewed"


def presigned_example(expires: str = "86400") -> dict:
    query = (f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={KEY}%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
             f"&X-Amz-Date=20130524T000000Z&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host"
             "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")  # fmt: skip
    return {"REQUEST_METHOD": "GET", "REQUEST_URI": "/test.txt?" + query, "PATH_INFO": "/test.txt",
            "QUERY_STRING": query, "HTTP_HOST": "examplebucket.s3.amazonaws.com"}  # fmt: skip


def test_documented_presigned_example():
    signed = sigv4.verify(presigned_example(), lookup, now=WHEN + 3600)
    assert signed.presigned and signed.payload == sigv4.UNSIGNED
    with pytest.raises(S3Error) as e:
        sigv4.verify(presigned_example(), lookup, now=WHEN + 86401)
    assert (e.value.code, e.value.message) == ("AccessDenied", "Request has expired")
    with pytest.raises(S3Error) as e:  # the expiry is signed: changing it breaks the signature
        sigv4.verify(presigned_example("86500"), lookup, now=WHEN + 3600)
    assert e.value.code == "SignatureDoesNotMatch"
    with pytest.raises(S3Error) as e:
        sigv4.verify(presigned_example("700000"), lookup, now=WHEN + 3600)
    assert e.value.code == "AuthorizationQueryParametersError"


def test_presign_helper_round_trips():
    url = sigv4.presign_url("http://h:1/s3/b/a%20b.txt?partNumber=2&uploadId=abc", KEY, SECRET, method="PUT", now=WHEN)
    path, query = url.split("://", 1)[1].split("/", 1)[1].split("?", 1)
    environ = {"REQUEST_METHOD": "PUT", "REQUEST_URI": "/" + path + "?" + query, "QUERY_STRING": query,
               "PATH_INFO": "/s3/b/a b.txt", "HTTP_HOST": "h:1"}  # fmt: skip
    assert sigv4.verify(environ, lookup, now=WHEN + 10).presigned


def test_unsigned_trailer_decoding_and_framing_errors():
    signed = sigv4.Signed(KEY, sigv4.STREAMING_UNSIGNED_TRAILER)
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:AAAA\r\n\r\n"
    reader = sigv4.AwsChunkedReader(io.BytesIO(body), signed, block=3)  # tiny reads: every boundary
    out = b""
    while piece := reader.read(4):
        out += piece
    assert out == b"hello world" and reader.trailers == {"x-amz-checksum-crc32": "AAAA"}
    for broken in (b"5\r\nhel", b"zz\r\nhello\r\n", b"5\r\nhelloXX0\r\n\r\n"):
        reader = sigv4.AwsChunkedReader(io.BytesIO(broken), signed)
        with pytest.raises(S3Error) as e:
            reader.read()
        assert e.value.code == "IncompleteBody"


def test_path_sent_encoded_otherwise_than_signed():
    """A client that signed AWS's encoding of the path (``~`` and ``(`` as AWS writes them) but
    sent some characters encoded otherwise is still recognised; another path is not."""
    url = sigv4.presign_url("http://h:1/s3/b/a~b%28c%29.txt", KEY, SECRET, now=WHEN)
    query = url.split("?", 1)[1]

    def environ(path):
        return {"REQUEST_METHOD": "GET", "REQUEST_URI": f"{path}?{query}", "QUERY_STRING": query,
                "PATH_INFO": "/s3/b/a~b(c).txt", "HTTP_HOST": "h:1"}  # fmt: skip

    assert sigv4.verify(environ("/s3/b/a~b%28c%29.txt"), lookup, now=WHEN + 1).presigned
    assert sigv4.verify(environ("/s3/b/a%7Eb(c).txt"), lookup, now=WHEN + 1).presigned
    with pytest.raises(S3Error) as e:
        sigv4.verify(environ("/s3/b/other.txt"), lookup, now=WHEN + 1)
    assert e.value.code == "SignatureDoesNotMatch"
