"""Small files and listings: hfdav against stock ``wsgidav`` (and ``rclone serve webdav``).

Not a test: it prints a table of figures and ratios (hfdav / other), because absolute figures
on a shared machine mean little. All servers run in the same invocation, alternating per
repetition (A B C, then C B A, ...).

    .venv/bin/python bench/small_files.py                          # 3 repetitions
    .venv/bin/python bench/small_files.py --reps 1 --files 200 --propfind-files 1000   # smoke run
    .venv/bin/python bench/small_files.py --rss-files 50000        # also the 50k-file PROPFIND RSS

What is measured (see bench/README.md for the servers' set-up):

* ``PUT``: files per second of ``--files`` sequential PUTs of 4 KiB (random content) into a new
  folder over one keep-alive connection (``--conns N``: spread over N at once); hfdav's PUTs
  are durable (fsync), the others' are not.
* ``GET``: the same files read back, one after the other, over one keep-alive connection.
* ``PROPFIND``: Depth 1 of a folder of ``--propfind-files`` files, the whole answer read, with an
  empty body (allprop) and with 4 named properties; also the time to the first body byte. The
  folders are filled without HTTP (hfdav: through its file service before it starts, as empty
  files; the others: files written into the served directory); one unmeasured PROPFIND of each
  kind warms every server first.
* ``PROPFIND RSS`` (with ``--rss-files``): peak resident memory of each server's process tree
  while it answers a Depth-1 allprop PROPFIND of a folder of that many files.
* server CPU: user + system seconds of the server's process tree during the step.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _util as u  # noqa: E402

SMALL = 4096
NAMED_PROPS = b"""<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop>
<D:getcontentlength/><D:getlastmodified/><D:resourcetype/><D:getetag/>
</D:prop></D:propfind>"""
PF_FOLDER = "/pf/"
RSS_FOLDER = "/big/"

#: Bars of issue 18 (ratios hfdav / stock, and hfdav's time against rclone's)
PUT_BAR = 1.5
GET_BAR = 1.5
RSS_BAR_MB = 100

_POPULATE = """
import sys
from gateway.app import build_gateway
from gateway.config import load_settings
data, folder, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
gw = build_gateway(load_settings({"HFDAV_DATA_DIR": data, "SYS_TOKEN": "x" * 16}))
try:
    gw.files.mkdir(folder)
    for i in range(n):
        gw.files.create_empty(f"{folder}/file-{i:05d}.txt")
finally:
    gw.close()
"""


def populate_hfdav(data: Path, folder: str, n: int) -> None:
    """``n`` empty files in ``folder`` of hfdav's data dir, through its file service (no HTTP)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HFDAV_"))}
    subprocess.run([sys.executable, "-c", _POPULATE, str(data), folder.rstrip("/"), str(n)],
                   cwd=u.ROOT, env=env, check=True, stdout=subprocess.DEVNULL)  # fmt: skip


def populate_dir(root: Path, folder: str, n: int) -> None:
    d = root / folder.strip("/")
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (d / f"file-{i:05d}.txt").write_bytes(b"")


def start_rclone(workdir: Path) -> u.Server | None:
    exe = shutil.which("rclone")
    if exe is None:
        return None
    port = u.free_port()
    root = workdir / "rclone-root"
    root.mkdir(parents=True, exist_ok=True)
    argv = [exe, "serve", "webdav", str(root), "--addr", f"127.0.0.1:{port}", "--user", u.USER, "--pass", u.PASSWORD]
    return u._launch("rclone", argv, dict(os.environ), workdir / "rclone.log", port, root)


def get_many(srv: u.Server, urls: list[str]) -> None:
    conn = srv.connect()
    try:
        for url in urls:
            conn.request("GET", url, headers={"Authorization": srv.auth})
            resp = conn.getresponse()
            u._check(resp, (200,), f"GET {url}")
            if len(resp.read()) != SMALL:
                raise u.HttpError(f"GET {url}: short body")
    finally:
        conn.close()


def over_connections(fn, srv: u.Server, items: list, conns: int) -> None:
    """``fn(srv, part)`` for ``conns`` slices of ``items`` at once, each on its own connection."""
    if conns <= 1:
        fn(srv, items)
        return
    with ThreadPoolExecutor(conns) as pool:
        for f in [pool.submit(fn, srv, items[i::conns]) for i in range(conns)]:
            f.result()


