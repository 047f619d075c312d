"""Helpers for the hostile-client tests: raw sockets that misbehave on purpose, and the memory
of a server process read from /proc.

Generic on purpose (no knowledge of the gateway): any test that needs to hold many half-open
connections, send malformed HTTP or watch a process's RSS can use them. Loopback only.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

#: A second loopback address: connections from it count as another client than 127.0.0.1
#: (Linux routes all of 127.0.0.0/8 to the loopback interface).
OTHER_CLIENT = "127.0.0.2"

_STATUS_RE = re.compile(rb"HTTP/1\.[01] (\d{3})")


def connect(host: str, port: int, *, source: str | None = None, timeout: float = 10) -> socket.socket:
    """A TCP connection to ``host:port``, from the loopback address ``source`` if given."""
    return socket.create_connection((host, port), timeout=timeout, source_address=(source, 0) if source else None)


@contextlib.contextmanager
def slow_connections(host: str, port: int, count: int, *, partial: bytes, source: str | None = None,
                     timeout: float = 10) -> Iterator[list[socket.socket]]:  # fmt: skip
    """``count`` connections that each sent ``partial`` (the start of a request, never its end)
    and then stay silent; all closed on exit. Connections the server refused or closed while
    opening are kept too (a test can count them with :func:`closed_by_peer`); connections
    that could not be opened at all are left out (the caller compares the count)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            try:
                s = connect(host, port, source=source, timeout=timeout)
            except OSError:
                continue
            socks.append(s)
            with contextlib.suppress(OSError):
                s.sendall(partial)
        yield socks
    finally:
        for s in socks:
            s.close()


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the peer closed (or reset) ``sock``; reads and drops whatever it had sent."""
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def read_response(sock: socket.socket, *, timeout: float = 10, until_close: bool = False) -> bytes:
    """What the server sends on ``sock``: one response head and its Content-Length body, or
    everything up to the close with ``until_close``. Stops early at ``timeout`` or a reset."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            piece = sock.recv(65536)
        except (TimeoutError, OSError):
            break
        if not piece:
            break
        data += piece
        if not until_close and _complete(data):
            break
    return data


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    if _STATUS_RE.match(head) and _STATUS_RE.match(head).group(1).startswith(b"1"):
        return _complete(body)  # an interim answer (100 Continue): the real one follows
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return len(body) >= int(m.group(1)) if m else True


def status_of(data: bytes) -> int | None:
    """The status of the first response in ``data`` (None if there is none)."""
    m = _STATUS_RE.match(data)
    return int(m.group(1)) if m else None


def statuses_of(data: bytes) -> list[int]:
    """Every status line in ``data``, in order (interim 100 answers included)."""
    return [int(m.group(1)) for m in re.finditer(rb"(?m)^HTTP/1\.[01] (\d{3}) ", data)]


def exchange(host: str, port: int, data: bytes, *, timeout: float = 10, until_close: bool = False,
             source: str | None = None) -> bytes:  # fmt: skip
    """Send ``data`` on a fresh connection and return what comes back (see :func:`read_response`)."""
    with connect(host, port, source=source, timeout=timeout) as s:
        s.sendall(data)
        return read_response(s, timeout=timeout, until_close=until_close)


def rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` in KiB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS for pid {pid}")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc/PID/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return found


def tree_rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants, in KiB."""
    total = 0
    for p in descendants(pid):
        with contextlib.suppress(OSError, ValueError):
            total += rss_kib(p)
    return total
