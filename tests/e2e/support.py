"""Helpers for the end-to-end tests: the real ``hfdav serve`` as a subprocess, external tools,
curl, raw HTTP over sockets and PROPFIND listings.

Everything talks to the server over the network only; nothing here imports the gateway.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest
import requests

#: The two HTTP servers ``hfdav serve`` can run under; tests that must pass on both use
#: ``@BOTH_SERVERS``.
SERVER_KINDS = ("cheroot", "gunicorn")
BOTH_SERVERS = pytest.mark.parametrize("server", SERVER_KINDS, indirect=True)
#: For tests that start their own servers (``server_factory.start(kind, ...)``).
BOTH_KINDS = pytest.mark.parametrize("kind", SERVER_KINDS)

#: Small chunks so a few megabytes already span several chunks (multi-chunk paths are the
#: interesting ones); 1 MiB is the smallest chunk size the settings accept.
TEST_CHUNK_SIZE = "1MiB"
MiB = 1 << 20

#: How long the server may take to answer its first authenticated OPTIONS.
START_TIMEOUT_S = 60
#: How long the server may take to exit after SIGTERM before the test fails.
STOP_TIMEOUT_S = 20

#: Where each external tool comes from, for skip messages.
TOOL_HINTS = {
    "litmus": "apt-get install litmus (or scripts/test.sh as root)",
    "rclone": "apt-get install rclone (or scripts/test.sh as root)",
    "mount.davfs": "apt-get install davfs2 (or scripts/test.sh as root)",
    "cadaver": "apt-get install cadaver (or scripts/test.sh as root)",
    "curl": "apt-get install curl",
    "lftp": "apt-get install lftp (or scripts/test.sh as root)",
    "restic": "apt-get install restic (or scripts/test.sh as root)",
    "duplicity": "apt-get install duplicity (or scripts/test.sh as root)",
    "aria2c": "apt-get install aria2 (or scripts/test.sh as root)",
    "axel": "apt-get install axel (or scripts/test.sh as root)",
    "wget": "apt-get install wget (or scripts/test.sh as root)",
    "ffmpeg": "apt-get install ffmpeg (or scripts/test.sh as root)",
    "ffprobe": "apt-get install ffmpeg (or scripts/test.sh as root)",
    "gio": "apt-get install libglib2.0-bin gvfs-daemons gvfs-backends (or scripts/test.sh as root)",
    "dbus-run-session": "apt-get install dbus-daemon (or scripts/test.sh as root)",
    "git": "apt-get install git (or scripts/test.sh as root)",
    "sqlite3": "apt-get install sqlite3 (or scripts/test.sh as root)",
    "joplin": "npm install -g joplin@3.5 (the terminal app; its sqlite3 module builds with node-gyp)",
}

#: Environment variables of the gateway that must not leak from the caller into a test server.
_GATEWAY_ENV = re.compile(r"^(HFDAV_|SYS_TOKEN$|HF_|WEBDAV_|SYNC_INTERVAL$)")

_ANNOUNCE_RE = re.compile(r"hfdav serving http://([^/:]+):(\d+)/")
GENERATED_PASSWORD_RE = re.compile(r"generated a password for user 'admin': (\S+)")


def require_tool(name: str) -> str:
    """The tool's path, or skip the test saying how to install it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        pytest.skip(f"{name} not installed: {TOOL_HINTS.get(name, 'install it')}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hfdav_command() -> list[str]:
    script = Path(sys.executable).parent / "hfdav"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "gateway.cli"]


@dataclass
class Server:
    """One running ``hfdav serve`` process."""

    kind: str
    host: str
    port: int
    user: str
    password: str | None
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen = field(repr=False)

    @property
    def url(self) -> str:
        """Base URL of the share, ending in ``/``."""
        return f"http://{self.host}:{self.port}/"

    @property
    def auth(self) -> tuple[str, str]:
        return (self.user, self.password or "")

    def url_for(self, path: str) -> str:
        """URL of a share path given in plain text (``"dir/中文 #1.txt"``), percent-encoded."""
        return self.url + quote(path.lstrip("/"), safe="/")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def session(self) -> requests.Session:
        s = requests.Session()
        s.auth = self.auth
        return s

    def log_mark(self) -> int:
        """The current length of the log, for :meth:`wait_for_log`."""
        return len(self.log_text())

    def wait_for_log(self, pattern: str, *, since: int = 0, timeout: float = 30) -> re.Match:
        """Wait until the server log after position ``since`` matches ``pattern`` (e.g. the
        access line of a request the client aborted, which tells the server is done with it)."""
        rx = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_text(), since)
            if m:
                return m
            if time.monotonic() > deadline:
                pytest.fail(f"server log never matched {pattern!r} within {timeout}s")
            time.sleep(0.1)

    def stop(self) -> str | None:
        """SIGTERM, then wait. Returns an error message if the process did not exit in time."""
        if self.proc.poll() is not None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
            return None
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return f"hfdav serve ({self.kind}) did not exit within {STOP_TIMEOUT_S}s of SIGTERM"


