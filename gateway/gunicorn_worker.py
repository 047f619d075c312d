"""gunicorn's gthread worker with the connection limits of :mod:`gateway.server_front`.

gthread hands a connection to a request thread as soon as it has a byte to read (or after five
seconds), and the thread reads the request head with blocking reads: a few dozen clients that
never finish their head hold every thread. This worker keeps each connection in its poller
until the full head of the next request (up to the blank line) has arrived, read without
blocking, within ``HFDAV_MAX_HEADER_BYTES`` (then 431) and ``HFDAV_HEADER_TIMEOUT`` seconds
in total (then 408); only then does a thread parse it, from the bytes already read. Socket
reads and writes in the request thread give up after ``HFDAV_BODY_TIMEOUT`` seconds.

It also answers ``Expect: 100-continue`` only when the application first reads the body (after
authentication); a request answered without reading it closes the connection afterwards. A
broken chunked body is answered 400 (:class:`~gateway.server_io.MalformedBody`), and the
connection closed.

gunicorn itself bounds the connections (``--worker-connections``), the idle keep-alive time
(``--keep-alive``) and each header line; see :func:`gateway.cli.gunicorn_command`.
"""

from __future__ import annotations

import contextlib
import io
import selectors
import socket
import struct
import time
from functools import partial

from gunicorn.http import wsgi as gunicorn_wsgi
from gunicorn.http.body import ChunkedReader, LengthReader
from gunicorn.http.errors import NoMoreData, ParseException
from gunicorn.workers import gthread

from gateway.config import load_settings
from gateway.server_io import MalformedBody

_RECV = 65536
_HEAD_END = b"\r\n\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _answer(status: bytes) -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (status, len(status), status)


_TOO_LARGE = _answer(b"431 Request Header Fields Too Large")
_TIMEOUT = _answer(b"408 Request Timeout")


class _ContinueSocket:
    """A connection's socket for the body reads of one request: the first read sends the owed
    ``100 Continue``."""

    def __init__(self, sock):
        self._sock = sock
        self.pending = True

    def _owed(self):
        if self.pending:
            self.pending = False
            self._sock.sendall(_CONTINUE)

    def recv(self, *args):
        self._owed()
        return self._sock.recv(*args)

    def recv_into(self, *args):
        self._owed()
        return self._sock.recv_into(*args)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class _ChunkedBody:
    """A chunked request body (``wsgi.input``) whose framing errors are the client's:
    :class:`MalformedBody` (400) instead of gunicorn's parse errors (500)."""

    def __init__(self, body):
        self._body = body
        self.broken = False

    def _checked(self, read, *args):
        try:
            return read(*args)
        except (ParseException, NoMoreData) as exc:
            self.broken = True
            raise MalformedBody(f"broken chunked body: {exc}") from exc

    def read(self, *args):
        return self._checked(self._body.read, *args)

    def readline(self, *args):
        return self._checked(self._body.readline, *args)

    def readlines(self, *args):
        return self._checked(self._body.readlines, *args)

    def __iter__(self):
        return self

    def __next__(self):
        return self._checked(self._body.__next__)


class _Response(gunicorn_wsgi.Response):
    """gunicorn's response, closing the connection after an error answered before the request
    body was read to its end. gunicorn would keep it open and, for the next request, first
    discard the rest of the body: but a client (nginx, which streams bodies) that got the early
    answer stops sending that body, so its next request on the connection was read as the old
    body's rest, and the connection then failed (nginx answered 502)."""

    def start_response(self, status, headers, exc_info=None):
        if str(status)[:1] in ("4", "5") and not _body_done(self.req.body):
            self.force_close()  # answered with "Connection: close": nobody reuses it
        return super().start_response(status, headers, exc_info)


def _body_done(body) -> bool:
    reader = getattr(body, "reader", None)
    if isinstance(body, _ChunkedBody):
        reader = getattr(body._body, "reader", None)
    if isinstance(reader, LengthReader):
        return reader.length <= 0 and not body.buf.getbuffer().nbytes
    return reader is None  # a chunked body's end is not known before it is read: close


class ThreadWorker(gthread.ThreadWorker):
    """The worker described in the module docstring (``--worker-class``)."""

    def init_process(self):
        # the responses of this worker process are :class:`_Response` (gunicorn builds them in
        # ``gunicorn.http.wsgi.create`` from this module-level name)
        gunicorn_wsgi.Response = _Response
        settings = load_settings()
        self.max_header_bytes = settings.max_header_bytes
        self.header_timeout = settings.header_timeout
        self.body_timeout = settings.body_timeout
        self.waiting: dict[object, float] = {}  # connection → deadline of its head
        super().init_process()

    # -- waiting for a complete head ------------------------------------------------------------

    def enqueue_req(self, conn):
        if getattr(conn, "head_ready", False):
            conn.head_ready = False
            super().enqueue_req(conn)
            return
        ahead = b""
        if conn.parser is not None:  # what the last request's thread read ahead
            ahead = conn.parser.unreader.buf.getvalue()
            conn.parser.unreader.buf = io.BytesIO()
        conn.head = bytearray(ahead)
        self.waiting[conn] = time.monotonic() + self.header_timeout
        self._read_head(conn)

    def _on_head_readable(self, conn, _sock):
        self.poller.unregister(conn.sock)
        self._read_head(conn)

    def _read_head(self, conn):
        try:
            data = conn.sock.recv(_RECV, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError:
            data = b""
        if data == b"":
            self._drop(conn)
            return
        if data:
            conn.head += data
        end = conn.head.find(_HEAD_END)
        size = len(conn.head) if end < 0 else end + len(_HEAD_END)
        if size > self.max_header_bytes:
            self._drop(conn, _TOO_LARGE)
        elif end >= 0:
            self._dispatch(conn)
        else:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_readable, conn))

    def _dispatch(self, conn):
        del self.waiting[conn]
        head, conn.head = bytes(conn.head), None
        conn.init()  # the parser, on a blocking socket
        conn.data_ready = True
        # reads and writes of the request thread give up after the body timeout (set on the
        # socket itself: gthread switches the socket to blocking mode, which clears Python's)
        tv = struct.pack("ll", int(self.body_timeout), 0)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        conn.parser.unreader.unread(head)
        conn.head_ready = True
        self.enqueue_req(conn)

    def _drop(self, conn, answer: bytes | None = None):
        self.waiting.pop(conn, None)
        if answer is not None:
            with contextlib.suppress(OSError):
                conn.sock.send(answer, socket.MSG_DONTWAIT)
        self.nr_conns -= 1
        conn.close()

    def murder_keepalived(self, force=False):
        super().murder_keepalived(force)
        now = time.monotonic()
        for conn in [c for c, deadline in self.waiting.items() if force or deadline < now]:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)
            self._drop(conn, _TIMEOUT if conn.head else None)

    # -- Expect: 100-continue ----------------------------------------------------------------------

    def handle_request(self, req, conn):
        chunked = None
        if isinstance(getattr(req.body, "reader", None), ChunkedReader):
            chunked = req.body = _ChunkedBody(req.body)
        if not req._expected_100_continue:
            keep = super().handle_request(req, conn)
            return keep and not (chunked and chunked.broken)
        req._expected_100_continue = False  # gunicorn would answer 100 before the application runs
        unreader = conn.parser.unreader
        real, unreader.sock = unreader.sock, _ContinueSocket(unreader.sock)
        try:
            keep = super().handle_request(req, conn)
        finally:
            owed, unreader.sock = unreader.sock.pending, real
        # a body not asked for will not be sent, so nothing can follow it on this connection
        return keep and not owed and not (chunked and chunked.broken)
