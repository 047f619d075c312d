"""Hub API calls hfdav makes, against the Hub emulator: per GiB uploaded, per 1,000 small files,
per cold GiB read, and for a rebuild of a drive of 10,000 files.

Not a test. The emulator runs in a process of its own, the gateway as ``hfdav serve``; the
calls are the gateway's own counts (``hfdav_hub_requests_total{kind}`` at ``/metrics``, one
gateway process per phase), split into the calls the Hub counts against its 5-minute API window
(1,000 for a free account) and the others (``resolve`` reads count against the Hub's separate
resolver limit; ``transfer`` is LFS storage traffic, not the Hub's API).

Phases, each in a fresh gateway process on the same data dir:

1. **upload**: a PUT of ``--size`` random bytes (default 256 MiB), until it is in a commit;
   reported per GiB (scaled linearly from ``--size``);
2. **small files**: ``--small`` files of 2 KiB (default 1,000) in 10 folders, until committed;
   reported per 1,000 files;
3. **cold read**: the chunk cache emptied, a GET of the whole big file; per GiB;
4. **rebuild**: more small files until the drive holds ``--rebuild-files`` files (default
   10,000), then the data dir wiped and a gateway started on it: it rebuilds the database from
   the repo; the calls until it serves (and its first sync status) are reported.

    .venv/bin/python bench/hub_api_calls.py                       # the sizes above
    .venv/bin/python bench/hub_api_calls.py --size 64MiB --small 200 --rebuild-files 2000
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _util as u  # noqa: E402
import bench_hub as bh  # noqa: E402

from gateway.config import parse_size  # noqa: E402
from gateway.store.hubhttp import API_KINDS  # noqa: E402

GiB = 1 << 30
SMALL_SIZE = 2048
FOLDERS = 10
PUT_THREADS = 4
_METRIC_RE = re.compile(r'^hfdav_hub_requests_total\{kind="([^"]+)"\} (\S+)$', re.M)


def request_counts(srv: u.Server) -> dict[str, int]:
    conn = srv.connect()
    try:
        conn.request("GET", "/metrics", headers={"Authorization": srv.auth})
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return {kind: int(float(n)) for kind, n in _METRIC_RE.findall(text)}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) - before.get(k, 0)}


def api_total(counts: dict[str, int]) -> int:
    return sum(n for kind, n in counts.items() if kind in API_KINDS)


def mkcol(srv: u.Server, path: str) -> None:
    conn = srv.connect()
    try:
        conn.request("MKCOL", path, headers={"Authorization": srv.auth})
        resp = conn.getresponse()
        resp.read()
        if resp.status not in (201, 405):
            raise RuntimeError(f"MKCOL {path}: {resp.status}")
    finally:
        conn.close()


def put_small(srv: u.Server, names: list[str]) -> None:
    local = threading.local()

    def put(name: str) -> None:
        if not hasattr(local, "conn"):
            local.conn = srv.connect()
        body = (name.encode() + b"\n").ljust(SMALL_SIZE, b".")
        local.conn.request("PUT", name, body=body, headers={"Authorization": srv.auth})
        resp = local.conn.getresponse()
        resp.read()
        if resp.status not in (201, 204):
            raise RuntimeError(f"PUT {name}: {resp.status}")

    with ThreadPoolExecutor(PUT_THREADS) as pool:
        list(pool.map(put, names))


def get_all(srv: u.Server, path: str) -> int:
    conn = srv.connect()
    try:
        conn.request("GET", path, headers={"Authorization": srv.auth})
        resp = conn.getresponse()
        n = 0
        while block := resp.read(1 << 20):
            n += len(block)
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: {resp.status}")
        return n
    finally:
        conn.close()


def small_names(start: int, stop: int) -> list[str]:
    return [f"/small/d{i % FOLDERS}/f{i:05d}.txt" for i in range(start, stop)]


def phase(workdir: Path, env: dict, name: str) -> u.Server:
    return bh.start_gateway(workdir, env, f"{name}.log")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="256MiB", help="the big file (default 256MiB; reported per GiB)")
    p.add_argument("--small", type=int, default=1000, help="small files of the second phase")
    p.add_argument("--rebuild-files", type=int, default=10_000, help="files of the drive that is rebuilt")
    p.add_argument("--workdir", default=None)
    args = p.parse_args()
    size = parse_size(args.size)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hfdav-api-calls-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    emu = bh.Emulator(workdir / "emulator", workdir / "emulator.log")
    env = {**bh.hub_env(emu, data), "HFDAV_DATA_DIR": str(data), "HFDAV_COMMIT_INTERVAL": "5"}
    results: dict[str, dict] = {}
    try:
        src = u.make_random_file(workdir / "big.bin", size)
        # 1. upload
        srv = phase(workdir, env, "upload")
        try:
            bh.wait_for(srv, bh.committed, 600)
            before = request_counts(srv)
            u.put_file(srv, "/big.bin", src)
            bh.wait_for(srv, bh.committed)
            used = delta(request_counts(srv), before)
            results["upload"] = {"calls": used, "api": api_total(used), "per_gib": api_total(used) * GiB / size}
            # 2. small files
            before = request_counts(srv)
            mkcol(srv, "/small")
            for d in range(FOLDERS):
                mkcol(srv, f"/small/d{d}")
            started = time.perf_counter()
            put_small(srv, small_names(0, args.small))
            bh.wait_for(srv, bh.committed)
            used = delta(request_counts(srv), before)
            results["small"] = {
                "files": args.small,
                "seconds": round(time.perf_counter() - started, 1),
                "calls": used,
                "api": api_total(used),
                "per_1000": api_total(used) * 1000 / args.small,
            }
        finally:
            srv.stop()
        # 3. cold read
        shutil.rmtree(data / "hub" / "cache", ignore_errors=True)
        srv = phase(workdir, env, "cold")
        try:
            bh.wait_for(srv, bh.committed, 600)
            before = request_counts(srv)
            if get_all(srv, "/big.bin") != size:
                raise RuntimeError("the cold read came back short")
            used = delta(request_counts(srv), before)
            results["cold_read"] = {
                "calls": used,
                "api": api_total(used),
                "api_per_gib": api_total(used) * GiB / size,
                "resolve_per_gib": used.get("resolve", 0) * GiB / size,
            }
            # 4. fill the drive up to --rebuild-files files
            more = max(0, args.rebuild_files - args.small - 1)
            put_small(srv, small_names(args.small, args.small + more))
            bh.wait_for(srv, bh.committed)
        finally:
            srv.stop()
        shutil.rmtree(data)
        started = time.perf_counter()
        srv = phase(workdir, env, "rebuild")
        try:
            served = time.perf_counter() - started
            bh.wait_for(srv, bh.committed, 600)
            used = request_counts(srv)
            results["rebuild"] = {
                "files": args.rebuild_files,
                "seconds_to_serve": round(served, 1),
                "calls": used,
                "api": api_total(used),
                "resolve": used.get("resolve", 0),
            }
        finally:
            srv.stop()
    finally:
        emu.stop()

    print(json.dumps(results, indent=2, sort_keys=True))
    print()
    print(f"Hub API calls (the 5-minute window's kind), big file {args.size}, small files of {SMALL_SIZE} B:")
    print(f"  per GiB uploaded        {results['upload']['per_gib']:8.1f}")
    print(f"  per 1,000 small files   {results['small']['per_1000']:8.1f}")
    print(f"  per cold GiB read       {results['cold_read']['api_per_gib']:8.1f}"
          f"   (+ {results['cold_read']['resolve_per_gib']:.1f} resolve GETs)")  # fmt: skip
    print(f"  rebuild of {args.rebuild_files:,} files  {results['rebuild']['api']:6d}"
          f"   (+ {results['rebuild']['resolve']} resolve GETs)")  # fmt: skip
    print(f"work dir: {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
