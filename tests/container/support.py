"""Helpers for the deployment tests: boot.py (the container entry point) run on this machine,
a stock WsgiDAV server as a backup target, litmus, and a sampler of process memory.

Everything talks over the network or reads /proc; nothing here imports the gateway.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.e2e.support import Davfs2Mount, Server, curl, free_port, require_davfs2, require_tool  # noqa: F401 - re-exported

REPO_ROOT = Path(__file__).resolve().parents[2]
BOOT = REPO_ROOT / "boot.py"
ONLINE_BANNER = "hfdav online"

#: How long boot.py may take to print the banner, and to exit after SIGTERM (drain included).
BOOT_TIMEOUT_S = 120
STOP_TIMEOUT_S = 120
LITMUS_TIMEOUT_S = 600
LITMUS_GROUPS = ("basic", "copymove", "props", "locks", "http")
#: ``<- summary for `basic': of 16 tests run: 16 passed, 0 failed. 100.0%``
LITMUS_SUMMARY_RE = re.compile(r"summary for `(\w+)': of (\d+) tests run: (\d+) passed, (\d+) failed")
MiB = 1 << 20

#: Environment variables of the gateway that must not leak from the caller into a test process.
_GATEWAY_ENV = re.compile(r"^(HFDAV_|SYS_TOKEN$|HF_|WEBDAV_|SYNC_INTERVAL$|PORT$)")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not _GATEWAY_ENV.match(k)}
    env.update(extra)
    return env


@dataclass
class Booted(Server):
    """One running boot.py: nginx on ``port`` in front of the gateway, the share under ``prefix``."""

    prefix: str = "/dav"

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The share's URL, ending in ``/``."""
        return f"{self.base}{self.prefix}/"

    def shutdown(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then wait; returns the exit status (fails the test if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            pytest.fail(f"boot.py did not exit within {timeout}s of SIGTERM:\n{self.log_text()[-5000:]}")


def start_boot(workdir: Path, *, data_dir: Path | None = None, env: dict[str, str] | None = None,
               password: str | None = None, wait: bool = True) -> Booted:  # fmt: skip
    """Run boot.py with its own ports, data dir and log; wait for the online banner."""
    name = uuid.uuid4().hex[:8]
    data_dir = data_dir or workdir / f"data-{name}"
    log_path = workdir / f"boot-{name}.log"
    password = password or "pw-" + uuid.uuid4().hex[:12]
    port = free_port()
    full_env = clean_env(
        PORT=str(port),
        HFDAV_PORT=str(free_port()),
        HFDAV_DATA_DIR=str(data_dir),
        SYS_TOKEN=password,
        HFDAV_THREADS="16",
        HOME=str(workdir),
    )
    full_env.update(env or {})
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(BOOT)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=full_env, cwd=workdir, start_new_session=True,
        )  # fmt: skip
    booted = Booted("boot", "127.0.0.1", port, "admin", password, data_dir, log_path, proc)
    if wait:
        wait_for_banner(booted)
    return booted


def wait_for_banner(booted: Booted, timeout: float = BOOT_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while ONLINE_BANNER not in booted.log_text():
        if booted.proc.poll() is not None:
            pytest.fail(f"boot.py exited with {booted.proc.returncode}:\n{booted.log_text()[-5000:]}")
        if time.monotonic() > deadline:
            booted.shutdown()
            pytest.fail(f"boot.py not online after {timeout}s:\n{booted.log_text()[-5000:]}")
        time.sleep(0.2)


class WebDavTarget:
    """Stock WsgiDAV serving a directory anonymously: the remote end of the metadata backup."""

    def __init__(self, root: Path, port: int | None = None):
        self.root = root
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = root.parent / f"wsgidav-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> WebDavTarget:
        self.root.mkdir(parents=True, exist_ok=True)
        exe = Path(sys.executable).parent / "wsgidav"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(exe), "--host", "127.0.0.1", "--port", str(self.port), "--root", str(self.root),
                 "--auth", "anonymous", "--no-config", "-q"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.options(self.url, timeout=2)
                return self
            except requests.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"wsgidav did not start: {self.log_path.read_text(errors='replace')}")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def files(self, folder: str) -> list[str]:
        path = self.root / folder
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


def run_litmus(url: str, user: str, password: str, cwd: Path) -> dict[str, tuple[int, int]]:
    """Run every litmus group; ``{group: (passed, run)}``. Fails the test on a missing group,
    a failure or a skipped test, printing litmus' output."""
    litmus = require_tool("litmus")
    proc = subprocess.run([litmus, "-k", url, user, password], cwd=cwd, capture_output=True, text=True,
                          timeout=LITMUS_TIMEOUT_S)  # fmt: skip
    out = proc.stdout + proc.stderr
    results = {m.group(1): (int(m.group(3)), int(m.group(2))) for m in LITMUS_SUMMARY_RE.finditer(out)}
    print("litmus: " + ", ".join(f"{g} {p}/{n}" for g, (p, n) in results.items()))
    assert set(results) == set(LITMUS_GROUPS), f"groups reported: {sorted(results)}\n{out}"
    for group, (passed, run) in results.items():
        assert passed == run, f"{group}: {passed}/{run} passed\n{out}"
    assert "FAIL" not in out and "skipped" not in out, out
    assert proc.returncode == 0, out
    return results


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def pids_matching(pattern: str) -> list[int]:
    """Pids whose command line matches ``pattern`` (a regex over the NUL-joined argv)."""
    rx = re.compile(pattern)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if rx.search(cmd):
            found.append(int(entry.name))
    return found


def descendants(root_pid: int) -> list[int]:
    """Every process below ``root_pid`` (children, grandchildren, …)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


class PeakRss:
    """Samples, in a thread, the RSS of groups of processes and what they spool to disk.

    ``groups`` maps a name to a callable returning the pids of that group (re-evaluated each
    sample, so workers that appear later are included); ``peaks`` maps each group to the largest
    RSS (KiB) one of its members had. ``spooled`` is the most bytes ever held in files under
    ``spool_dirs`` that those processes had open (nginx unlinks its temp files as it creates
    them, so only the open descriptors show a body it buffered instead of streaming).
    """

    INTERVAL_S = 0.05

    def __init__(self, groups: dict[str, callable], spool_dirs: tuple[Path, ...] = ()):
        self.groups = groups
        self.spool_dirs = tuple(str(d) for d in spool_dirs)
        self.peaks = dict.fromkeys(groups, 0)
        self.spooled = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.INTERVAL_S):
            spooled = 0
            for name, pids in self.groups.items():
                for pid in pids():
                    self.peaks[name] = max(self.peaks[name], rss_kib(pid))
                    if self.spool_dirs:
                        spooled += self._spooled_by(pid)
            self.spooled = max(self.spooled, spooled)

    def _spooled_by(self, pid: int) -> int:
        total = 0
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith(self.spool_dirs):
                        total += os.stat(f"/proc/{pid}/fd/{fd}").st_size
        return total


def make_random_file(path: Path, size: int, seed: int = 1) -> str:
    """Write ``size`` pseudo-random bytes (fast: a 1 MiB random block rotated) and return the
    sha256. Each MiB differs, so chunk de-duplication cannot shortcut the transfer."""
    import random

    rng = random.Random(seed)
    block = rng.randbytes(MiB)
    digest = hashlib.sha256()
    with path.open("wb") as f:
        written = 0
        i = 0
        while written < size:
            piece = (i.to_bytes(8, "big") + block[8:])[: size - written]
            f.write(piece)
            digest.update(piece)
            written += len(piece)
            i += 1
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            digest.update(block)
    return digest.hexdigest()


#: Memory bounds for a 1 GiB transfer: a few buffers per request, nothing near the body size.
NGINX_WORKER_RSS_LIMIT_KIB = 64 * 1024
GATEWAY_RSS_LIMIT_KIB = 400 * 1024
GiB = 1 << 30


@dataclass
class RoundTrip:
    """Figures of :func:`one_gib_round_trip`."""

    put_s: float
    get_s: float
    put: PeakRss
    get: PeakRss

    def summary(self) -> str:
        phases = (("PUT", self.put), ("GET", self.get))
        peaks = ", ".join(f"{phase} {name} {kib / 1024:.1f} MiB"
                          for phase, rss in phases for name, kib in rss.peaks.items())
        return f"PUT {GiB / self.put_s / 1e6:.0f} MB/s, GET {GiB / self.get_s / 1e6:.0f} MB/s; peak RSS {peaks}"

    def assert_bounded(self) -> None:
        """nginx streamed both ways (nothing spooled) and neither nginx nor the gateway grew
        anywhere near the body size."""
        for rss in (self.put, self.get):
            assert 0 < rss.peaks["nginx worker"] < NGINX_WORKER_RSS_LIMIT_KIB, rss.peaks
            assert 0 < rss.peaks["gateway"] < GATEWAY_RSS_LIMIT_KIB, rss.peaks
            assert rss.spooled == 0, f"nginx spooled {rss.spooled} bytes to disk"


def one_gib_round_trip(server, workdir: Path, root_pid: int, spool_dirs: tuple[Path, ...]) -> RoundTrip:
    """PUT 1 GiB of random data with curl, GET it back (sha256 compared) and read a Range deep
    inside it, while sampling nginx's workers and the gateway (the processes below
    ``root_pid``) and nginx's open temp files under ``spool_dirs``. The file is deleted after."""
    source = workdir / "big.bin"
    digest = make_random_file(source, GiB)
    groups = {
        "nginx worker": lambda: [p for p in descendants(root_pid) if "nginx: worker" in cmdline(p)],
        "gateway": lambda: [p for p in descendants(root_pid) if "gunicorn" in cmdline(p)],
    }
    url = server.url_for("big.bin")
    user = f"{server.user}:{server.password}"
    with PeakRss(groups, spool_dirs) as put_rss:
        started = time.monotonic()
        r = curl("--basic", "-u", user, "-T", str(source), url, timeout=900)
        put_s = time.monotonic() - started
    assert r.status in (201, 204), r.body[:500]

    back = workdir / "back.bin"
    with PeakRss(groups, spool_dirs) as get_rss:
        started = time.monotonic()
        got = subprocess.run([require_tool("curl"), "-sS", "--basic", "-u", user, "-o", str(back), "-w", "%{http_code}",
                              url], capture_output=True, text=True, timeout=900)  # fmt: skip
        get_s = time.monotonic() - started
    assert got.stdout == "200", got.stderr
    assert sha256_file(back) == digest, "the 1 GiB body came back different"
    back.unlink()

    offset = GiB - 3 * MiB - 12345
    r = curl("--basic", "-u", user, "-r", f"{offset}-{offset + MiB - 1}", url)
    assert r.status == 206
    with source.open("rb") as f:
        f.seek(offset)
        assert r.body == f.read(MiB)
    source.unlink()
    requests.delete(url, auth=server.auth, timeout=60)
    return RoundTrip(put_s, get_s, put_rss, get_rss)
