"""The cheroot server ``hfdav serve`` runs, made safe to face the open internet.

cheroot hands a connection to one of its request threads as soon as the connection has a byte
to read; the thread then reads the request head with blocking reads. A few dozen clients that
never finish their head (slowloris) hold every thread, and one endless header line is
buffered whole. Here the connection manager keeps a connection until its full head (up to the
blank line) has arrived, reading it without blocking in the manager's own thread, within:

* ``max_header_bytes`` for the request line and headers together: more gets 431;
* ``header_timeout`` seconds from the first byte of a request (of the connection, for its first
  request) to the blank line: total, however slowly the bytes trickle in; then 408;
* ``idle_timeout`` seconds a kept-alive connection may wait for its next request;
* ``max_connections`` open at once and ``max_connections_per_client`` from one peer address
  (0: no per-client limit; behind a proxy every client has the proxy's address): a connection
  beyond them is answered 503 with ``Retry-After``.

A complete head whose header lines are malformed (whitespace before the colon, obs-fold, a
bare CR or a NUL: RFC 9112 §5) is refused with 400 there too. Only then does a request thread
get the connection, with the head already in its read buffer;
the body is read with ``body_timeout`` seconds allowed per socket read or write. After an answer
on a kept-alive connection, the request thread itself waits up to ``KEEP_SERVING_S`` for the
next head (a client sending requests back to back) and serves it when it is complete and passes
the same checks; anything else goes back to the manager. Refusals are
written without blocking, then the connection is half-closed and what the client still sends is
read and dropped for a moment, so that the client reads the answer instead of a reset.

The request class is stricter about framing (RFC 9112 §6.3: Content-Length together with
Transfer-Encoding, repeated or malformed Content-Length, malformed chunk sizes get 400 and the
connection is closed), takes at most ``MAX_HEADER_FIELDS`` header lines (431 beyond; a
repeated Host is a 400) and answers ``Expect: 100-continue`` only when the application starts
reading the body, i.e. after authentication: a refused request gets its final answer first.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import select
import selectors
import socket
import threading
import time
from dataclasses import dataclass

from cheroot import wsgi
from cheroot.connections import ConnectionManager
from cheroot.server import ChunkedRFile, KnownLengthRFile

from gateway import cheroot_request, server_io
from gateway.server_io import MalformedBody

#: How long a refused connection is read and dropped after its answer, before it is closed;
#: and how many may linger at once (beyond, they are closed right after the answer).
LINGER_S = 2.0
MAX_LINGERING = 256
#: Longest chunk-size line (size and extensions) of a chunked body.
MAX_CHUNK_LINE = 4096
#: A body left unread before an answer is read and dropped up to this size to keep the
#: connection; beyond it the connection is closed instead.
MAX_BODY_DRAIN = 1 << 20
#: Header lines of one request, at most (gunicorn's limit, see gateway.cli.gunicorn_command).
MAX_HEADER_FIELDS = 100
#: After an answer on a kept-alive connection, the request thread waits this long for the next
#: request itself (a client sending one request after another) before it hands the connection
#: back to the manager: no wake-up of the manager and no hand-over between threads per request.
#: Only while no other connection waits for a thread.
KEEP_SERVING_S = 0.002
#: Requests one thread serves in a row on one connection before handing it back anyway.
KEEP_SERVING_MAX = 100
_RECV = 65536
_HEAD_END = b"\r\n\r\n"
_DIGITS = re.compile(rb"[0-9]{1,19}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


@dataclass(frozen=True)
class Limits:
    """What one client may hold of the server (see the module docstring)."""

    max_header_bytes: int = 64 * 1024
    header_timeout: float = 20.0
    idle_timeout: float = 60.0
    body_timeout: float = 60.0
    max_connections: int = 1000
    max_connections_per_client: int = 0
    backlog: int = 1024

    @classmethod
    def from_settings(cls, settings) -> Limits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            header_timeout=settings.header_timeout,
            idle_timeout=settings.idle_timeout,
            body_timeout=settings.body_timeout,
            max_connections=settings.max_connections,
            max_connections_per_client=settings.max_connections_per_client,
            backlog=settings.listen_backlog,
        )


def _answer(status: str, extra: str = "") -> bytes:
    text = status.encode("ascii")
    return (b"HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n%s\r\n%s"
            % (text, len(text), extra.encode("ascii"), text))  # fmt: skip


_BUSY = _answer("503 Service Unavailable", "Retry-After: 5\r\n")
_TOO_LARGE = _answer("431 Request Header Fields Too Large")
_TIMEOUT = _answer("408 Request Timeout")
_BAD_FIELD = _answer("400 Bad Request")
#: A header line (RFC 9112 §5, RFC 9110 §5.5): a token, a colon right after it, a value without
#: control characters other than tab. Whitespace before the colon, a line folded onto the one
#: before (obs-fold), a bare CR or a NUL are refused: a proxy in front may read them otherwise.
_FIELD_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*")


def well_formed_fields(head: bytes) -> bool:
    """Whether every header line of a request head (without its blank line) is well formed."""
    lines = head.lstrip(b"\r\n").split(b"\r\n")
    return all(_FIELD_LINE.fullmatch(line) for line in lines[1:])


class _Waiting:
    """A connection the manager holds until its request head is complete."""

    __slots__ = ("head", "deadline", "started")

    def __init__(self, head: bytes, deadline: float, started: bool):
        self.head = bytearray(head)
        self.deadline = deadline
        self.started = started


class _Lingering:
    """A refused connection, half-closed, read and dropped until the client closes or time is up."""

    __slots__ = ("sock", "deadline")

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock = sock
        self.deadline = deadline

    def close(self) -> None:
        self.sock.close()


class HeadGate(ConnectionManager):
    """cheroot's connection manager that dispatches a connection only with a complete request
    head, and admits connections within the limits (see the module docstring)."""

    def __init__(self, server, limits: Limits):
        super().__init__(server)
        self.limits = limits
        self._lock = threading.Lock()  # connections close in request threads
        self._open: dict[object, str] = {}  # connection → peer address
        self._per_client: collections.Counter[str] = collections.Counter()
        self._waiting: dict[object, _Waiting] = {}
        self._lingering = 0

    # -- admission --------------------------------------------------------------------------

    def _accept(self) -> None:
        try:
            conn = self._from_server_socket(self.server.socket)
        except OSError as exc:  # out of file descriptors: the kernel queues meanwhile
            self.server.error_log(f"cannot accept a connection: {exc}", level=logging.WARNING)
            time.sleep(0.05)
            return
        if conn is None:
            return
        peer = conn.remote_addr or ""
        per_client = self.limits.max_connections_per_client
        with self._lock:
            full = len(self._open) >= self.limits.max_connections
            full = full or bool(per_client and self._per_client[peer] >= per_client)
            if not full:
                self._open[conn] = peer
                self._per_client[peer] += 1
        if full:
            self._refuse(conn, _BUSY)
            return
        conn.on_close = self._release
        self._wait(conn, b"", time.monotonic() + self.limits.header_timeout, started=False)

    def _release(self, conn) -> None:
        with self._lock:
            peer = self._open.pop(conn, None)
            if peer is not None:
                self._per_client[peer] -= 1
                if self._per_client[peer] <= 0:
                    del self._per_client[peer]

    # -- waiting for a request head -----------------------------------------------------------

    def put(self, conn) -> None:
        """A request thread is done with a kept-alive connection: wait for its next request
        (what the thread read ahead of it is the start of that request)."""
        ahead = conn.rfile.take_buffered()
        now = time.monotonic()
        if ahead:
            self._wait(conn, ahead, now + self.limits.header_timeout, started=True)
        else:
            self._wait(conn, b"", now + self.limits.idle_timeout, started=False)

    def _wait(self, conn, head: bytes, deadline: float, *, started: bool) -> None:
        waiting = _Waiting(head, deadline, started)
        if self._complete(conn, waiting):
            return
        self._waiting[conn] = waiting
        self._selector.register(conn.socket.fileno(), selectors.EVENT_READ, data=conn)

    def _complete(self, conn, waiting: _Waiting) -> bool:
        """Dispatch or refuse ``conn`` if its head is complete or too large; False to go on waiting."""
        head = waiting.head
        end = head.find(_HEAD_END)
        size = len(head) if end < 0 else end + len(_HEAD_END)
        if size > self.limits.max_header_bytes:
            self._refuse(conn, _TOO_LARGE)
            return True
        if end < 0:
            return False
        if not well_formed_fields(bytes(head[:end])):
            self._refuse(conn, _BAD_FIELD)
            return True
        conn.rfile.unread(bytes(head))
        conn.socket.settimeout(self.limits.body_timeout)
        self.server.process_conn(conn)
        return True

    def _on_readable(self, fd: int, conn) -> None:
        waiting = self._waiting.get(conn)
        if waiting is None:
            return
        try:
            data = conn.socket.recv(_RECV, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        self._selector.unregister(fd)
        del self._waiting[conn]
        if not data:
            conn.close()
            return
        if not waiting.started:  # the clock of a kept-alive connection restarts with its request
            waiting.started = True
            waiting.deadline = min(waiting.deadline, time.monotonic() + self.limits.header_timeout)
        waiting.head += data
        if not self._complete(conn, waiting):
            self._waiting[conn] = waiting
            self._selector.register(fd, selectors.EVENT_READ, data=conn)

    # -- refusing -----------------------------------------------------------------------------

    def _refuse(self, conn, answer: bytes) -> None:
        """Answer without blocking, half-close, then drop what the client still sends."""
        self._release(conn)
        sock = conn.socket
        with contextlib.suppress(OSError):
            sock.send(answer, socket.MSG_DONTWAIT)
            sock.shutdown(socket.SHUT_WR)
        if self._lingering >= MAX_LINGERING:
            sock.close()
            return
        try:
            self._selector.register(sock.fileno(), selectors.EVENT_READ,
                                    data=_Lingering(sock, time.monotonic() + LINGER_S))  # fmt: skip
            with self._lock:
                self._lingering += 1
        except (OSError, ValueError):
            sock.close()

    def _on_lingering(self, fd: int, lingering: _Lingering) -> None:
        try:
            data = lingering.sock.recv(_RECV, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._selector.unregister(fd)
            self._lingering -= 1
            lingering.sock.close()

    def _expire_all(self, now: float) -> None:
        expired = [(fd, c) for fd, c in self._selector.connections
                   if c is not self.server and self._deadline(c) < now]  # fmt: skip
        for fd, c in expired:
            self._selector.unregister(fd)
            if isinstance(c, _Lingering):
                self._lingering -= 1
                c.sock.close()
                continue
            waiting = self._waiting.pop(c)
            if waiting.started:
                self._refuse(c, _TIMEOUT)
            else:
                c.close()

    def _deadline(self, c) -> float:
        if isinstance(c, _Lingering):
            return c.deadline
        waiting = self._waiting.get(c)
        return waiting.deadline if waiting is not None else float("inf")

    # -- the loop -----------------------------------------------------------------------------

    def _run(self, expiration_interval):
        last_check = time.monotonic()
        while not self._stop_requested:
            try:
                ready = list(self._selector.select(timeout=expiration_interval))
            except OSError:
                self._remove_invalid_sockets()
                continue
            for fd, c in ready:
                if c is self.server:
                    self._accept()
                elif isinstance(c, _Lingering):
                    self._on_lingering(fd, c)
                else:
                    self._on_readable(fd, c)
            now = time.monotonic()
            if now - last_check >= expiration_interval:
                self._expire_all(now)
                last_check = now

    def close(self):
        for _, c in list(self._selector.connections):
            if isinstance(c, _Lingering):
                c.sock.close()
            elif c is not self.server:
                c.close()
        self._selector.close()

    @property
    def can_add_keepalive_connection(self):
        return True  # bounded by max_connections at accept


# -- requests ---------------------------------------------------------------------------------


class TooManyFields(ValueError):
    """More than :data:`MAX_HEADER_FIELDS` header lines: answered 431."""


class _Headers(dict):
    """Request headers as cheroot's header reader fills them in; a repeated Content-Length
    or Host is an error (cheroot would keep the last one; RFC 9112 §3.2, §6.3), and so are more
    than :data:`MAX_HEADER_FIELDS` lines (each costs parsing before any login)."""

    def __init__(self):
        super().__init__()
        self.lines = 0

    def __setitem__(self, key, value):
        self.lines += 1
        if self.lines > MAX_HEADER_FIELDS:
            raise TooManyFields(f"more than {MAX_HEADER_FIELDS} header fields")
        if key in (b"Content-Length", b"Host") and key in self:
            raise ValueError(f"more than one {key.decode()}")
        super().__setitem__(key, value)


def _framing_problem(headers: dict) -> str | None:
    """Why the body length of a request with these headers is ambiguous (RFC 9112 §6.3)."""
    length = headers.get(b"Content-Length")
    if length is None:
        return None
    if b"Transfer-Encoding" in headers:
        return "Content-Length together with Transfer-Encoding"
    if not _DIGITS.fullmatch(length):
        return "malformed Content-Length"
    return None


def _already_read(_rfile, headers):
    return headers


class StrictChunkedRFile(ChunkedRFile):
    """cheroot's chunked body reader that accepts only well-formed chunk sizes (hex digits),
    bounds the size line, and closes the connection after a broken body."""

    def __init__(self, rfile, request):
        super().__init__(rfile, 0)
        self._request = request

    def _broken(self, detail: str):
        self._request.close_connection = True
        self.closed = True
        raise MalformedBody(detail)

    def _fetch(self):
        if self.closed:
            return
        line = self.rfile.readline(MAX_CHUNK_LINE)
        self.bytes_read += len(line)
        size = line.split(b";", 1)[0].strip(b" \t\r\n")
        if not line.endswith(b"\r\n") or not _HEX.fullmatch(size):
            self._broken(f"malformed chunk size {line[:40]!r}")
        n = int(size, 16)
        if n == 0:
            self.closed = True
            return
        chunk = self.rfile.read(n)
        self.bytes_read += len(chunk)
        if len(chunk) < n or self.rfile.read(2) != b"\r\n":
            self._broken("chunk shorter than its size")
        self.buffer += chunk


class StrictRequest(cheroot_request.Request):
    """hfdav's cheroot request (:mod:`gateway.cheroot_request`) with the framing checks and the
    deferred ``100 Continue`` described in the module docstring."""

    def __init__(self, server, conn, *args, **kwargs):
        super().__init__(server, conn, *args, **kwargs)
        self.inheaders = _Headers()

    def read_request_headers(self):
        try:
            self.header_reader(self.rfile, self.inheaders)
        except TooManyFields as exc:
            self.close_connection = True
            self.simple_response("431 Request Header Fields Too Large", exc.args[0])
            return False
        except ValueError as exc:
            self.simple_response("400 Bad Request", exc.args[0])
            return False
        problem = _framing_problem(self.inheaders)
        if problem:
            self.close_connection = True
            self.simple_response("400 Bad Request", problem)
            return False
        expect = self.inheaders.pop(b"Expect", None)  # cheroot would answer 100 right away
        self.header_reader = _already_read
        try:
            ok = super().read_request_headers()
        finally:
            del self.header_reader
        if expect is not None:
            self.inheaders[b"Expect"] = expect
            if ok and expect.lower() == b"100-continue" and self.response_protocol == "HTTP/1.1":
                self.conn.rfile.raw.interim = f"{self.server.protocol} 100 Continue\r\n\r\n".encode("ascii")
        return ok

    def respond(self):
        if self.chunked_read:
            self.rfile = StrictChunkedRFile(self.conn.rfile, self)
        else:
            self.rfile = KnownLengthRFile(self.conn.rfile, int(self.inheaders.get(b"Content-Length", 0)))
        try:
            gateway = self.server.gateway(self)
            gateway.env[server_io.SOCKET_KEY] = self.conn.socket
            gateway.respond()
            if self.ready:
                self.ensure_headers_sent()
            if self.chunked_write:
                self.conn.wfile.write(b"0\r\n\r\n")
        finally:
            self.conn.rfile.raw.interim = None
            release = getattr(self.conn.wfile, "release", None)
            if release is not None:
                release()  # a head held back by send_headers, when no body followed

    def send_headers(self):
        # A body not asked for (still waiting for 100 Continue) or too big to drain is not
        # read: the connection closes after the answer instead.
        remaining = getattr(self.rfile, "remaining", 0)
        if self.conn.rfile.raw.interim is not None or remaining > MAX_BODY_DRAIN:
            self.close_connection = True
        self.conn.rfile.raw.interim = None
        hold = getattr(self.conn.wfile, "hold_next", None)
        if hold is not None:
            hold()  # the head goes out with the first body bytes (gateway.server_io._SendallWriter)
        super().send_headers()


class Connection(server_io.Connection):
    """A connection whose request thread serves the next request too when its complete head
    arrives within :data:`KEEP_SERVING_S` (the manager's checks apply to it: size, fields)."""

    RequestHandlerClass = StrictRequest

    def communicate(self):
        for _ in range(KEEP_SERVING_MAX):
            keep = super().communicate()
            if not keep or not self._next_head_here():
                return keep
        return True

    def _next_head_here(self) -> bool:
        """Wait briefly for the next request head; True when it is complete and well formed
        (it is then in the read buffer). Whatever arrived otherwise is in the read buffer too,
        and the manager takes it from there (:meth:`HeadGate.put`)."""
        server = self.server
        limits = getattr(server, "limits", None)
        if limits is None or not hasattr(self.rfile, "has_buffered") or not server.ready:
            return False  # a TLS adapter's reader: the manager waits for the next request
        if self.rfile.has_buffered() or server.requests.qsize:
            return False
        poller = select.poll()
        try:
            poller.register(self.socket.fileno(), select.POLLIN)
            if not poller.poll(KEEP_SERVING_S * 1000):
                return False
            data = self.socket.recv(_RECV, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except (OSError, ValueError):
            return False  # the manager sees the broken connection itself
        if not data:
            return False  # the client closed: the manager finds the end again and closes
        self.rfile.unread(data)
        end = data.find(_HEAD_END)
        if end < 0 or end + len(_HEAD_END) > limits.max_header_bytes:
            return False  # incomplete or too large: the manager waits, or refuses
        return well_formed_fields(data[:end])


class Server(wsgi.Server):
    """cheroot's WSGI server with :class:`HeadGate`, :class:`StrictRequest` and the lean
    socket I/O of :mod:`gateway.server_io`."""

    ConnectionClass = Connection

    def __init__(self, bind_addr, app, *, limits: Limits, **kwargs):
        super().__init__(bind_addr, app, timeout=limits.body_timeout, request_queue_size=limits.backlog, **kwargs)
        self.limits = limits
        self.keep_alive_conn_limit = None
        self.max_request_header_size = limits.max_header_bytes

    def prepare(self):
        super().prepare()
        self._connections._selector.close()
        self._connections = HeadGate(self, self.limits)
