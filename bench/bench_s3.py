"""S3 against WebDAV on the same ``hfdav serve``: PUT and GET of one large file each way.

One server (cheroot, local store, SQLite), user ``admin``; bucket ``bench`` (a folder made over
WebDAV). Each repetition PUTs and GETs the file over WebDAV (Basic auth), over S3 with a
presigned URL (``UNSIGNED-PAYLOAD``: what browsers and SDKs over HTTPS send) and over S3 with a
signed ``x-amz-content-sha256`` (what the SDKs send over plain HTTP; the client hashes the body
before the clock starts), and as a multipart upload (parts of ``--part-mib`` to presigned URLs,
then a signed complete: Cloudreve's flow). Every PUT tags its blocks so no upload dedups against another. The
server's peak RSS is sampled over the S3 transfers. Prints seconds, MiB/s and S3 / WebDAV ratios.

    .venv/bin/python bench/bench_s3.py                 # 1 GiB, 3 repetitions
    .venv/bin/python bench/bench_s3.py --size-gib 0.2 --reps 1
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _util as u  # noqa: E402

from gateway.s3.sigv4 import presign_url, signing_key  # noqa: E402

MB = 1_000_000
BUCKET = "bench"


def _blocks(src: Path, tag: bytes):
    buf = bytearray(u.IO_BLOCK)
    view = memoryview(buf)
    block_no = 0
    with open(src, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                return
            if n >= u.TAG_LEN:
                buf[: u.TAG_LEN] = (tag + b"%012d" % block_no).ljust(u.TAG_LEN, b".")[: u.TAG_LEN]
            yield view[:n]
            block_no += 1


def _send(srv: u.Server, method: str, target: str, headers: dict, src: Path | None, tag: bytes) -> int:
    conn = srv.connect()
    try:
        conn.putrequest(method, target, skip_accept_encoding=True, skip_host="Host" in headers)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        got = 0
        if src is not None:
            for block in _blocks(src, tag):
                conn.sock.sendall(block)
        resp = conn.getresponse()
        if resp.status not in (200, 201, 204):
            raise RuntimeError(f"{method} {target}: {resp.status} {resp.read(2000)!r}")
        buf = bytearray(u.IO_BLOCK)
        while True:
            n = resp.readinto(buf)
            if not n:
                break
            got += n
        return got
    finally:
        conn.close()


def signed_headers(srv: u.Server, method: str, path: str, payload: str, length: int | None, query: str = "") -> dict:
    """SigV4 headers for ``path`` (host, x-amz-date, x-amz-content-sha256 signed); ``query``:
    already in canonical form."""
    import hmac

    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    host = f"{srv.host}:{srv.port}"
    names = "host;x-amz-content-sha256;x-amz-date"
    canonical = "\n".join([method, path, query, f"host:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz_date}\n",
                           names, payload])  # fmt: skip
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    sig = hmac.new(signing_key(u.PASSWORD, amz_date[:8], "us-east-1", "s3"), to_sign.encode(), hashlib.sha256)
    headers = {"Host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload,
               "Authorization": f"AWS4-HMAC-SHA256 Credential={u.USER}/{scope}, SignedHeaders={names}, "
                                f"Signature={sig.hexdigest()}"}  # fmt: skip
    if length is not None:
        headers["Content-Length"] = str(length)
    return headers


def _blocks_range(src: Path, tag: bytes, start: int, length: int):
    """The tagged blocks of ``src`` from ``start`` (a multiple of the block size)."""
    for i, block in enumerate(_blocks(src, tag)):
        at = i * u.IO_BLOCK
        if at + len(block) <= start:
            continue
        if at >= start + length:
            return
        yield block


def multipart_put(srv: u.Server, base: str, name: str, src: Path, tag: bytes, part_size: int) -> None:
    """CreateMultipartUpload (signed), the parts PUT to presigned URLs (as a browser does), then
    CompleteMultipartUpload (signed)."""
    import re

    size = src.stat().st_size
    path = f"/s3/{BUCKET}/{name}"
    conn = srv.connect()
    conn.request("POST", path + "?uploads", headers=signed_headers(srv, "POST", path, EMPTY_SHA, 0, "uploads="))
    resp = conn.getresponse()
    text = resp.read().decode()
    conn.close()
    upload_id = re.search(r"<UploadId>([^<]+)</UploadId>", text).group(1)
    etags = []
    for number, start in enumerate(range(0, size, part_size), 1):
        length = min(part_size, size - start)
        url = presign_url(f"{base}{path}?partNumber={number}&uploadId={upload_id}", u.USER, u.PASSWORD, method="PUT")
        conn = srv.connect()
        try:
            conn.putrequest("PUT", url[len(base) :], skip_accept_encoding=True)
            conn.putheader("Content-Length", str(length))
            conn.endheaders()
            for block in _blocks_range(src, tag, start, length):
                conn.sock.sendall(block)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"part {number}: {resp.status}")
            etags.append(resp.getheader("ETag"))
        finally:
            conn.close()
    body = ("<CompleteMultipartUpload>" + "".join(f"<Part><PartNumber>{i}</PartNumber><ETag>{t}</ETag></Part>"
            for i, t in enumerate(etags, 1)) + "</CompleteMultipartUpload>").encode()  # fmt: skip
    query = f"uploadId={upload_id}"
    headers = signed_headers(srv, "POST", path, hashlib.sha256(body).hexdigest(), len(body), query)
    conn = srv.connect()
    conn.putrequest("POST", f"{path}?{query}", skip_accept_encoding=True, skip_host=True)
    for k, v in headers.items():
        conn.putheader(k, v)
    conn.endheaders()
    conn.send(body)
    resp = conn.getresponse()
    answer = resp.read()
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"complete: {resp.status} {answer[:500]!r}")


EMPTY_SHA = hashlib.sha256(b"").hexdigest()


def tagged_sha256(src: Path, tag: bytes) -> str:
    h = hashlib.sha256()
    for block in _blocks(src, tag):
        h.update(block)
    return h.hexdigest()


def _operations(srv: u.Server, base: str, kind: str, name: str, src: Path, tag: bytes, size: int, part: int):
    """(put, get) of one transfer of ``kind``."""
    if kind == "webdav":
        target = f"/{BUCKET}/{name}"

        def put():
            _send(srv, "PUT", target, {"Authorization": srv.auth, "Content-Length": str(size)}, src, tag)

        def get():
            return _send(srv, "GET", target, {"Authorization": srv.auth}, None, b"")

        return put, get
    get_url = presign_url(f"{base}/s3/{BUCKET}/{name}", u.USER, u.PASSWORD)
    if kind == "s3-presigned":
        put_url = presign_url(f"{base}/s3/{BUCKET}/{name}", u.USER, u.PASSWORD, method="PUT")

        def put():
            _send(srv, "PUT", put_url[len(base) :], {"Content-Length": str(size)}, src, tag)

    elif kind == "s3-multipart":

        def put():
            multipart_put(srv, base, name, src, tag, part)

    else:
        digest = tagged_sha256(src, tag)  # before the clock starts
        path = f"/s3/{BUCKET}/{name}"

        def put():
            _send(srv, "PUT", path, signed_headers(srv, "PUT", path, digest, size), src, tag)

        def get():
            return _send(srv, "GET", path, signed_headers(srv, "GET", path, EMPTY_SHA, None), None, b"")

        return put, get

    def get():
        return _send(srv, "GET", get_url[len(base) :], {}, None, b"")

    return put, get


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-gib", type=float, default=1.0)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--tmp-dir", default=None)
    p.add_argument("--part-mib", type=int, default=64, help="part size of the multipart upload (default 64)")
    args = p.parse_args(argv)
    size = int(args.size_gib * (1 << 30))
    with tempfile.TemporaryDirectory(dir=args.tmp_dir, prefix="bench-s3-") as tmp:
        work = Path(tmp)
        src = u.make_random_file(work / "src.bin", size)
        srv = u.start_hfdav(work)
        try:
            u.mkcol(srv, f"/{BUCKET}/")
            base = f"http://{srv.host}:{srv.port}"
            times: dict[str, list[float]] = {}
            cpu: dict[str, list[float]] = {}
            peak = 0
            for rep in range(args.reps):
                kinds = ["webdav", "s3-presigned", "s3-signed", "s3-multipart"]
                if rep % 2:
                    kinds.reverse()
                for kind in kinds:
                    name = f"{kind}-{rep}.bin"
                    tag = f"{kind[:6]}{rep}".encode()
                    put, get = _operations(srv, base, kind, name, src, tag, size, args.part_mib << 20)
                    sampler = u.RssSampler(srv) if kind != "webdav" else None
                    if sampler:
                        sampler.__enter__()
                    c0, t0 = srv.cpu_seconds(), time.perf_counter()
                    put()
                    c1, t1 = srv.cpu_seconds(), time.perf_counter()
                    got = get()
                    c2, t2 = srv.cpu_seconds(), time.perf_counter()
                    cpu.setdefault(f"{kind} put", []).append(c1 - c0)
                    cpu.setdefault(f"{kind} get", []).append(c2 - c1)
                    if sampler:
                        sampler.__exit__(None, None, None)
                        peak = max(peak, sampler.peak)
                    assert got == size, (kind, got)
                    times.setdefault(f"{kind} put", []).append(t1 - t0)
                    times.setdefault(f"{kind} get", []).append(t2 - t1)
                    print(f"rep {rep} {kind}: PUT {t1 - t0:.2f}s ({c1 - c0:.2f}s CPU) GET {t2 - t1:.2f}s "
                          f"({c2 - c1:.2f}s CPU)", flush=True)  # fmt: skip
        finally:
            srv.stop()
    mib = size / (1 << 20)
    print(f"\n{args.size_gib:g} GiB, best of {args.reps} (median in brackets); server CPU seconds (median)")
    for key, vals in times.items():
        print(f"  {key:18s} {mib / min(vals):8.1f} MiB/s  ({mib / statistics.median(vals):.1f})  "
              f"CPU {statistics.median(cpu[key]):.2f}s")  # fmt: skip
    for op in ("put", "get"):
        dav = min(times[f"webdav {op}"])
        dav_med = statistics.median(times[f"webdav {op}"])
        for kind in ("s3-presigned", "s3-signed", "s3-multipart"):
            print(f"  ratio {kind} / webdav {op}: {dav / min(times[f'{kind} {op}']):.2f} best, "
                  f"{dav_med / statistics.median(times[f'{kind} {op}']):.2f} median")  # fmt: skip
    print(f"  server peak RSS during S3 transfers: {peak / MB:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
