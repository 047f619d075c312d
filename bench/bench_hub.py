"""Benchmark of the Hub backend against the Hub emulator, in one run on one machine.

Not a test. Three processes: the emulator, the gateway (``hfdav serve``), and this driver (the
client). It measures and prints:

* **raw**: the emulator's own speed from this process, through huggingface_hub (an LFS upload,
  ``preupload_lfs_files``: batch + PUT + verify, and a streaming Range GET of the resolve URL:
  the reference of the bars) and through a lean ``http.client`` (what the emulator can serve when
  the client costs almost nothing);
* **relay floor**: the leanest one-thread Python relay of that GET into a cache file and on to a
  client process, a floor for what any Python gateway that caches can do on this machine;
* **upload**: a PUT of ``--size`` bytes through the gateway, until every chunk is in the Hub's
  LFS storage (``uploaded``) and until it is in a commit (``committed``), as throughput and as a
  ratio of the raw upload; the PUT's own acknowledgement time (disk speed, async durability);
* **cold download**: the gateway restarted with an empty chunk cache, a GET of the whole file
  (every byte from the Hub), as a ratio of the raw Range GET; and a deep Range GET's first byte;
* **peak RSS** of the gateway process over the round trip (PUT, upload, cold GET);
* **Hub cost**: commits and Hub API calls (as the emulator counts them) per GiB, and per
  ``--small`` small files.

    .venv/bin/python bench/bench_hub.py                  # 5 GiB round trip, 1,000 small files
    .venv/bin/python bench/bench_hub.py --size 1GiB      # quicker
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _util as u  # noqa: E402

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HFDAV_HUB_TRANSPORT", "lfs")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from gateway.config import parse_size  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
MB = 1_000_000
TOKEN = "hf_test"
DRIVE_REPO = "testuser/bench-drive"  # the emulator's user: whoami says it may write there
RAW_REPO = "testuser/bench-raw"

#: Project bars (issue 3).
THROUGHPUT_MIN_RATIO = 0.7
RSS_MAX_BYTES = 300 * MB
SMALL_MAX_COMMITS = 20
#: How often the driver polls the gateway's /healthz while waiting for uploads (seconds).
POLL_S = 0.1


class Emulator:
    def __init__(self, data_dir: Path, log_path: Path):
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("_hub_emulator_proc.py")), str(data_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=u.ROOT,
        )
        line = self.proc.stdout.readline()
        if not line.startswith("URL "):
            raise RuntimeError(f"the emulator did not start: {line!r}")
        self.url = line.split()[1]
        self.pid = self.proc.pid

    def ask(self, command: str):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stats(self) -> dict:
        return self.ask("stats")

    def commits(self, repo: str) -> int:
        return self.ask(f"commits {repo}")

    def stop(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(20)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        self._log.close()


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuProbe:
    """CPU seconds used by named processes (and this driver) from now on."""

    def __init__(self, **pids: int):
        self.pids = pids
        self.start = {name: _proc_cpu(pid) for name, pid in pids.items()}
        self.start_self = time.process_time()

    def used(self) -> dict[str, float]:
        out = {name: _proc_cpu(pid) - self.start[name] for name, pid in self.pids.items()}
        out["driver"] = time.process_time() - self.start_self
        return out

    def per_gib(self, size: int) -> dict[str, float]:
        return {name: s * GiB / size for name, s in self.used().items()}


def _cpu_text(cpu: dict[str, float]) -> str:
    return ", ".join(f"{name} {s:.2f}" for name, s in cpu.items())


# -- raw speed ------------------------------------------------------------------------------
def raw_speed(emu: Emulator, src: Path, cpu: dict, results: dict) -> tuple[float, float]:
    """The emulator's raw speed: (LFS upload MB/s, Range GET MB/s) of ``src``, from this process.

    Each is measured twice, through huggingface_hub as it ships (returned: the reference of the
    bars, the client stack the gateway speaks to the Hub with) and through a lean client
    (``http.client``; the PUT body sent with ``sendfile``, the GET body received into one 1 MiB
    buffer: what the emulator can serve). Both figures and the CPU seconds per GiB of the
    emulator and of this driver go into ``results`` and ``cpu``."""
    from huggingface_hub import CommitOperationAdd, HfApi, constants, hf_hub_url
    from huggingface_hub.lfs import UploadInfo, post_lfs_batch_info
    from huggingface_hub.utils import build_hf_headers, http_stream_backoff

    constants.HF_HUB_DISABLE_XET = True
    api = HfApi(endpoint=emu.url, token=TOKEN)
    size = src.stat().st_size
    op = CommitOperationAdd("raw.bin", str(src))
    _ = op.upload_info.sha256  # hashing is not the Hub's speed: done before the clock starts

    # upload, the library: batch + PUT + verify
    api.create_repo(RAW_REPO, repo_type="dataset", private=True, exist_ok=True)
    probe = CpuProbe(emu=emu.pid)
    started = time.perf_counter()
    api.preupload_lfs_files(RAW_REPO, additions=[op], repo_type="dataset")
    lib_put = size / (time.perf_counter() - started) / MB
    cpu["raw_put_library"] = probe.per_gib(size)

    # upload, lean: the same object into another repo; the batch call is not timed
    lean_repo = RAW_REPO + "-lean"
    api.create_repo(lean_repo, repo_type="dataset", private=True, exist_ok=True)
    info = UploadInfo(size=size, sha256=op.upload_info.sha256, sample=b"")
    actions, errors, _ = post_lfs_batch_info([info], TOKEN, "dataset", lean_repo, endpoint=emu.url)
    assert not errors and "header" not in actions[0]["actions"]["upload"], "expected a single-part upload"
    href = urlsplit(actions[0]["actions"]["upload"]["href"])
    probe = CpuProbe(emu=emu.pid)
    started = time.perf_counter()
    conn = http.client.HTTPConnection(href.hostname, href.port, timeout=600)
    conn.putrequest("PUT", href.path + (f"?{href.query}" if href.query else ""), skip_accept_encoding=True)
    conn.putheader("Content-Length", str(size))
    conn.endheaders()
    with open(src, "rb") as f:
        conn.sock.sendfile(f)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 200, resp.status
    lean_put = size / (time.perf_counter() - started) / MB
    cpu["raw_put_lean"] = probe.per_gib(size)

    # download, the library: a streaming Range GET of the resolve URL
    api.create_commit(RAW_REPO, [op], commit_message="raw", repo_type="dataset")
    url = hf_hub_url(RAW_REPO, "raw.bin", repo_type="dataset", endpoint=emu.url)
    headers = {**build_hf_headers(token=TOKEN), "Range": f"bytes=0-{size - 1}"}
    probe = CpuProbe(emu=emu.pid)
    started = time.perf_counter()
    got = 0
    with http_stream_backoff("GET", url, headers=headers) as resp:
        for block in resp.iter_raw():  # pieces as they arrive (re-chunking would slow the client)
            got += len(block)
    lib_get = size / (time.perf_counter() - started) / MB
    cpu["raw_get_library"] = probe.per_gib(size)
    assert got == size, (got, size)

    # download, lean: the resolve URL's redirect followed by hand, the body read into one buffer
    probe = CpuProbe(emu=emu.pid)
    started = time.perf_counter()
    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=600)
    conn.request("GET", where.path, headers=headers)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    target = urlsplit(resp.getheader("Location") or url)
    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=600)
    conn.request("GET", target.path, headers={"Range": headers["Range"]})
    resp = conn.getresponse()
    assert resp.status == 206, resp.status
    buf = bytearray(1 << 20)
    got = 0
    while n := resp.readinto(buf):
        got += n
    conn.close()
    lean_get = size / (time.perf_counter() - started) / MB
    cpu["raw_get_lean"] = probe.per_gib(size)
    assert got == size, (got, size)

    results.update(raw_put_library_MBps=lib_put, raw_put_lean_MBps=lean_put,
                   raw_get_library_MBps=lib_get, raw_get_lean_MBps=lean_get)  # fmt: skip
    return lib_put, lib_get


def relay_floor(emu: Emulator, src: Path, cache_file: Path, cpu: dict) -> float:
    """MB/s of the leanest relay Python can be, as a floor for the gateway's cold read: the
    LFS object of ``src`` (uploaded by :func:`raw_speed`) is fetched with one ranged GET,
    received into one buffer, written into a cache file (fsynced and dropped from the page
    cache every 50 MiB, as the gateway does per chunk) and sent on to a client process that
    reads into a buffer. One thread, no HTTP server, no metadata, no checks."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    size = src.stat().st_size
    url = urlsplit(hf_hub_url(RAW_REPO, "raw.bin", repo_type="dataset", endpoint=emu.url))
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
    conn.request("GET", url.path, headers=build_hf_headers(token=TOKEN))
    resp = conn.getresponse()
    resp.read()
    conn.close()
    storage = urlsplit(resp.getheader("Location"))
    listener = socket.create_server(("127.0.0.1", 0))
    reader = subprocess.Popen(
        [sys.executable, "-c", "import socket,sys\n"
         f"s = socket.create_connection(('127.0.0.1', {listener.getsockname()[1]}))\n"
         "b = memoryview(bytearray(1 << 20)); n = 0\n"
         "while k := s.recv_into(b): n += k\n"
         "print(n)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, _ = listener.accept()
    listener.close()
    fd = os.open(cache_file, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    probe = CpuProbe(emu=emu.pid)
    started = time.perf_counter()
    conn = http.client.HTTPConnection(storage.hostname, storage.port, timeout=600)
    conn.request("GET", storage.path, headers={"Range": f"bytes=0-{size - 1}"})
    resp = conn.getresponse()
    written = synced = 0
    while n := resp.readinto(buf):
        os.pwrite(fd, view[:n], written)
        out.sendall(view[:n])
        written += n
        if written - synced >= 50 * MiB or written == size:
            os.fdatasync(fd)
            os.posix_fadvise(fd, synced, written - synced, os.POSIX_FADV_DONTNEED)
            synced = written
    out.close()
    received = int(reader.communicate(timeout=600)[0])
    seconds = time.perf_counter() - started
    cpu["relay_floor"] = probe.per_gib(size)
    conn.close()
    os.close(fd)
    cache_file.unlink()
    assert written == received == size, (written, received, size)
    return size / seconds / MB


# -- the gateway ----------------------------------------------------------------------------
def hub_env(emu: Emulator, data_dir: Path) -> dict:
    env = dict(os.environ)
    for key in ("WEBDAV_URL", "HFDAV_DATABASE_URL", "HFDAV_USERS"):
        env.pop(key, None)
    env.update(
        HF_DATASET_REPO=DRIVE_REPO,
        HF_TOKEN=TOKEN,
        HF_ENDPOINT=emu.url,
        HF_HOME=str(data_dir.parent / "hf-home"),
        SYS_TOKEN=u.PASSWORD,
        HFDAV_TRASH_DAYS="0",
        HFDAV_LOG_LEVEL=os.environ.get("HFDAV_LOG_LEVEL", "INFO"),
        HFDAV_COMMIT_INTERVAL=os.environ.get("HFDAV_COMMIT_INTERVAL", "5"),
    )
    return env


def start_gateway(workdir: Path, env: dict, log_name: str) -> u.Server:
    port = u.free_port()
    data = Path(env["HFDAV_DATA_DIR"])
    argv = [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    log = open(workdir / log_name, "wb")  # noqa: SIM115 - owned by the child from here on
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=u.ROOT, start_new_session=True)
    log.close()
    srv = u.Server("hfdav[hub]", proc, port, workdir / log_name, data)
    deadline = time.monotonic() + u.STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hfdav exited with {proc.returncode}:\n{srv.log_tail()}")
        try:
            if u.propfind(srv, "/", depth="0")[0] == 207:
                return srv
        except OSError:
            pass
        time.sleep(0.2)
    srv.stop()
    raise RuntimeError(f"hfdav did not answer:\n{srv.log_tail()}")


def store_status(srv: u.Server) -> dict:
    conn = srv.connect()
    try:
        conn.request("GET", "/healthz", headers={"Authorization": srv.auth})  # details need a login
        return json.loads(conn.getresponse().read())["checks"]["store"]
    finally:
        conn.close()


def wait_for(srv: u.Server, done, timeout: float = 7200) -> float:
    """Poll /healthz until ``done(status)``; returns the perf_counter time it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done(store_status(srv)):
            return time.perf_counter()
        time.sleep(POLL_S)
    raise RuntimeError(f"timed out waiting for the gateway: {store_status(srv)}")


def uploaded(st: dict) -> bool:
    return st["staged_bytes"] == 0


def committed(st: dict) -> bool:
    return st["staged_bytes"] == 0 and st["pending_changes"] == 0 and st["uncommitted_objects"] == 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=parse_size, default=5 * GiB, help="size of the round-trip file (default 5GiB)")
    p.add_argument("--raw-size", type=parse_size, default=GiB, help="size of the raw speed probe (default 1GiB)")
    p.add_argument("--small", type=int, default=1000, help="number of small files (default 1000)")
    p.add_argument("--workdir", help="keep everything under this directory (default: a temp dir, removed)")
    args = p.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hfdav-bench-hub-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {"size": args.size, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    emu = Emulator(workdir / "emulator", workdir / "emulator.log")
    try:
        print(f"raw speed probe ({args.raw_size / GiB:.2f} GiB) ...", flush=True)
        raw_src = u.make_random_file(workdir / "raw.bin", args.raw_size)
        cpu: dict[str, dict[str, float]] = {}
        results["cpu_s_per_GiB"] = cpu
        results["raw_put_MBps"], results["raw_get_MBps"] = raw_speed(emu, raw_src, cpu, results)
        results["relay_floor_MBps"] = relay_floor(emu, raw_src, workdir / "floor.cache", cpu)
        raw_src.unlink()

        big = u.make_random_file(workdir / "big.bin", args.size)
        env = hub_env(emu, workdir / "data")
        env["HFDAV_DATA_DIR"] = str(workdir / "data")
        srv = start_gateway(workdir, env, "gateway.log")
        try:
            stats0, commits0 = emu.stats(), emu.commits(DRIVE_REPO)
            print(f"PUT {args.size / GiB:.2f} GiB through the gateway ...", flush=True)
            with u.RssSampler(srv) as rss_up:
                probe = CpuProbe(emu=emu.pid, gateway=srv.proc.pid)
                started = time.perf_counter()
                u.put_file(srv, "/big.bin", big)
                acked = time.perf_counter()
                t_up = wait_for(srv, uploaded)
                cpu["upload"] = probe.per_gib(args.size)
                t_commit = wait_for(srv, committed)
            stats1, commits1 = emu.stats(), emu.commits(DRIVE_REPO)
        finally:
            srv.stop()
        results["put_ack_MBps"] = args.size / (acked - started) / MB
        results["upload_MBps"] = args.size / (t_up - started) / MB
        results["upload_committed_MBps"] = args.size / (t_commit - started) / MB
        gib = args.size / GiB
        results["commits_per_GiB"] = (commits1 - commits0) / gib
        results["api_calls_per_GiB"] = (stats1["api_calls"] - stats0["api_calls"]) / gib

        shutil.rmtree(workdir / "data" / "hub" / "cache", ignore_errors=True)
        srv = start_gateway(workdir, env, "gateway2.log")
        try:
            print("cold GET (empty cache: every byte from the Hub) ...", flush=True)
            results["range_ttfb_s"] = u.range_ttfb(srv, "/big.bin", int(args.size * 0.9), 4096)
            with u.RssSampler(srv) as rss_down:
                probe = CpuProbe(emu=emu.pid, gateway=srv.proc.pid)
                started = time.perf_counter()
                u.get_file(srv, "/big.bin", args.size)
                results["cold_get_MBps"] = args.size / (time.perf_counter() - started) / MB
                cpu["cold_get"] = probe.per_gib(args.size)

            print(f"{args.small} small files ...", flush=True)
            u.mkcol(srv, "/small")
            items = [(f"/small/f{i:05d}.txt", f"small file {i}\n".encode() * (1 + i % 50)) for i in range(args.small)]
            stats0, commits0 = emu.stats(), emu.commits(DRIVE_REPO)
            started = time.perf_counter()
            u.put_many_parallel(srv, items, 4)
            put_s = time.perf_counter() - started
            wait_for(srv, committed)
            stats1, commits1 = emu.stats(), emu.commits(DRIVE_REPO)
        finally:
            srv.stop()
        results["small_puts_per_s"] = args.small / put_s
        results["small_commits"] = commits1 - commits0
        results["small_api_calls"] = stats1["api_calls"] - stats0["api_calls"]
        results["peak_rss_bytes"] = max(rss_up.peak, rss_down.peak)
    finally:
        emu.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    r = results
    up_ratio = r["upload_MBps"] / r["raw_put_MBps"]
    down_ratio = r["cold_get_MBps"] / r["raw_get_MBps"]
    committed_ratio = r["upload_committed_MBps"] / r["raw_put_MBps"]
    up_lean = r["upload_MBps"] / r["raw_put_lean_MBps"]
    down_lean = r["cold_get_MBps"] / r["raw_get_lean_MBps"]
    down_floor = r["cold_get_MBps"] / r["relay_floor_MBps"]
    rows = [
        ("raw LFS upload, huggingface_hub", f"{r['raw_put_MBps']:.0f} MB/s", "reference of the bar"),
        ("raw LFS upload, lean client", f"{r['raw_put_lean_MBps']:.0f} MB/s", ""),
        ("raw Range GET, huggingface_hub", f"{r['raw_get_MBps']:.0f} MB/s", "reference of the bar"),
        ("raw Range GET, lean client", f"{r['raw_get_lean_MBps']:.0f} MB/s", "what the emulator can serve"),
        ("relay floor (GET -> cache file -> client)", f"{r['relay_floor_MBps']:.0f} MB/s",
         "the leanest one-thread Python relay"),
        ("PUT acknowledged (staged, fsynced)", f"{r['put_ack_MBps']:.0f} MB/s", ""),
        ("upload through the gateway", f"{r['upload_MBps']:.0f} MB/s",
         _bar(up_ratio, THROUGHPUT_MIN_RATIO) + f"; lean client {up_lean:.2f}"),
        ("  ... until committed", f"{r['upload_committed_MBps']:.0f} MB/s", f"ratio {committed_ratio:.2f}"),
        ("cold download through the gateway", f"{r['cold_get_MBps']:.0f} MB/s",
         _bar(down_ratio, THROUGHPUT_MIN_RATIO) + f"; lean client {down_lean:.2f}, floor {down_floor:.2f}"),
        ("Range GET at 90 %, first byte (cold)", f"{r['range_ttfb_s'] * 1000:.0f} ms", ""),
        (f"peak RSS, {args.size / GiB:.2f} GiB round trip", f"{r['peak_rss_bytes'] / MB:.0f} MB",
         "ok" if r["peak_rss_bytes"] < RSS_MAX_BYTES else f"FAILS (< {RSS_MAX_BYTES // MB} MB)"),
        ("Hub commits per GiB", f"{r['commits_per_GiB']:.1f}", ""),
        ("Hub API calls per GiB", f"{r['api_calls_per_GiB']:.1f}", ""),
        (f"{args.small} small files: PUTs per second", f"{r['small_puts_per_s']:.0f}", ""),
        (f"{args.small} small files: Hub commits", f"{r['small_commits']}",
         "ok" if r["small_commits"] <= math.ceil(SMALL_MAX_COMMITS * args.small / 1000) else "FAILS"),
        (f"{args.small} small files: Hub API calls", f"{r['small_api_calls']}", ""),
    ]  # fmt: skip
    rows += [(f"CPU s/GiB, {phase}", "", _cpu_text(used)) for phase, used in r["cpu_s_per_GiB"].items()]
    print(f"\nhfdav Hub backend benchmark ({r['machine']}, {args.size / GiB:.2f} GiB file)")
    width = max(len(name) for name, _, _ in rows)
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>12}  {note}")
    print(json.dumps(results, indent=1))
    return 0


def _bar(ratio: float, minimum: float) -> str:
    return f"ratio {ratio:.2f} ({'ok' if ratio >= minimum else f'FAILS, bar {minimum}'})"


if __name__ == "__main__":
    raise SystemExit(main())
