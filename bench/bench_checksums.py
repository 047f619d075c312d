"""What the content checksums (MD5 + SHA-1 of every PUT, for sync clients) cost a 1 GiB PUT.

Not a test. Three ``hfdav serve`` processes (cheroot, local store, SQLite) differ only in how
the checksums are computed (bench/_serve_digests.py): ``off`` (the baseline), ``pool`` (what
hfdav does: big blocks hashed in a pool thread beside the request thread) and ``inline`` (in
the request thread, for comparison). The same client streams the same 1 GiB of random data to
each in turn, repetitions interleaved; it prints MiB/s, server CPU, and the ratios to ``off``.
The bar (issue 9): checksums cost at most 10% of PUT throughput, i.e. ``pool / off >= 0.90``;
the exit status is 1 when it is missed.

    .venv/bin/python bench/bench_checksums.py               # 1 GiB, 3 repetitions, fsync on
    .venv/bin/python bench/bench_checksums.py --no-fsync    # CPU-bound PUTs: the worst case
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _util as u  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
#: The bar: throughput with checksums over throughput without.
MIN_RATIO = 0.90
SETTLE_S = 1.0
MODES = ("off", "pool", "inline")


def start(mode: str, workdir: Path, *, no_fsync: bool) -> u.Server:
    port = u.free_port()
    data = workdir / f"data-{mode}"
    data.mkdir(parents=True)
    env = dict(os.environ, SYS_TOKEN=u.PASSWORD, HFDAV_LOG_LEVEL="WARNING")
    for key in ("HF_TOKEN", "HF_DATASET_REPO", "WEBDAV_URL", "HFDAV_DATABASE_URL", "HFDAV_USERS"):
        env.pop(key, None)
    argv = [sys.executable, str(Path(__file__).with_name("_serve_digests.py")), mode]
    if no_fsync:
        argv.append("--no-fsync")
    argv += ["serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data), "--server", "cheroot"]
    return u._launch(f"hfdav[{mode}]", argv, env, workdir / f"hfdav-{mode}.log", port, data)


def settle() -> None:
    os.sync()
    time.sleep(SETTLE_S)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-gib", type=float, default=1.0, help="file size (default 1)")
    p.add_argument("--reps", type=int, default=3, help="repetitions, modes interleaved (default 3)")
    p.add_argument("--no-fsync", action="store_true", help="local store without fsync (CPU-bound PUTs)")
    p.add_argument("--tmp-dir", type=Path, default=None, help="where data and the test file go")
    args = p.parse_args(argv)
    size = int(args.size_gib * GiB)
    work = Path(tempfile.mkdtemp(prefix="hfdav-bench-sums-", dir=args.tmp_dir))
    servers: dict[str, u.Server] = {}
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    cpu: dict[str, list[float]] = {m: [] for m in MODES}
    try:
        src = u.make_random_file(work / "body.bin", size)
        for mode in MODES:
            servers[mode] = start(mode, work, no_fsync=args.no_fsync)
        for rep in range(args.reps):
            order = MODES[rep % len(MODES) :] + MODES[: rep % len(MODES)]
            for mode in order:
                srv = servers[mode]
                settle()
                cpu0, t0 = srv.cpu_seconds(), time.perf_counter()
                u.put_file(srv, "/big.bin", src, tag=f"r{rep}{mode}".encode())
                elapsed = time.perf_counter() - t0
                rates[mode].append(size / MiB / elapsed)
                cpu[mode].append((srv.cpu_seconds() - cpu0) * GiB / size)
                u.delete(srv, "/big.bin")
                print(f"rep {rep + 1} {mode:6s} {rates[mode][-1]:7.1f} MiB/s", file=sys.stderr)
    finally:
        for srv in servers.values():
            srv.stop()
        shutil.rmtree(work, ignore_errors=True)
    med = {m: statistics.median(v) for m, v in rates.items()}
    med_cpu = {m: statistics.median(v) for m, v in cpu.items()}
    fsync = "off" if args.no_fsync else "on"
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"PUT of {args.size_gib:g} GiB, cheroot, local store fsync {fsync}, median of {args.reps}")
    print(f"{os.cpu_count()} CPUs, load average {load} (a busy machine leaves no core for the hashing thread)")
    print(f"{'checksums':10s} {'MiB/s':>8s} {'ratio':>6s} {'CPU s/GiB':>10s}")
    for m in MODES:
        print(f"{m:10s} {med[m]:8.1f} {med[m] / med['off']:6.3f} {med_cpu[m]:10.2f}")
    ratio = med["pool"] / med["off"]
    ok = ratio >= MIN_RATIO
    print(f"bar: pool/off >= {MIN_RATIO}: {ratio:.3f} {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