class ServerFactory:
    """Starts servers in a base directory and stops them all at :meth:`close`."""

    def __init__(self, base: Path):
        self.base = base
        self.servers: list[Server] = []

    def start(
        self,
        kind: str = "cheroot",
        *,
        env: dict[str, str] | None = None,
        password: str | None = "",
        sys_token: bool = True,
        data_dir: Path | None = None,
        chunk_size: str = TEST_CHUNK_SIZE,
    ) -> Server:
        """Start ``hfdav serve --server KIND`` and wait until it answers an authenticated OPTIONS.

        ``password``: the admin password, passed as SYS_TOKEN; ``""`` picks a random one.
        With ``sys_token=False`` SYS_TOKEN is not set: ``password`` is then the one the server
        kept from an earlier start, or ``None`` to read the generated one from the log.
        """
        name = f"{kind}-{len(self.servers)}-{uuid.uuid4().hex[:6]}"
        data_dir = data_dir or self.base / name / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.base / name / "server.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        full_env = {k: v for k, v in os.environ.items() if not _GATEWAY_ENV.match(k)}
        full_env.update(HFDAV_CHUNK_SIZE=chunk_size, HFDAV_THREADS="16", HFDAV_LOG_LEVEL="INFO")
        if sys_token:
            password = password or "pw-" + uuid.uuid4().hex[:16]
            full_env["SYS_TOKEN"] = password
        full_env.update(env or {})
        port = 0 if kind == "cheroot" else free_port()
        argv = [*_hfdav_command(), "serve", "--server", kind, "--host", "127.0.0.1", "--port", str(port),
                "--data-dir", str(data_dir)]  # fmt: skip
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env,
                cwd=log_path.parent, start_new_session=True,
            )  # fmt: skip
        server = Server(kind, "127.0.0.1", port, "admin", password, data_dir, log_path, proc)
        self.servers.append(server)
        self._wait_ready(server)
        return server

    def _wait_ready(self, server: Server) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.proc.poll() is not None:
                pytest.fail(f"hfdav serve ({server.kind}) exited with {server.proc.returncode}:\n{server.log_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"hfdav serve ({server.kind}) not ready after {START_TIMEOUT_S}s:\n{server.log_text()}")
            text = server.log_text()
            if server.password is None:
                m = GENERATED_PASSWORD_RE.search(text)
                if m:
                    server.password = m.group(1)
            if server.port == 0:
                m = _ANNOUNCE_RE.search(text)
                if m:
                    server.port = int(m.group(2))
            if server.port and server.password is not None:
                try:
                    r = requests.options(server.url, auth=server.auth, timeout=5)
                    if r.status_code == 200:
                        return
                except requests.ConnectionError:
                    pass
            time.sleep(0.1)

    def close(self) -> list[str]:
        """Stop every server; the problems found (servers that did not exit in time)."""
        return [p for p in (s.stop() for s in self.servers) if p]


# -- curl ------------------------------------------------------------------------------------


@dataclass
class CurlResult:
    status: int
    headers: dict[str, str]
    body: bytes
    stderr: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def curl(*args: str, input: bytes | None = None, timeout: float = 120) -> CurlResult:
    """Run curl; the status, the headers of the last response (lower-case names) and the body."""
    exe = require_tool("curl")
    with tempfile.TemporaryDirectory(prefix="curl-") as tmp:
        head_file, body_file = Path(tmp, "head"), Path(tmp, "body")
        proc = subprocess.run(
            [exe, "-s", "-S", "-D", str(head_file), "-o", str(body_file), "-w", "%{http_code}", *args],
            input=input, capture_output=True, timeout=timeout,
        )  # fmt: skip
        code = proc.stdout.decode().strip()[-3:]
        if code == "000":
            raise AssertionError(f"curl {' '.join(args)} got no response ({proc.returncode}): {proc.stderr!r}")
        head = head_file.read_text("latin-1") if head_file.exists() else ""
        body = body_file.read_bytes() if body_file.exists() else b""
    blocks = [b for b in re.split(r"\r?\n\r?\n", head) if b.strip()]
    headers: dict[str, str] = {}
    if blocks:
        for line in blocks[-1].splitlines()[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return CurlResult(int(code), headers, body, proc.stderr.decode(errors="replace"))


# -- PROPFIND --------------------------------------------------------------------------------

DAV_NS = "{DAV:}"


def propfind(server: Server, path: str = "", *, depth: str = "1") -> dict[str, dict[str, str]]:
    """PROPFIND ``path``; maps each member's decoded share path (no trailing ``/``) to its
    properties as text (``getcontentlength``, ``resourcetype`` = ``collection`` or ``""``, …)."""
    r = requests.request("PROPFIND", server.url_for(path), auth=server.auth, headers={"Depth": depth}, timeout=30)
    assert r.status_code == 207, f"PROPFIND {path!r}: {r.status_code} {r.text[:500]}"
    out: dict[str, dict[str, str]] = {}
    for resp in ET.fromstring(r.content).iter(f"{DAV_NS}response"):
        href = unquote(urlsplit(resp.findtext(f"{DAV_NS}href")).path).strip("/")
        props: dict[str, str] = {}
        for propstat in resp.iter(f"{DAV_NS}propstat"):
            if " 200 " not in (propstat.findtext(f"{DAV_NS}status") or ""):
                continue
            for prop in propstat.iter(f"{DAV_NS}prop"):
                for child in prop:
                    name = child.tag.replace(DAV_NS, "")
                    if name == "resourcetype":
                        props[name] = "collection" if child.find(f"{DAV_NS}collection") is not None else ""
                    else:
                        props[name] = child.text or ""
        out[href] = props
    return out


def all_paths(server: Server) -> dict[str, dict[str, str]]:
    """Every path in the share (PROPFIND Depth: infinity)."""
    return propfind(server, "", depth="infinity")


# -- raw HTTP --------------------------------------------------------------------------------


def raw_request(server: Server, head: str, body_parts: list[bytes] = (), *, read_reply: bool = True,
                timeout: float = 60) -> tuple[int | None, bytes]:  # fmt: skip
    """Send ``head`` (request line and headers, without the blank line; Host is added) and the
    body parts over a fresh socket. With ``read_reply``, read until the server closes or the
    response is complete and return (status, raw response); else close right after sending
    (an aborted upload) and return (None, b"")."""
    sock = socket.create_connection((server.host, server.port), timeout=timeout)
    try:
        request = head.rstrip("\r\n") + f"\r\nHost: {server.host}:{server.port}\r\n\r\n"
        sock.sendall(request.encode("latin-1"))
        for part in body_parts:
            sock.sendall(part)
        if not read_reply:
            return None, b""
        data = b""
        while True:
            try:
                piece = sock.recv(65536)
            except TimeoutError:
                break
            if not piece:
                break
            data += piece
            if _response_complete(data):
                break
        m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
        return (int(m.group(1)) if m else None), data
    finally:
        sock.close()


def _response_complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if m:
        return len(body) >= int(m.group(1))
    if re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        return body.endswith(b"0\r\n\r\n")
    return False


def basic_header(server: Server) -> str:
    """The Authorization header line for raw requests."""
    token = base64.b64encode(f"{server.user}:{server.password}".encode()).decode()
    return f"Authorization: Basic {token}"


def chunked(data: bytes, piece: int = 256 * 1024) -> list[bytes]:
    """``data`` in HTTP/1.1 chunked framing, without the terminating zero chunk."""
    return [b"%x\r\n" % len(data[i : i + piece]) + data[i : i + piece] + b"\r\n" for i in range(0, len(data), piece)]


# -- rclone ----------------------------------------------------------------------------------


class Rclone:
    """rclone with its own config (remote ``hfdav:``) and cache in ``workdir``, never ``~``."""

    REMOTE = "hfdav:"
    #: Fail fast instead of retrying: a retry would hide a server error.
    FLAGS = ("--retries", "1", "--low-level-retries", "1", "--contimeout", "10s", "--timeout", "120s")

    def __init__(self, server: Server, workdir: Path):
        self.exe = require_tool("rclone")
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.config = workdir / "rclone.conf"
        self.env = {**os.environ, "RCLONE_CONFIG": str(self.config), "HOME": str(workdir)}
        obscured = subprocess.run(
            [self.exe, "obscure", "-"], input=server.password, capture_output=True, text=True, env=self.env,
            check=True, timeout=60,
        ).stdout.strip()  # fmt: skip
        self.config.write_text(
            f"[hfdav]\ntype = webdav\nurl = {server.url}\nvendor = other\nuser = {server.user}\npass = {obscured}\n"
        )
        self.config.chmod(0o600)

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """``rclone ARGS``; with ``check`` a non-zero exit fails the test with rclone's output."""
        argv = [self.exe, "--config", str(self.config), "--cache-dir", str(self.workdir / "cache"), *self.FLAGS, *args]
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and proc.returncode != 0:
            pytest.fail(f"rclone {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc


# -- davfs2 -------------------------------------------------------------------------------------
#: davfs2 settings. ``buf_size 64``: with the default (16 KiB) every readdir fails with EINVAL
#: on Linux >= 6.16 (alisarctl/davfs2#22). ``use_locks 1``: LOCK/PUT/UNLOCK like most clients.
DAVFS2_CONF = """\
cache_dir      {cache}
secrets        {secrets}
ask_auth       0
use_locks      1
delay_upload   0
cache_size     400
buf_size       64
"""
DAVFS2_MOUNT_TIMEOUT_S = 60
#: umount waits for davfs2 to upload what is still pending.
DAVFS2_UMOUNT_TIMEOUT_S = 600


def require_davfs2() -> None:
    """Skip, saying why, unless a davfs2 mount can work here (root, the davfs2 group, fuse/coda)."""
    import grp

    require_tool("mount.davfs")
    if os.geteuid() != 0:
        pytest.skip("davfs2 not usable: mounting needs root (run scripts/test.sh as root)")
    try:
        grp.getgrnam("davfs2")
    except KeyError:
        pytest.skip("davfs2 not installed properly: group davfs2 missing (apt-get install davfs2)")
    if not Path("/dev/fuse").exists() and "coda" not in Path("/proc/filesystems").read_text():
        pytest.skip("davfs2 not usable: neither /dev/fuse nor coda is available in this kernel")


class Davfs2Mount:
    """A davfs2 mount of ``server.url`` (anything with ``url``, ``user``, ``password``) with its
    own config, secrets and cache in a fresh folder under the system temp dir (pytest's own is
    private to root, and mount.davfs runs as user davfs2); :meth:`close` unmounts and removes it."""

    def __init__(self, server):
        self.workdir = Path(tempfile.mkdtemp(prefix="hfdav-davfs2-"))
        self.workdir.chmod(0o755)
        self.url = server.url
        self.cache = self.workdir / "cache"
        self.mountpoint = self.workdir / "mnt"
        self.conf = self.workdir / "davfs2.conf"
        secrets = self.workdir / "secrets"
        for d in (self.cache, self.mountpoint):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.cache, group="davfs2")  # mount.davfs runs as user davfs2
        self.cache.chmod(0o775)
        secrets.write_text(f'"{server.url}" {server.user} "{server.password}"\n')
        secrets.chmod(0o600)
        self.conf.write_text(DAVFS2_CONF.format(cache=self.cache, secrets=secrets))
        self.conf.chmod(0o600)
        self.mounted = False

    def mount(self) -> None:
        proc = subprocess.run(
            ["mount", "-t", "davfs", "-o", f"conf={self.conf},uid=0,gid=0", self.url, str(self.mountpoint)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=DAVFS2_MOUNT_TIMEOUT_S,
        )  # fmt: skip
        assert proc.returncode == 0, f"mount.davfs failed: {proc.stdout}{proc.stderr}"
        self.mounted = True

    def umount(self) -> None:
        """Unmount; davfs2 finishes its pending uploads first."""
        proc = subprocess.run(
            ["umount", str(self.mountpoint)], capture_output=True, text=True, timeout=DAVFS2_UMOUNT_TIMEOUT_S
        )
        assert proc.returncode == 0, f"umount failed: {proc.stdout}{proc.stderr}"
        self.mounted = False

    def clear_cache(self) -> None:
        """Forget cached files, so the next mount reads from the server."""
        for child in self.cache.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True, timeout=60)
            self.mounted = False
        shutil.rmtree(self.workdir, ignore_errors=True)
