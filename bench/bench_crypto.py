"""Throughput of the encrypted store against the plain one.

Not a test. Two levels:

* ``--level files`` (default): through the file service in this process. Stores one large file
  (PUT path: chunking, hashing, ``store.adopt``) and reads it back (GET path: VersionReader over
  ``store.open_range``) with a LocalStore, then the same inside an EncryptedStore for each
  segment size asked. Reads come from the page cache, so this is the CPU-bound worst case.
* ``--level http``: ``hfdav serve`` (cheroot) as a child process, one PUT and one GET of the file
  over HTTP, without and with ``HFDAV_ENCRYPTION_KEY`` (default segment size): what a client sees.

Prints MB/s and the ratio encrypted / plain (project bar: ≥ 0.7), from wall-clock time and
from CPU time (this process, plus the server's at the http level): on a shared machine the CPU
ratio is the steadier figure, and it is the ratio an otherwise idle, CPU-bound machine would
see. Repetitions alternate plain and encrypted runs; medians are printed.

    .venv/bin/python bench/bench_crypto.py                          # 1 GiB, fsync on, 3 reps
    .venv/bin/python bench/bench_crypto.py --no-fsync --segments 64KiB,1MiB
    .venv/bin/python bench/bench_crypto.py --level http
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.config import parse_size  # noqa: E402
from gateway.crypto_keys import DEFAULT_SEGMENT_SIZE, Keyring, parse_encryption_key  # noqa: E402
from gateway.files import FileService, chunk_hasher  # noqa: E402
from gateway.meta.repo import MetadataRepository  # noqa: E402
from gateway.store.encrypted import EncryptedStore  # noqa: E402
from gateway.store.local import LocalStore  # noqa: E402

MB = 1_000_000
MiB = 1 << 20
#: Size of each write and read, as WsgiDAV's block size (gateway/dav/app.py).
IO_BLOCK = MiB
#: Random source the file is cut from; its odd length keeps chunks distinct (no dedup).
SOURCE_LEN = 64 * MiB + 4093
#: Project bar (issue 5).
MIN_RATIO = 0.7
#: Seconds the server gets to print its "serving" line.
STARTUP_TIMEOUT_S = 60
PASSWORD = "bench-secret"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    """Seconds spent storing (w) and reading back (r) the file: wall clock and CPU."""

    wall_w: float
    wall_r: float
    cpu_w: float
    cpu_r: float


class Clock:
    """Wall and CPU time of this process and, optionally, of a child process."""

    def __init__(self, pid: int | None = None):
        self._pid = pid

    def now(self) -> tuple[float, float]:
        cpu = time.process_time()
        if self._pid is not None:
            with open(f"/proc/{self._pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
        return time.perf_counter(), cpu


def sample(t0: tuple[float, float], t1: tuple[float, float], t2: tuple[float, float]) -> Sample:
    return Sample(t1[0] - t0[0], t2[0] - t1[0], t1[1] - t0[1], t2[1] - t1[1])


def run_once(workdir: Path, size: int, chunk_size: int, segment: int | None, fsync: bool, source: bytes):
    """Store ``size`` bytes and read them back through the file service; ``segment`` None: plain."""
    root = Path(tempfile.mkdtemp(dir=workdir))
    try:
        store = LocalStore(root / "objects", fsync=fsync)
        hasher = chunk_hasher
        if segment is not None:
            ring = Keyring.create(parse_encryption_key(os.urandom(32).hex()), segment_size=segment)
            store = EncryptedStore(store, ring)
            hasher = store.object_hasher
        repo = MetadataRepository.open(f"sqlite:///{root / 'meta.sqlite3'}")
        files = FileService(repo, store, tmp_dir=root / "tmp", chunk_size=chunk_size, object_hasher=hasher)
        view, span = memoryview(source), len(source) - IO_BLOCK

        clock = Clock()
        t0 = clock.now()
        session = files.open_write("/big.bin", expected_length=size)
        done, i = 0, 0
        while done < size:
            n = min(IO_BLOCK, size - done)
            at = (i * IO_BLOCK) % span
            session.write(view[at : at + n])
            done, i = done + n, i + 1
        node = session.commit()
        t1 = clock.now()
        with files.open_read(node) as reader:
            got = 0
            while True:
                block = reader.read(IO_BLOCK)
                if not block:
                    break
                got += len(block)
        t2 = clock.now()
        if got != size:
            raise SystemExit(f"read {got} of {size} bytes")
        expected = -(-size // chunk_size)
        stored = sum(1 for _ in store.list_ids())
        if stored != expected:
            raise SystemExit(f"{stored} objects stored, {expected} expected: the source repeats")
        repo.close()
        return sample(t0, t1, t2)
    finally:
        shutil.rmtree(root, ignore_errors=True)


class _Body:
    """File-like request body: ``size`` bytes cut from ``source`` like :func:`run_once` does."""

    def __init__(self, source: bytes, size: int):
        self._view, self._span, self._size, self._done, self._i = memoryview(source), len(source) - IO_BLOCK, size, 0, 0

    def read(self, n: int = -1) -> bytes:
        n = min(IO_BLOCK if n is None or n < 0 else n, IO_BLOCK, self._size - self._done)
        if n <= 0:
            return b""
        at = (self._i * IO_BLOCK) % self._span
        self._done, self._i = self._done + n, self._i + 1
        return self._view[at : at + n].tobytes()


def run_http(workdir: Path, size: int, chunk_size: int, segment: int | None, fsync: bool, source: bytes):
    """One PUT and one GET against ``hfdav serve``; ``segment`` None: no encryption."""
    root = Path(tempfile.mkdtemp(dir=workdir))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HFDAV_", "WEBDAV_"))}
    env.update(SYS_TOKEN=PASSWORD, HFDAV_CHUNK_SIZE=str(chunk_size), HFDAV_LOG_LEVEL="WARNING")
    if segment is not None:
        env["HFDAV_ENCRYPTION_KEY"] = os.urandom(32).hex()
    argv = [sys.executable, "-m", "gateway.cli", "serve", "--port", "0", "--data-dir", str(root / "data")]
    if not fsync:
        raise SystemExit("--level http measures the server as shipped (fsync on)")
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                raise SystemExit(f"server exited: {proc.wait()}")
            m = re.search(r"serving http://[^:]+:(\d+)/", line)
            port = int(m.group(1)) if m else None
        auth = "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1800, blocksize=IO_BLOCK)
        clock = Clock(proc.pid)
        t0 = clock.now()
        conn.request(
            "PUT", "/big.bin", body=_Body(source, size), headers={"Authorization": auth, "Content-Length": str(size)}
        )
        resp = conn.getresponse()
        resp.read()
        if resp.status not in (200, 201, 204):
            raise SystemExit(f"PUT answered {resp.status}")
        t1 = clock.now()
        conn.request("GET", "/big.bin", headers={"Authorization": auth})
        resp = conn.getresponse()
        got = 0
        while True:
            block = resp.read(IO_BLOCK)
            if not block:
                break
            got += len(block)
        t2 = clock.now()
        conn.close()
        if resp.status != 200 or got != size:
            raise SystemExit(f"GET answered {resp.status} with {got} of {size} bytes")
        return sample(t0, t1, t2)
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=parse_size, default=parse_size("1GiB"))
    p.add_argument("--chunk-size", type=parse_size, default=parse_size("50MiB"))
    p.add_argument("--segments", default="64KiB,1MiB", help="segment sizes to measure, comma-separated")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--no-fsync", action="store_true", help="LocalStore without fsync (CPU-bound worst case)")
    p.add_argument("--dir", default=None, help="work directory (default: system temp)")
    p.add_argument("--level", choices=("files", "http"), default="files")
    args = p.parse_args()

    segments = [parse_size(s) for s in args.segments.split(",") if s]
    if args.level == "http":
        segments = [DEFAULT_SEGMENT_SIZE]
    run = run_once if args.level == "files" else run_http
    workdir = Path(args.dir or tempfile.gettempdir())
    source = os.urandom(SOURCE_LEN)
    configs: list[tuple[str, int | None]] = [("plain", None)] + [(f"enc seg={s // 1024}KiB", s) for s in segments]
    results: dict[str, list[Sample]] = {name: [] for name, _ in configs}
    fsync = not args.no_fsync
    print(
        f"level {args.level}: file {args.size / MiB:.0f} MiB, chunk {args.chunk_size / MiB:.0f} MiB, "
        f"fsync {'on' if fsync else 'off'}, {args.reps} reps, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    for rep in range(args.reps):
        for name, seg in configs:
            got = run(workdir, args.size, args.chunk_size, seg, fsync, source)
            results[name].append(got)
            mbs = [args.size / x / MB for x in (got.wall_w, got.wall_r)]
            print(
                f"  rep {rep + 1} {name:18s} write {mbs[0]:6.0f} MB/s  read {mbs[1]:6.0f} MB/s  "
                f"(CPU s: write {got.cpu_w:.2f}, read {got.cpu_r:.2f})",
                flush=True,
            )

    def med(name: str, attr: str) -> float:
        return statistics.median(getattr(x, attr) for x in results[name])

    heads = ("write MB/s", "read MB/s", "w+r MB/s", "wall w", "wall r", "wall w+r", "CPU w", "CPU r", "CPU w+r")
    print("\nmedians; ratios are encrypted / plain throughput (1/time), from wall clock and from CPU time")
    print(f"{'store':18s}" + "".join(f" {h:>10s}" for h in heads))
    base = {a: med("plain", a) for a in ("wall_w", "wall_r", "cpu_w", "cpu_r")}
    cpu_ok = wall_ok = True
    for name, _seg in configs:
        m = {a: med(name, a) for a in base}
        ratios = (
            base["wall_w"] / m["wall_w"],
            base["wall_r"] / m["wall_r"],
            (base["wall_w"] + base["wall_r"]) / (m["wall_w"] + m["wall_r"]),
            base["cpu_w"] / m["cpu_w"],
            base["cpu_r"] / m["cpu_r"],
            (base["cpu_w"] + base["cpu_r"]) / (m["cpu_w"] + m["cpu_r"]),
        )
        if name != "plain":
            wall_ok = wall_ok and min(ratios[:3]) >= MIN_RATIO
            cpu_ok = cpu_ok and min(ratios[3:]) >= MIN_RATIO
        speeds = (
            args.size / m["wall_w"] / MB,
            args.size / m["wall_r"] / MB,
            2 * args.size / (m["wall_w"] + m["wall_r"]) / MB,
        )
        cells = [f"{v:.0f}" for v in speeds] + [f"{r:.2f}" for r in ratios]
        print(f"{name:18s}" + "".join(f" {c:>10s}" for c in cells))
    verdict = {True: "met", False: "NOT met"}
    print(f"\nbar (every ratio ≥ {MIN_RATIO}): wall clock {verdict[wall_ok]}, CPU time {verdict[cpu_ok]}")
    return 0 if wall_ok or cpu_ok else 1


if __name__ == "__main__":
    sys.exit(main())
