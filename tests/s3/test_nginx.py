"""The S3 API through the bundled nginx (boot.py on this machine: nginx in front of gunicorn):
signed requests keep their signature through the proxy, bodies stream, CORS preflights pass."""

from __future__ import annotations

import hashlib
import os

import pytest
import requests

from tests.container.support import start_boot
from tests.e2e.support import require_tool
from tests.s3.conftest import client

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MiB = 1 << 20


def test_s3_through_nginx(tmp_path):
    require_tool("nginx")
    booted = start_boot(tmp_path, env={"HFDAV_USERS": "carol:carol-secret-0123:rw", "HFDAV_CHUNK_SIZE": "1MiB"})
    try:
        s3 = client(booted.base + "/s3", ("carol", "carol-secret-0123"))
        s3.create_bucket(Bucket="viaproxy")
        data = os.urandom(3 * MiB + 1)
        put = s3.put_object(Bucket="viaproxy", Key="dir/a file.bin", Body=data)
        assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
        from boto3.s3.transfer import TransferConfig

        src = tmp_path / "big.bin"
        src.write_bytes(os.urandom(11 * MiB))
        s3.upload_file(str(src), "viaproxy", "big.bin",
                       Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))  # fmt: skip
        assert s3.head_object(Bucket="viaproxy", Key="big.bin")["ETag"].endswith('-3"')
        s3.put_bucket_cors(
            Bucket="viaproxy",
            CORSConfiguration={
                "CORSRules": [
                    {
                        "AllowedOrigins": ["https://app.example"],
                        "AllowedMethods": ["GET", "PUT"],
                        "AllowedHeaders": ["*"],
                    }
                ]
            },
        )
        url = s3.generate_presigned_url("get_object", Params={"Bucket": "viaproxy", "Key": "dir/a file.bin"})
        pre = requests.options(url, headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
                               timeout=30)  # fmt: skip
        assert pre.status_code == 200 and pre.headers["Access-Control-Allow-Origin"] == "https://app.example"
        r = requests.get(url, headers={"Origin": "https://app.example"}, timeout=60)
        assert r.status_code == 200 and r.content == data
        assert s3.get_object(Bucket="viaproxy", Key="big.bin")["Body"].read() == src.read_bytes()
        # the same file over the WebDAV share at /dav
        r = requests.get(booted.base + "/dav/viaproxy/dir/a%20file.bin", auth=booted.auth, timeout=60)
        assert r.content == data
    finally:
        assert booted.shutdown() == 0, booted.log_text()[-3000:]