def propfind_timed(srv: u.Server, url: str, body: bytes, n: int) -> tuple[float, float]:
    """(seconds to the first body byte, seconds to the whole answer) of a Depth-1 PROPFIND."""
    conn = srv.connect()
    try:
        headers = {"Authorization": srv.auth, "Depth": "1", "Content-Length": str(len(body))}
        if body:
            headers["Content-Type"] = 'application/xml; charset="utf-8"'
        t0 = time.perf_counter()
        conn.request("PROPFIND", url, body=body, headers=headers)
        resp = conn.getresponse()
        first = resp.read(1)
        t1 = time.perf_counter()
        data = first + resp.read()
        t2 = time.perf_counter()
    finally:
        conn.close()
    count = data.count(b"response>") // 2
    if resp.status != 207 or count != n + 1:
        raise u.HttpError(f"PROPFIND {srv.name}: status {resp.status}, {count} responses (expected {n + 1})")
    return t1 - t0, t2 - t0


class Run:
    def __init__(self, args, work: Path):
        self.args = args
        self.work = work
        self.samples: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.servers: list[u.Server] = []
        self.notes: list[str] = []

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def record(self, key: str, srv: u.Server, value: float) -> None:
        self.samples[(key, srv.name)].append(value)

    def order(self, rep: int) -> list[u.Server]:
        return self.servers if rep % 2 == 0 else self.servers[::-1]

    @staticmethod
    def measure(srv: u.Server, fn, *a) -> tuple[float, float, object]:
        cpu0, t0 = srv.cpu_seconds(), time.perf_counter()
        out = fn(*a)
        return time.perf_counter() - t0, srv.cpu_seconds() - cpu0, out

    def start(self) -> None:
        a = self.args
        hf_dir = self.work / "hfdav"
        (hf_dir / "hfdav-data").mkdir(parents=True)
        t0 = time.perf_counter()
        populate_hfdav(hf_dir / "hfdav-data", PF_FOLDER, a.propfind_files)
        if a.rss_files:
            populate_hfdav(hf_dir / "hfdav-data", RSS_FOLDER, a.rss_files)
        self.notes.append(f"hfdav folders filled in {time.perf_counter() - t0:.1f}s (file service, no HTTP)")
        self.servers.append(u.start_hfdav(hf_dir, server=a.server))
        stock = u.start_stock(self.work / "stock")
        self.servers.append(stock)
        rclone = None if a.no_rclone else start_rclone(self.work / "rclone")
        if rclone is not None:
            self.servers.append(rclone)
        for srv in self.servers[1:]:
            populate_dir(srv.data_dir, PF_FOLDER, a.propfind_files)
            if a.rss_files:
                populate_dir(srv.data_dir, RSS_FOLDER, a.rss_files)

    def small(self) -> None:
        n = self.args.files
        for rep in range(self.args.reps):
            for srv in self.order(rep):
                folder = f"/small-{rep}/"
                u.mkcol(srv, folder)
                items = [(f"{folder}f-{i:05d}.bin", os.urandom(SMALL)) for i in range(n)]
                settle()
                wall, cpu, _ = self.measure(srv, over_connections, u.put_many, srv, items, self.args.conns)
                self.record("put", srv, n / wall)
                self.record("put_cpu", srv, cpu * 1000 / n)
                urls = [url for url, _ in items]
                wall, cpu, _ = self.measure(srv, over_connections, get_many, srv, urls, self.args.conns)
                self.record("get", srv, n / wall)
                self.record("get_cpu", srv, cpu * 1000 / n)
                self.log(f"small rep {rep + 1} {srv.name}: PUT {self.samples[('put', srv.name)][-1]:.0f}/s, "
                         f"GET {self.samples[('get', srv.name)][-1]:.0f}/s")  # fmt: skip

    def propfind(self) -> None:
        n = self.args.propfind_files
        for srv in self.servers:
            for body in (b"", NAMED_PROPS):
                propfind_timed(srv, PF_FOLDER, body, n)
        for rep in range(self.args.reps):
            for srv in self.order(rep):
                settle()
                for key, body in (("pf_all", b""), ("pf_named", NAMED_PROPS)):
                    wall, cpu, (first, total) = self.measure(srv, propfind_timed, srv, PF_FOLDER, body, n)
                    self.record(key, srv, total * 1000)
                    self.record(key + "_first", srv, first * 1000)
                    self.record(key + "_cpu", srv, cpu * 1000)
                self.log(f"propfind rep {rep + 1} {srv.name}: allprop {self.samples[('pf_all', srv.name)][-1]:.0f} ms, "
                         f"named {self.samples[('pf_named', srv.name)][-1]:.0f} ms")  # fmt: skip

    def rss(self) -> None:
        n = self.args.rss_files
        for srv in self.servers:
            settle()
            with u.RssSampler(srv) as sampler:
                _first, total = propfind_timed(srv, RSS_FOLDER, b"", n)
            self.record("rss", srv, sampler.peak / 1e6)
            self.record("rss_time", srv, total * 1000)
            self.log(f"rss {srv.name}: {sampler.peak / 1e6:.1f} MB, {total:.2f}s")

    def _conns_label(self) -> str:
        return "one connection" if self.args.conns <= 1 else f"{self.args.conns} connections"

    def report(self) -> bool:
        names = [s.name for s in self.servers]
        hf = names[0]
        rows = [
            ("put", f"PUT {self.args.files:,} x 4 KiB, {self._conns_label()} (files/s)", True),
            ("put_cpu", "  server CPU per PUT (ms)", False),
            ("get", f"GET {self.args.files:,} x 4 KiB, {self._conns_label()} (files/s)", True),
            ("get_cpu", "  server CPU per GET (ms)", False),
            ("pf_all", f"PROPFIND D1 {self.args.propfind_files:,} files, allprop (ms)", False),
            ("pf_all_first", "  first byte (ms)", False),
            ("pf_all_cpu", "  server CPU (ms)", False),
            ("pf_named", f"PROPFIND D1 {self.args.propfind_files:,} files, 4 props (ms)", False),
            ("pf_named_first", "  first byte (ms)", False),
            ("pf_named_cpu", "  server CPU (ms)", False),
            ("rss", f"peak RSS, PROPFIND D1 {self.args.rss_files:,} files (MB)", False),
            ("rss_time", "  its time (ms)", False),
        ]
        agg = statistics.median if self.args.median else None
        head = f"{'metric':<48}" + "".join(f"{n[:14]:>15}" for n in names)
        head += "".join(f"{'hf/' + n[:8]:>13}" for n in names[1:])
        print()
        print(f"best of {self.args.reps} (median: --median); hf/x = hfdav / x")
        print(head)
        print("-" * len(head))
        best: dict[tuple[str, str], float] = {}
        for key, label, higher in rows:
            vals = {n: self.samples.get((key, n)) for n in names}
            if not any(vals.values()):
                continue
            for n, v in vals.items():
                if v:
                    best[(key, n)] = agg(v) if agg else (max(v) if higher else min(v))
            cells = "".join(f"{best.get((key, n), float('nan')):>15.1f}" for n in names)
            ratios = "".join(
                f"{best.get((key, hf), float('nan')) / best[(key, n)]:>12.2f}x" if best.get((key, n)) else f"{'-':>13}"
                for n in names[1:]
            )
            print(f"{label:<48}{cells}{ratios}")
        print()
        ok = True
        stock = names[1]
        checks = []
        if ("put", hf) in best:
            checks.append((f"PUT >= {PUT_BAR}x stock", best[("put", hf)] >= PUT_BAR * best[("put", stock)]))
            checks.append((f"GET >= {GET_BAR}x stock", best[("get", hf)] >= GET_BAR * best[("get", stock)]))
        if ("pf_all", hf) in best and "rclone" in names:
            for key in ("pf_all", "pf_named"):
                checks.append((f"{key} <= rclone's time", best[(key, hf)] <= best[(key, "rclone")]))
        if ("rss", hf) in best:
            checks.append((f"PROPFIND RSS < {RSS_BAR_MB} MB", best[("rss", hf)] < RSS_BAR_MB))
        for label, passed in checks:
            print(f"bar: {label:<36} {'PASS' if passed else 'MISS'}")
            ok &= passed
        for note in self.notes:
            print("note:", note)
        return ok


