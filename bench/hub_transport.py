"""The Hub transports side by side: a round trip of one big file through ``hfdav serve`` with
``HFDAV_HUB_TRANSPORT=lfs`` and with ``xet`` (hf_xet to the emulator's CAS).

Not a test. Per transport: a PUT of ``SIZE`` bytes of random data over WebDAV, until it is in a
commit (throughput from the first byte of the PUT); then the data dir is wiped, the gateway
restarted (it rebuilds from the repo) and the whole file read back cold and checked (sha256),
plus a deep Range read. Printed and written as JSON: throughput up and down, CPU seconds per GiB
of the gateway and of the emulator (its own process), the gateway's peak RSS (process tree:
hf_xet runs inside it), Hub API calls.

    .venv/bin/python bench/hub_transport.py            # 1 GiB
    .venv/bin/python bench/hub_transport.py 5GiB       # the issue's 5 GiB
    .venv/bin/python bench/hub_transport.py 1GiB --transports xet --json out.json

The emulator checks each Xet file against its sha256 when its shard arrives; that costs the
emulator a read of the file, not the gateway (``--no-xet-verify`` turns it off).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
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
GiB = 1 << 30


def get_sha256(srv: u.Server, url: str, expected: int) -> str:
    """GET the whole file and return its sha256 (the byte count must be ``expected``)."""
    conn = srv.connect()
    try:
        conn.request("GET", url, headers={"Authorization": srv.auth})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"GET {url}: {resp.status}")
        digest, got = hashlib.sha256(), 0
        while block := resp.read(4 << 20):
            digest.update(block)
            got += len(block)
        if got != expected:
            raise RuntimeError(f"GET {url}: {got} bytes, expected {expected}")
        return digest.hexdigest()
    finally:
        conn.close()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def round_trip(emu: bh.Emulator, workdir: Path, big: Path, size: int, digest: str, transport: str) -> dict:
    data = workdir / f"data-{transport}"
    env = bh.hub_env(emu, data)
    env.pop("HF_XET_CACHE", None)  # the gateway's own default: inside its data dir
    env.update(
        HFDAV_DATA_DIR=str(data),
        HF_DATASET_REPO=f"bench/drive-{transport}",
        HFDAV_HUB_TRANSPORT=transport,
        HF_HUB_DISABLE_XET="0" if transport == "xet" else "1",
    )
    out: dict = {"transport": transport}
    srv = bh.start_gateway(workdir, env, f"gateway-{transport}.log")
    try:
        stats0 = emu.stats()
        with u.RssSampler(srv) as rss_up:
            probe = bh.CpuProbe(emulator=emu.pid, gateway=srv.proc.pid)
            started = time.perf_counter()
            u.put_file(srv, "/big.bin", big)
            acked = time.perf_counter()
            done = bh.wait_for(srv, bh.committed)
            out["cpu_s_per_GiB_up"] = {k: round(v, 2) for k, v in probe.per_gib(size).items()}
        stats1 = emu.stats()
    finally:
        srv.stop()
    out["put_ack_MBps"] = round(size / (acked - started) / MB, 1)
    out["up_committed_MBps"] = round(size / (done - started) / MB, 1)
    out["api_calls_up"] = stats1["api_calls"] - stats0["api_calls"]
    out["xorbs"] = stats1.get("xet_xorbs", 0) - stats0.get("xet_xorbs", 0)
    out["lfs_puts"] = stats1["lfs_puts"] - stats0["lfs_puts"]
    out["peak_rss_up_MB"] = round(rss_up.peak / MB)

    shutil.rmtree(data)  # everything local is gone: the drive comes back from the repo
    srv = bh.start_gateway(workdir, env, f"gateway-{transport}-2.log")
    try:
        out["range_ttfb_s"] = round(u.range_ttfb(srv, "/big.bin", int(size * 0.9), 4096), 3)
        with u.RssSampler(srv) as rss_down:
            probe = bh.CpuProbe(emulator=emu.pid, gateway=srv.proc.pid)
            started = time.perf_counter()
            got = get_sha256(srv, "/big.bin", size)
            out["cold_get_MBps"] = round(size / (time.perf_counter() - started) / MB, 1)
            out["cpu_s_per_GiB_down"] = {k: round(v, 2) for k, v in probe.per_gib(size).items()}
    finally:
        srv.stop()
    out["byte_identical"] = got == digest
    out["peak_rss_down_MB"] = round(rss_down.peak / MB)
    out["peak_rss_MB"] = max(out["peak_rss_up_MB"], out["peak_rss_down_MB"])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("size", nargs="?", type=parse_size, default=GiB, help="file size (default 1GiB; e.g. 5GiB)")
    p.add_argument("--transports", default="lfs,xet", help="comma-separated (default lfs,xet)")
    p.add_argument("--no-xet-verify", action="store_true", help="the emulator does not re-read Xet files")
    p.add_argument("--workdir", help="keep everything under this directory (default: a temp dir, removed)")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hfdav-bench-transport-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.no_xet_verify:
        os.environ["HUB_EMULATOR_XET_VERIFY"] = "0"
    results = {"size": args.size, "machine": f"{os.cpu_count()} CPUs", "runs": []}
    emu = bh.Emulator(workdir / "emulator", workdir / "emulator.log")
    try:
        big = u.make_random_file(workdir / "big.bin", args.size)
        digest = file_sha256(big)
        for transport in args.transports.split(","):
            print(f"{transport}: {args.size / GiB:.2f} GiB round trip ...", flush=True)
            run = round_trip(emu, workdir, big, args.size, digest, transport)
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
    finally:
        emu.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"{'transport':10} {'up MB/s':>8} {'down MB/s':>9} {'gw CPU s/GiB up/down':>21} "
          f"{'emu CPU s/GiB up/down':>22} {'peak RSS MB':>11} {'identical':>9}")  # fmt: skip
    for r in results["runs"]:
        gw = f"{r['cpu_s_per_GiB_up']['gateway']:.1f}/{r['cpu_s_per_GiB_down']['gateway']:.1f}"
        em = f"{r['cpu_s_per_GiB_up']['emulator']:.1f}/{r['cpu_s_per_GiB_down']['emulator']:.1f}"
        print(f"{r['transport']:10} {r['up_committed_MBps']:8.1f} {r['cold_get_MBps']:9.1f} {gw:>21} {em:>22} "
              f"{r['peak_rss_MB']:11d} {str(r['byte_identical']):>9}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if all(r["byte_identical"] for r in results["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
