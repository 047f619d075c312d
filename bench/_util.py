"""Helpers of the benchmark: server processes, memory sampling, and a streaming HTTP client.

The same client code talks to both servers, so its own cost is paid equally by each. Bodies
are streamed in :data:`IO_BLOCK` pieces from files and discarded on arrival: the client never
holds a large body in memory.
"""

from __future__ import annotations

import base64
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Size of the client's reads and writes; equal to the servers' WsgiDAV ``block_size``
#: (gateway/dav/app.py IO_BLOCK_SIZE) so neither side is starved by the other.
IO_BLOCK = 1 << 20

#: Seconds a server gets to start answering before the benchmark gives up.
STARTUP_TIMEOUT_S = 60

#: Socket timeout of the client: long enough for a multi-GiB body on a slow, shared machine.
CLIENT_TIMEOUT_S = 1800

#: How often the RSS sampler reads /proc (seconds).
RSS_POLL_S = 0.05

#: Bytes at the start of every block that a PUT overwrites with a per-upload tag, so that no
#: two uploads have equal chunks (a content-addressed store would otherwise skip storing them).
TAG_LEN = 24

_CLK_TCK = os.sysconf("SC_CLK_TCK")

ROOT = Path(__file__).resolve().parent.parent
USER = "admin"
PASSWORD = "bench-secret"


