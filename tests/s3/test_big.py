"""1 GiB through S3 on a real ``hfdav serve`` (cheroot and gunicorn): a multipart upload with
boto3's transfer manager and a single streamed PUT, both read back byte-identical (parallel
ranged GETs, then one GET), with the server's peak RSS under 200 MB."""

from __future__ import annotations

import pytest

from tests.container.support import PeakRss, descendants, make_random_file, sha256_file
from tests.e2e.support import BOTH_KINDS, ServerFactory
from tests.s3.conftest import client

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MiB = 1 << 20
GiB = 1 << 30
RSS_LIMIT_KIB = 200 * 1000


@BOTH_KINDS
def test_one_gib_multipart_and_single_put_bounded_memory(kind, tmp_path):
    from boto3.s3.transfer import TransferConfig

    factory = ServerFactory(tmp_path / "servers")
    try:
        server = factory.start(kind, chunk_size="16MiB")
        s3 = client(f"http://{server.host}:{server.port}/s3", (server.user, server.password))
        s3.create_bucket(Bucket="big")
        source = tmp_path / "big.bin"
        digest = make_random_file(source, GiB)
        pids = {"gateway": lambda: [server.proc.pid, *descendants(server.proc.pid)]}
        multipart = TransferConfig(multipart_threshold=64 * MiB, multipart_chunksize=64 * MiB, max_concurrency=4)
        with PeakRss(pids) as up:
            s3.upload_file(str(source), "big", "multi.bin", Config=multipart)
        head = s3.head_object(Bucket="big", Key="multi.bin")
        assert head["ContentLength"] == GiB and head["ETag"].endswith('-16"')
        back = tmp_path / "back.bin"
        with PeakRss(pids) as down:
            s3.download_file("big", "multi.bin", str(back), Config=multipart)
        assert sha256_file(back) == digest, "the multipart object came back different"
        back.unlink()
        digest = make_random_file(source, GiB, seed=2)  # other chunks: nothing dedups
        single = TransferConfig(multipart_threshold=2 * GiB)
        with PeakRss(pids) as single_up:
            s3.upload_file(str(source), "big", "single.bin", Config=single)
        with PeakRss(pids) as single_down:
            s3.download_file("big", "single.bin", str(back), Config=single)
        assert sha256_file(back) == digest, "the single-PUT object came back different"
        peaks = {
            n: p.peaks["gateway"]
            for n, p in (("multipart up", up), ("ranged down", down), ("single up", single_up), ("down", single_down))
        }
        print(f"{kind}: server peak RSS (KiB): {peaks}")
        assert max(peaks.values()) < RSS_LIMIT_KIB, peaks
    finally:
        problems = factory.close()
    assert not problems, problems
