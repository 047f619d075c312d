"""Bandwidth limits measured: a file PUT through ``hfdav serve`` in Hub mode with an upload limit
reaches the emulator at that rate, and a cold GET with a download limit comes back at that rate.

Not a test. Per transport: the gateway starts with ``HFDAV_UPLOAD_LIMIT`` and
``HFDAV_DOWNLOAD_LIMIT``; the time from the PUT's first byte until nothing is left staged gives
the upload rate; after the local cache is emptied, a whole GET gives the download rate. Printed
as the measured rate and its ratio to the limit (the issue's bar: 1.00 ± 0.15).

    .venv/bin/python bench/bandwidth.py                         # 200 MB at 10 MiB/s, lfs and xet
    .venv/bin/python bench/bandwidth.py --size 100MB --limit 5M --transports lfs
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _util as u  # noqa: E402
import bench_hub as bh  # noqa: E402

from gateway.config import parse_size  # noqa: E402

MB = 1_000_000


def one_transport(workdir: Path, transport: str, size: int, limit: int, chunk: int) -> dict[str, float]:
    emu = bh.Emulator(workdir / "emulator", workdir / "emulator.log")
    try:
        src = u.make_random_file(workdir / "file.bin", size)
        env = bh.hub_env(emu, workdir / "data")
        env.update(
            HFDAV_DATA_DIR=str(workdir / "data"),
            HFDAV_HUB_TRANSPORT=transport,
            HFDAV_UPLOAD_LIMIT=str(limit),
            HFDAV_DOWNLOAD_LIMIT=str(limit),
            HFDAV_CHUNK_SIZE=str(chunk),
        )
        srv = bh.start_gateway(workdir, env, "gateway.log")
        try:
            started = time.perf_counter()
            u.put_file(srv, "/file.bin", src)
            up = size / (bh.wait_for(srv, bh.uploaded) - started)
            bh.wait_for(srv, bh.committed)
        finally:
            srv.stop()
        shutil.rmtree(workdir / "data" / "hub" / "cache", ignore_errors=True)
        srv = bh.start_gateway(workdir, env, "gateway2.log")
        try:
            started = time.perf_counter()
            u.get_file(srv, "/file.bin", size)
            down = size / (time.perf_counter() - started)
        finally:
            srv.stop()
        return {"upload": up, "download": down}
    finally:
        emu.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=parse_size, default=200 * MB, help="file size (default 200 MB)")
    p.add_argument("--limit", type=parse_size, default=10 << 20, help="limit per second, both ways (default 10M)")
    p.add_argument("--chunk", type=parse_size, default=50 << 20, help="chunk size (default 50M)")
    p.add_argument("--transports", default="lfs,xet")
    args = p.parse_args()
    print(f"{args.size / MB:.0f} MB with limits of {args.limit / MB:.2f} MB/s up and down")
    failed = False
    for transport in args.transports.split(","):
        workdir = Path(tempfile.mkdtemp(prefix=f"hfdav-bench-bw-{transport}-"))
        try:
            rates = one_transport(workdir, transport, args.size, args.limit, args.chunk)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        for direction, rate in rates.items():
            ratio = rate / args.limit
            ok = abs(ratio - 1) <= 0.15
            failed |= not ok
            print(f"{transport:4} {direction:8} {rate / MB:7.2f} MB/s  ratio to the limit {ratio:.3f}  "
                  f"{'within' if ok else 'OUTSIDE'} ±15%", flush=True)  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