def auth_header(user: str = USER, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_random_file(path: Path, size: int) -> Path:
    """Write ``size`` random bytes to ``path`` one block at a time (kept if already there)."""
    if path.exists() and path.stat().st_size == size:
        return path
    with open(path, "wb") as f:
        left = size
        while left:
            piece = os.urandom(min(IO_BLOCK, left))
            f.write(piece)
            left -= len(piece)
    return path


# -- servers --------------------------------------------------------------------------------
@dataclass
class Server:
    """A server under test, running as a child process."""

    name: str
    proc: subprocess.Popen
    port: int
    log_path: Path
    data_dir: Path
    host: str = "127.0.0.1"
    auth: str = field(default_factory=auth_header)

    def pids(self) -> list[int]:
        """The server process and all its descendants (gunicorn: master and worker)."""
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as f:
                        todo.extend(int(c) for c in f.read().split())
            except OSError:
                continue
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the process tree (all threads)."""
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
            except (OSError, IndexError, ValueError):
                continue
        return total / _CLK_TCK

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=CLIENT_TIMEOUT_S)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_hfdav(workdir: Path, *, server: str = "cheroot", no_fsync: bool = False) -> Server:
    """``hfdav serve`` on a free port with a fresh data dir; user ``admin`` (SYS_TOKEN)."""
    port = free_port()
    data = workdir / "hfdav-data"
    data.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SYS_TOKEN=PASSWORD, HFDAV_LOG_LEVEL=os.environ.get("HFDAV_LOG_LEVEL", "INFO"))
    for key in ("HF_TOKEN", "HF_DATASET_REPO", "WEBDAV_URL", "HFDAV_DATABASE_URL", "HFDAV_USERS"):
        env.pop(key, None)  # the benchmark measures the local gateway only
    args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data), "--server", server]
    if no_fsync:
        argv = [sys.executable, str(Path(__file__).with_name("_serve_nofsync.py")), *args]
    else:
        argv = [sys.executable, "-m", "gateway.cli", *args]
    name = f"hfdav[{server}{', no fsync' if no_fsync else ''}]"
    return _launch(name, argv, env, workdir / "hfdav.log", port, data)


STOCK_CONF = """\
host: 127.0.0.1
port: {port}
server: cheroot
server_args:
  numthreads: {threads}
provider_mapping:
  "/": "{root}"
http_authenticator:
  domain_controller: null
  accept_basic: true
  accept_digest: true
  default_to_digest: true
simple_dc:
  user_mapping:
    "*":
      "{user}":
        password: "{password}"
        roles: [editor]
property_manager: true
lock_storage: true
block_size: {block}
verbose: 3
dir_browser:
  enable: true
"""

#: Request threads of hfdav's cheroot server (gateway/config.py default); stock gets the same.
SERVER_THREADS = 32


def start_stock(workdir: Path) -> Server:
    """Stock ``wsgidav`` (cheroot, FilesystemProvider) on a free port, same block size and auth style."""
    port = free_port()
    root = workdir / "stock-root"
    root.mkdir(parents=True, exist_ok=True)
    conf = workdir / "wsgidav.yaml"
    conf.write_text(
        STOCK_CONF.format(
            port=port, threads=SERVER_THREADS, root=root, user=USER, password=PASSWORD, block=IO_BLOCK
        )
    )
    argv = [sys.executable, "-m", "wsgidav.server.server_cli", "-c", str(conf)]
    return _launch("stock wsgidav", argv, dict(os.environ), workdir / "stock.log", port, root)


def _launch(name: str, argv: list[str], env: dict, log_path: Path, port: int, data: Path) -> Server:
    log = open(log_path, "wb")  # noqa: SIM115 - owned by the child from here on
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    log.close()
    srv = Server(name, proc, port, log_path, data)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{srv.log_tail()}")
        try:
            status, _, _ = propfind(srv, "/", depth="0")
            if status == 207:
                return srv
        except OSError:
            pass
        time.sleep(0.2)
    srv.stop()
    raise RuntimeError(f"{name} did not answer within {STARTUP_TIMEOUT_S}s:\n{srv.log_tail()}")


# -- memory ---------------------------------------------------------------------------------
def _status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Peak resident memory of a server's process tree while a ``with`` block runs.

    Two sources, the larger wins: the sum of ``VmRSS`` over the tree sampled every
    :data:`RSS_POLL_S`, and each process's ``VmHWM`` (kernel-kept peak, reset on entry through
    ``/proc/PID/clear_refs`` when permitted; otherwise it includes start-up).
    """

    def __init__(self, server: Server):
        self.server = server
        self.peak_sampled = 0
        self.peak_hwm = 0
        self.hwm_reset = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self.hwm_reset = all(self._clear_refs(pid) for pid in self.server.pids())
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_hwm = sum(_status_kib(pid, "VmHWM:") for pid in self.server.pids()) * 1024

    @property
    def peak(self) -> int:
        return max(self.peak_sampled, self.peak_hwm if self.hwm_reset else 0)

    @staticmethod
    def _clear_refs(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def _run(self) -> None:
        while not self._stop.is_set():
            total = sum(_status_kib(pid, "VmRSS:") for pid in self.server.pids()) * 1024
            self.peak_sampled = max(self.peak_sampled, total)
            self._stop.wait(RSS_POLL_S)


# -- client ---------------------------------------------------------------------------------
class HttpError(RuntimeError):
    pass


def _check(resp: http.client.HTTPResponse, ok: tuple[int, ...], what: str) -> None:
    if resp.status not in ok:
        body = resp.read(2000)
        raise HttpError(f"{what}: HTTP {resp.status} {resp.reason}: {body[:500]!r}")


def put_file(srv: Server, url: str, src: Path, *, tag: bytes = b"") -> int:
    """Stream ``src`` as the body of a PUT; with ``tag``, each block starts with a unique tag."""
    size = src.stat().st_size
    conn = srv.connect()
    try:
        conn.putrequest("PUT", url, skip_accept_encoding=True)
        conn.putheader("Authorization", srv.auth)
        conn.putheader("Content-Length", str(size))
        conn.putheader("Content-Type", "application/octet-stream")
        conn.endheaders()
        buf = bytearray(IO_BLOCK)
        view = memoryview(buf)
        block_no = 0
        with open(src, "rb", buffering=0) as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                if tag and n >= TAG_LEN:
                    buf[:TAG_LEN] = (tag + b"%012d" % block_no).ljust(TAG_LEN, b".")[:TAG_LEN]
                conn.sock.sendall(view[:n])
                block_no += 1
        resp = conn.getresponse()
        _check(resp, (200, 201, 204), f"PUT {url}")
        resp.read()
        return size
    finally:
        conn.close()


def get_file(srv: Server, url: str, expected: int) -> int:
    """GET ``url``, reading the body in blocks and discarding it; returns the byte count."""
    conn = srv.connect()
    try:
        conn.request("GET", url, headers={"Authorization": srv.auth})
        resp = conn.getresponse()
        _check(resp, (200,), f"GET {url}")
        buf = bytearray(IO_BLOCK)
        got = 0
        while True:
            n = resp.readinto(buf)
            if not n:
                break
            got += n
        if got != expected:
            raise HttpError(f"GET {url}: got {got} bytes, expected {expected}")
        return got
    finally:
        conn.close()


def range_ttfb(srv: Server, url: str, offset: int, length: int) -> float:
    """Seconds from sending a Range GET to holding the first body byte (on a new connection)."""
    conn = srv.connect()
    try:
        conn.connect()
        started = time.perf_counter()
        conn.request(
            "GET", url, headers={"Authorization": srv.auth, "Range": f"bytes={offset}-{offset + length - 1}"}
        )
        resp = conn.getresponse()
        _check(resp, (206,), f"Range GET {url}")
        first = resp.read(1)
        elapsed = time.perf_counter() - started
        rest = resp.read()
        if len(first) + len(rest) != length:
            raise HttpError(f"Range GET {url}: got {len(first) + len(rest)} bytes, expected {length}")
        return elapsed
    finally:
        conn.close()


#: The end tag of a multistatus ``response`` element, whatever its prefix (Apache's carry attributes
#: in the start tag, so start tags cannot be counted as easily).
_RESPONSE_END = re.compile(rb"</(?:[A-Za-z0-9_.-]+:)?response\s*>")


def propfind(srv: Server, url: str, *, depth: str, body: bytes = b"") -> tuple[int, int, bytes]:
    """PROPFIND; returns (status, number of <response> elements, body)."""
    conn = srv.connect()
    try:
        headers = {"Authorization": srv.auth, "Depth": depth, "Content-Length": str(len(body))}
        if body:
            headers["Content-Type"] = 'application/xml; charset="utf-8"'
        conn.request("PROPFIND", url, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, len(_RESPONSE_END.findall(data)), data
    finally:
        conn.close()


def mkcol(srv: Server, url: str) -> None:
    conn = srv.connect()
    try:
        conn.request("MKCOL", url, headers={"Authorization": srv.auth, "Content-Length": "0"})
        resp = conn.getresponse()
        _check(resp, (201, 405), f"MKCOL {url}")  # 405: already there
        resp.read()
    finally:
        conn.close()


def delete(srv: Server, url: str) -> None:
    conn = srv.connect()
    try:
        conn.request("DELETE", url, headers={"Authorization": srv.auth})
        resp = conn.getresponse()
        _check(resp, (200, 204, 404), f"DELETE {url}")
        resp.read()
    finally:
        conn.close()


def put_many(srv: Server, items: list[tuple[str, bytes]]) -> None:
    """Sequential PUTs of small bodies over one keep-alive connection (reconnects if closed)."""
    conn = srv.connect()
    try:
        for url, body in items:
            for attempt in (1, 2):
                try:
                    conn.request(
                        "PUT",
                        url,
                        body=body,
                        headers={"Authorization": srv.auth, "Content-Type": "application/octet-stream"},
                    )
                    resp = conn.getresponse()
                    break
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                    conn.close()
                    conn = srv.connect()
                    if attempt == 2:
                        raise
            _check(resp, (200, 201, 204), f"PUT {url}")
            resp.read()
    finally:
        conn.close()


def put_many_parallel(srv: Server, items: list[tuple[str, bytes]], threads: int) -> None:
    """``put_many`` split over ``threads`` connections."""
    errors: list[BaseException] = []

    def work(part):
        try:
            put_many(srv, part)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(items[i::threads],)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
