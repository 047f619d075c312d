"""Benchmark hfdav against stock ``wsgidav`` serving a directory, in one run on one machine.

Not a test: it prints a table of ratios (hfdav / stock) with the project's bars, because the
absolute figures of a shared machine mean little. See bench/README.md for how to read it.

    .venv/bin/python bench/bench.py                       # everything, 3 repetitions
    .venv/bin/python bench/bench.py --only put,get --reps 5
    .venv/bin/python bench/bench.py --server gunicorn     # hfdav under gunicorn
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _util as u  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
MB = 1_000_000

#: Project bars (issue 2).
PUT_GET_MIN_RATIO = 0.8
RSS_MAX_BYTES = 200 * MB
PROPFIND_MAX_RATIO = 1.5

#: Where the Range GET starts, as a fraction of the large file (900 MiB into 1 GiB).
RANGE_AT = 900 / 1024
RANGE_LEN = 1024
#: Range GETs per repetition (the fastest counts: a first-byte time is mostly latency).
RANGE_TRIES = 5
#: Pause after flushing dirty pages, so the disk is idle when the next timed transfer starts.
SETTLE_S = 1.0
#: Size of each file of the PROPFIND folder (its content does not matter, only its entry).
PROPFIND_FILE_SIZE = 64
#: Connections used to fill the PROPFIND folder of hfdav.
POPULATE_THREADS = 8
SMALL_FILE_SIZE = 4096

NAMED_PROPS = b"""<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop>
<D:getcontentlength/><D:getlastmodified/><D:resourcetype/><D:getetag/>
</D:prop></D:propfind>"""

METRICS = ("put", "get", "ttfb", "rss", "propfind", "small")


@dataclass(frozen=True)
class Row:
    key: str
    metric: str
    label: str
    higher_is_better: bool
    bar: str
    judge: Callable[[float, float], bool] | None  # (hfdav, stock) -> meets the bar


def rows(args) -> list[Row]:
    size = _fmt_gib(args.size_gib)
    big = _fmt_gib(args.big_gib)
    n_pf = f"{args.propfind_files:,}"
    return [
        Row("put", "put", f"PUT {size} (MiB/s)", True, f">= {PUT_GET_MIN_RATIO}x",
            lambda h, s: h >= PUT_GET_MIN_RATIO * s),
        Row("put_cpu", "put", "  PUT, server CPU per GiB (s)", False, "-", None),
        Row("get", "get", f"GET {size} (MiB/s)", True, f">= {PUT_GET_MIN_RATIO}x",
            lambda h, s: h >= PUT_GET_MIN_RATIO * s),
        Row("get_cpu", "get", "  GET, server CPU per GiB (s)", False, "-", None),
        Row("ttfb", "ttfb", f"Range GET 1 KiB at {RANGE_AT:.0%}, first byte (ms)", False, "-", None),
        Row("rss", "rss", f"server peak RSS, {big} up+down (MB)", False, f"hfdav < {RSS_MAX_BYTES // MB} MB",
            lambda h, s: h * MB < RSS_MAX_BYTES),
        Row("propfind_all", "propfind", f"PROPFIND D1 {n_pf} files, allprop (ms)", False,
            f"<= {PROPFIND_MAX_RATIO}x", lambda h, s: h <= PROPFIND_MAX_RATIO * s),
        Row("propfind_named", "propfind", f"PROPFIND D1 {n_pf} files, 4 props (ms)", False,
            f"<= {PROPFIND_MAX_RATIO}x", lambda h, s: h <= PROPFIND_MAX_RATIO * s),
        Row("propfind_all_cpu", "propfind", "  PROPFIND allprop, server CPU (ms)", False, "-", None),
        Row("propfind_named_cpu", "propfind", "  PROPFIND 4 props, server CPU (ms)", False, "-", None),
        Row("small", "small", f"PUT {args.small_files:,} x 4 KiB, sequential (files/s)", True, "-", None),
        Row("small_cpu", "small", "  small PUT, server CPU per file (ms)", False, "-", None),
    ]  # fmt: skip


def _fmt_gib(x: float) -> str:
    return f"{x:g} GiB" if x >= 1 else f"{x * 1024:g} MiB"


class Bench:
    def __init__(self, args, work: Path):
        self.args = args
        self.work = work
        self.samples: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.notes: list[str] = []
        self.hfdav: u.Server | None = None
        self.stock: u.Server | None = None

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def record(self, key: str, srv: u.Server, value: float) -> None:
        self.samples[(key, "hfdav" if srv is self.hfdav else "stock")].append(value)

    @staticmethod
    def measure(srv: u.Server, fn, *args, **kwargs) -> tuple[float, float]:
        """Run ``fn``; return (wall-clock seconds, CPU seconds the server used meanwhile)."""
        cpu0, t0 = srv.cpu_seconds(), time.perf_counter()
        fn(*args, **kwargs)
        return time.perf_counter() - t0, srv.cpu_seconds() - cpu0

    def order(self, rep: int) -> list[u.Server]:
        """A, B on even repetitions and B, A on odd ones, so neither always goes first."""
        pair = [self.hfdav, self.stock]
        return pair if rep % 2 == 0 else pair[::-1]

    # -- phases -----------------------------------------------------------------------------
    def large(self) -> None:
        want = set(self.args.only)
        size = int(self.args.size_gib * GiB)
        src = u.make_random_file(self.work / "src-large.bin", size)
        offset = int(size * RANGE_AT) // 1024 * 1024
        for rep in range(self.args.reps):
            for srv in self.order(rep):
                url = f"/bench-large-{rep}.bin"
                settle()
                wall, cpu = self.measure(srv, u.put_file, srv, url, src, tag=f"r{rep}{srv.name[:1]}".encode())
                self.record("put", srv, size / MiB / wall)
                self.record("put_cpu", srv, cpu / (size / GiB))
                if "get" in want:
                    settle()
                    wall, cpu = self.measure(srv, u.get_file, srv, url, size)
                    self.record("get", srv, size / MiB / wall)
                    self.record("get_cpu", srv, cpu / (size / GiB))
                if "ttfb" in want:
                    best = min(u.range_ttfb(srv, url, offset, RANGE_LEN) for _ in range(RANGE_TRIES))
                    self.record("ttfb", srv, best * 1000)
                u.delete(srv, url)
                done = self._last(srv, ("put", "put_cpu", "get", "get_cpu", "ttfb"))
                self.log(f"large rep {rep + 1}/{self.args.reps} {srv.name}: {done}")

    def rss(self) -> None:
        size = int(self.args.big_gib * GiB)
        src = u.make_random_file(self.work / "src-big.bin", size)
        for srv in (self.hfdav, self.stock):
            url = "/bench-big.bin"
            settle()
            with u.RssSampler(srv) as sampler:
                t0 = time.perf_counter()
                u.put_file(srv, url, src, tag=b"rss")
                t1 = time.perf_counter()
                u.get_file(srv, url, size)
                t2 = time.perf_counter()
            u.delete(srv, url)
            self.record("rss", srv, sampler.peak / MB)
            how = "VmHWM reset + sampling" if sampler.hwm_reset else "sampling only"
            self.notes.append(
                f"rss {srv.name}: peak {sampler.peak / MB:.1f} MB ({how}; sampled {sampler.peak_sampled / MB:.1f}, "
                f"VmHWM {sampler.peak_hwm / MB:.1f}); PUT {size / MiB / (t1 - t0):.0f} MiB/s, "
                f"GET {size / MiB / (t2 - t1):.0f} MiB/s"
            )
            self.log(self.notes[-1])

    def propfind(self) -> None:
        n = self.args.propfind_files
        folder = "/pf/"
        for srv in (self.hfdav, self.stock):
            self.log(f"populating {n:,} files in {folder} of {srv.name}")
            t0 = time.perf_counter()
            if srv is self.stock:
                # Written straight into the served directory: only the PROPFIND is measured.
                d = srv.data_dir / folder.strip("/")
                d.mkdir(exist_ok=True)
                for i in range(n):
                    (d / f"file-{i:05d}.txt").write_bytes(_small_body(i, PROPFIND_FILE_SIZE))
            else:
                u.mkcol(srv, folder)
                items = [(f"{folder}file-{i:05d}.txt", _small_body(i, PROPFIND_FILE_SIZE)) for i in range(n)]
                u.put_many_parallel(srv, items, POPULATE_THREADS)
            self.notes.append(f"populate {srv.name}: {n:,} files in {time.perf_counter() - t0:.1f}s")
            self.log(self.notes[-1])
            for body in (b"", NAMED_PROPS):  # warm-up, not measured
                self._propfind(srv, folder, body, n)
        for rep in range(self.args.reps):
            for srv in self.order(rep):
                settle()
                for key, body in (("propfind_all", b""), ("propfind_named", NAMED_PROPS)):
                    sizes: list[int] = []
                    wall, cpu = self.measure(
                        srv, lambda b, srv=srv, sizes=sizes: sizes.append(self._propfind(srv, folder, b, n)), body
                    )
                    self.record(key, srv, wall * 1000)
                    self.record(f"{key}_cpu", srv, cpu * 1000)
                    if rep == 0:
                        self.notes.append(f"{key} {srv.name}: response {sizes[0] / 1e6:.2f} MB")
                self.log(f"propfind rep {rep + 1}/{self.args.reps} {srv.name}: "
                         + self._last(srv, ("propfind_all", "propfind_named")))  # fmt: skip

    @staticmethod
    def _propfind(srv: u.Server, folder: str, body: bytes, n: int) -> int:
        status, count, data = u.propfind(srv, folder, depth="1", body=body)
        if status != 207 or count != n + 1:
            raise u.HttpError(f"PROPFIND {srv.name}: status {status}, {count} responses (expected {n + 1})")
        return len(data)

    def small(self) -> None:
        n = self.args.small_files
        for rep in range(self.args.reps):
            for srv in self.order(rep):
                folder = f"/small-{rep}/"
                u.mkcol(srv, folder)
                items = [(f"{folder}f-{i:05d}.bin", os.urandom(SMALL_FILE_SIZE)) for i in range(n)]
                settle()
                wall, cpu = self.measure(srv, u.put_many, srv, items)
                self.record("small", srv, n / wall)
                self.record("small_cpu", srv, cpu * 1000 / n)
                self.log(f"small rep {rep + 1}/{self.args.reps} {srv.name}: " + self._last(srv, ("small", "small_cpu")))

    def _last(self, srv: u.Server, keys) -> str:
        who = "hfdav" if srv is self.hfdav else "stock"
        return ", ".join(f"{k} {self.samples[(k, who)][-1]:.1f}" for k in keys if self.samples[(k, who)])

    # -- report -----------------------------------------------------------------------------
    def report(self) -> bool:
        """Print the table; returns whether every bar measured was met."""
        wanted = [r for r in rows(self.args) if r.metric in self.args.only]
        agg = "median" if self.args.median else "best"
        print()
        print(f"hfdav ({self.hfdav.name}) vs stock wsgidav, {agg} of {self.args.reps} "
              f"(rss: 1 run); ratio = hfdav / stock of those; paired = median of per-repetition ratios")  # fmt: skip
        header = f"{'metric':<46} {'hfdav':>10} {'stock':>10} {'ratio':>7} {'paired':>7}  {'bar':<16} result"
        print(header)
        print("-" * len(header))
        all_ok = True
        for r in wanted:
            h, s = self.samples.get((r.key, "hfdav")), self.samples.get((r.key, "stock"))
            if not h or not s:
                continue
            hv, sv = self._aggregate(h, r.higher_is_better), self._aggregate(s, r.higher_is_better)
            ratio = hv / sv if sv else float("nan")  # a CPU time below the clock tick reads as 0
            pairs = [a / b for a, b in zip(h, s, strict=False) if b]
            paired = statistics.median(pairs) if pairs else float("nan")
            if r.judge is None:
                result = "info"
            else:
                ok = r.judge(hv, sv)
                all_ok &= ok
                result = "PASS" if ok else "MISS"
            print(f"{r.label:<46} {hv:>10.1f} {sv:>10.1f} {ratio:>6.2f}x {paired:>6.2f}x  {r.bar:<16} {result}")
        print()
        print("samples (min / median / max, in run order):")
        for r in wanted:
            for who in ("hfdav", "stock"):
                vals = self.samples.get((r.key, who))
                if vals:
                    print(f"  {r.key:<18} {who:<6} {min(vals):9.1f} {statistics.median(vals):9.1f} "
                          f"{max(vals):9.1f}   [{', '.join(f'{v:.1f}' for v in vals)}]")  # fmt: skip
        if self.notes:
            print("notes:")
            for note in self.notes:
                print(f"  {note}")
        return all_ok

    def _aggregate(self, vals: list[float], higher_is_better: bool) -> float:
        if self.args.median:
            return statistics.median(vals)
        return max(vals) if higher_is_better else min(vals)


def settle() -> None:
    """Write back every dirty page before a timed step. Otherwise a server that does not fsync
    leaves its data to be flushed while the *next* step runs, and the order decides the figures."""
    os.sync()
    time.sleep(SETTLE_S)


def _small_body(i: int, size: int) -> bytes:
    return (f"file {i}\n".encode() * (size // 8 + 1))[:size]


def _parse_only(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in METRICS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown metric(s) {bad}; choose from {', '.join(METRICS)}")
    return names


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size-gib", type=float, default=1.0, help="large file for PUT/GET/Range (default 1)")
    p.add_argument("--big-gib", type=float, default=2.0, help="file for the peak-RSS run (default 2)")
    p.add_argument("--small-files", type=int, default=1000, help="4 KiB files PUT in sequence (default 1000)")
    p.add_argument("--propfind-files", type=int, default=10_000, help="files in the PROPFIND folder (default 10000)")
    p.add_argument("--reps", type=int, default=3, help="repetitions, servers interleaved (default 3)")
    p.add_argument("--median", action="store_true", help="report the median instead of the best repetition")
    p.add_argument(
        "--only", type=_parse_only, default=list(METRICS), help=f"comma-separated subset of: {', '.join(METRICS)}"
    )
    p.add_argument("--server", choices=("cheroot", "gunicorn"), default="cheroot", help="hfdav's HTTP server")
    p.add_argument(
        "--hfdav-no-fsync",
        action="store_true",
        help="diagnostic: run hfdav with the local store's fsync off (cheroot only)",
    )
    p.add_argument("--tmp-dir", type=Path, default=None, help="where data and test files go (default: system temp)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir and server logs")
    args = p.parse_args(argv)
    if args.hfdav_no_fsync and args.server != "cheroot":
        p.error("--hfdav-no-fsync needs --server cheroot")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="hfdav-bench-", dir=args.tmp_dir))
    bench = Bench(args, work)
    load = os.getloadavg()
    print(f"hfdav benchmark: {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} CPUs, "
          f"load {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}, Python {platform.python_version()}, "
          f"work dir {work}")  # fmt: skip
    try:
        bench.hfdav = u.start_hfdav(work, server=args.server, no_fsync=args.hfdav_no_fsync)
        bench.stock = u.start_stock(work)
        bench.log(f"{bench.hfdav.name} on :{bench.hfdav.port}, {bench.stock.name} on :{bench.stock.port}")
        only = set(args.only)
        if only & {"put", "get", "ttfb"}:
            bench.large()
        if "rss" in only:
            bench.rss()
        if "propfind" in only:
            bench.propfind()
        if "small" in only:
            bench.small()
        ok = bench.report()
    except Exception:
        for srv in (bench.hfdav, bench.stock):
            if srv is not None:
                print(f"--- last lines of the {srv.name} log ---\n{srv.log_tail()}", file=sys.stderr)
        raise
    finally:
        for srv in (bench.hfdav, bench.stock):
            if srv is not None:
                srv.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