def settle() -> None:
    os.sync()
    time.sleep(0.5)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=1000, help="4 KiB files PUT then GET (default 1000)")
    p.add_argument("--propfind-files", type=int, default=10_000, help="files of the PROPFIND folder")
    p.add_argument("--rss-files", type=int, default=0, help="files of the folder of the RSS run (0: no RSS run)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--conns", type=int, default=1, help="connections the small PUTs and GETs are spread over")
    p.add_argument("--median", action="store_true")
    p.add_argument("--only", default="small,propfind,rss", help="subset of small,propfind,rss")
    p.add_argument("--server", default="cheroot", choices=("cheroot", "gunicorn"))
    p.add_argument("--no-rclone", action="store_true", help="leave rclone out")
    p.add_argument("--tmp-dir", default=None)
    p.add_argument("--keep", action="store_true", help="keep the temp dir and the servers' logs")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    only = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="hfdav-small-", dir=args.tmp_dir))
    run = Run(args, work)
    try:
        run.start()
        if "small" in only:
            run.small()
        if "propfind" in only:
            run.propfind()
        if "rss" in only and args.rss_files:
            run.rss()
        ok = run.report()
    except (u.HttpError, http.client.HTTPException, OSError, RuntimeError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        for srv in run.servers:
            print(f"--- {srv.name} log tail:\n{srv.log_tail()}", file=sys.stderr)
        return 2
    finally:
        for srv in run.servers:
            srv.stop()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
