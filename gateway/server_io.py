"""Leaner socket I/O for the WSGI servers hfdav runs on.

For the large bodies a storage gateway moves, the servers' own body handling costs more CPU
than the work itself:

* cheroot reads and writes sockets through the pure-Python ``_pyio`` buffered classes. A read of
  a PUT block allocates a buffer the size of the whole block for every socket read, copies what
  arrived out of it and joins the pieces; a write of a GET block is copied into the write buffer,
  copied again into a ``bytes`` on every partial send, and the sent part is cut off the front
  each time. :class:`Connection` writes with ``sendall`` straight from the caller's block.
* gunicorn gathers a body block through two ``BytesIO`` buffers, copying each byte five or six
  times on its way.

:func:`direct_body_reader` receives a body of known length into one buffer per block instead,
after handing on whatever the server had buffered already. Both keep the servers' own counters
right: they decide keep-alive and body draining on them.

A read returns the whole block asked for (or what is left of the body), like the servers' own
readers: WsgiDAV reads an XML body with one ``read(content_length)``, so a short read would cut
a body that arrived in two TCP segments. The buffer grows with the bytes that arrive, never
with the length a client announces.

:class:`MalformedBody` is what both servers' chunked body readers raise for a broken body
(see :mod:`gateway.server_front` and :mod:`gateway.gunicorn_worker`).
"""

from __future__ import annotations

import io
import socket
from collections.abc import Callable

from cheroot.makefile import MakeFile, StreamReader, StreamWriter
from cheroot.server import HTTPConnection, KnownLengthRFile
from wsgidav.dav_error import HTTP_BAD_REQUEST, DAVError

#: environ key: the connection's socket (cheroot; gunicorn has its own key for it).
SOCKET_KEY = "hfdav.socket"


def request_socket(environ) -> socket.socket | None:
    """The socket a request came on, under either server (None if the server does not say)."""
    return environ.get(SOCKET_KEY) or environ.get("gunicorn.socket")


class MalformedBody(DAVError, ValueError):
    """Raised by a body read when the request body's framing is broken (a malformed chunk):
    the request is answered 400, nothing is written, and the server closes the connection."""

    def __init__(self, detail: str):
        super().__init__(HTTP_BAD_REQUEST, context_info=detail)


#: A response head held back (:meth:`_SendallWriter.hold_next`) goes out in one send with the
#: first body bytes when they are at most this long; before them, in a send of its own, otherwise.
COALESCE_MAX = 64 << 10


class _SendallWriter(StreamWriter):
    """cheroot's socket writer, with each write sent at once by ``socket.sendall``; except that
    the write after :meth:`hold_next` (a response head) is kept until the next one (the first
    body bytes) or :meth:`release`: a small answer leaves in one packet, the client wakes once."""

    def __init__(self, sock, bufsize):
        super().__init__(sock, "wb", bufsize)
        self._sock = sock
        self._hold = False
        self._held: bytes | None = None

    def hold_next(self) -> None:
        """Keep the next write back until the write after it, or :meth:`release`."""
        self._hold = True

    def release(self) -> None:
        """Send what is held back, if anything (the end of a response)."""
        self._hold = False
        with self._write_lock:
            held, self._held = self._held, None
            if held:
                self._sock.sendall(held)

    def write(self, b) -> int:
        self._checkClosed()
        n = len(b) if not isinstance(b, memoryview) else b.nbytes
        with self._write_lock:
            self._flush_unlocked()  # nothing is buffered, unless a subclass of cheroot's did
            if self._hold:
                self._hold = False
                self._held = bytes(b)
            else:
                held, self._held = self._held, None
                if held is not None:
                    if n <= COALESCE_MAX:
                        b = held + b
                    else:
                        self._sock.sendall(held)
                self._sock.sendall(b)
        self.bytes_written += n
        return n


class _SocketIO(socket.SocketIO):
    """The socket under a connection's reader. ``interim`` is an answer owed before the next
    read (``100 Continue``): sent when the application first reads the body, never if it
    answers without reading."""

    interim: bytes | None = None

    def readinto(self, b) -> int:
        if self.interim is not None:
            interim, self.interim = self.interim, None
            self._sock.sendall(interim)
        return super().readinto(b)


class _Reader(StreamReader):
    """cheroot's socket reader over :class:`_SocketIO`; bytes read elsewhere (a request head
    gathered by the connection manager) can be put back in front of its buffer."""

    def __init__(self, sock, bufsize):
        super(StreamReader, self).__init__(_SocketIO(sock, "rb"), bufsize)
        self.bytes_read = 0

    def unread(self, data: bytes) -> None:
        """Put ``data`` in front of what is buffered: the next reads return it first."""
        with self._read_lock:
            self._read_buf = data + self._read_buf[self._read_pos :]
            self._read_pos = 0

    def has_buffered(self) -> bool:
        """Whether bytes were read ahead and not consumed yet."""
        return len(self._read_buf) > self._read_pos

    def take_buffered(self) -> bytes:
        """Remove and return what is buffered and not read yet."""
        with self._read_lock:
            data = self._read_buf[self._read_pos :]
            self._reset_read_buf()
        return data


class Connection(HTTPConnection):
    """cheroot's connection with :class:`_SendallWriter` as its writer and :class:`_Reader` as
    its reader (set it as the server's ``ConnectionClass``). ``on_close`` (if set) is called
    once when the connection closes."""

    on_close: Callable[[HTTPConnection], None] | None = None

    def __init__(self, server, sock, makefile=MakeFile):
        super().__init__(server, sock, makefile)
        if makefile is MakeFile:  # a TLS adapter may bring a reader and writer of its own: keep them
            self.rfile = _Reader(sock, self.rbufsize)
            self.wfile = _SendallWriter(sock, self.wbufsize)

    def close(self):
        on_close, self.on_close = self.on_close, None
        try:
            super().close()
        finally:
            if on_close is not None:
                on_close(self)


def direct_body_reader(body) -> Callable[[int], bytes] | None:
    """A reader of ``n`` bytes of a request body of known length straight from the socket
    (cheroot's or gunicorn's ``wsgi.input``), or None for any other body (chunked, a test's
    BytesIO): the caller then reads it as usual. A read returns fewer than ``n`` bytes only at
    the end of the body, or when the client closed early."""
    return _cheroot_reader(body) or _gunicorn_reader(body)


#: The most a read allocates before bytes arrive to fill it: a bigger read grows its buffer
#: piece by piece, so a client announcing a huge body costs only what it really sends.
RECV_STEP = 1 << 20


def _recv_block(recv_into, n: int, head: bytes = b"") -> bytes | bytearray:
    """``head`` followed by bytes from the socket, ``n`` in all; fewer if the client closed early
    (a short body, which the caller's byte count finds)."""
    if len(head) >= n:
        return head
    pieces: list[bytearray] = []
    want = n - len(head)
    while want > 0:
        buf = bytearray(min(want, RECV_STEP))
        got = _fill(recv_into, buf)
        pieces.append(buf)
        want -= got
        if got < len(buf):
            del buf[got:]
            break  # the client closed
    if not head and len(pieces) == 1:
        return pieces[0]
    return b"".join([head, *pieces])


def _fill(recv_into, buf: bytearray) -> int:
    """Receive into ``buf`` until it is full or the client closed; returns the bytes received."""
    view = memoryview(buf)
    got = 0
    try:
        while got < len(buf):
            k = recv_into(view[got:])
            if not k:
                break
            got += k
    finally:
        view.release()
    return got


def _cheroot_reader(body) -> Callable[[int], bytes] | None:
    if type(body) is not KnownLengthRFile or not isinstance(body.rfile, StreamReader):
        return None
    rfile = body.rfile
    socket_io = rfile.raw

    def read(n: int) -> bytes:
        n = min(n, body.remaining)
        if n <= 0:
            return b""
        # bytes cheroot holds already come first (read1 then makes no socket read), the rest of
        # the block from the socket
        head = rfile.read1(n) if rfile.has_data() else b""
        data = _recv_block(socket_io.readinto, n, head)
        body.remaining -= len(data)
        rfile.bytes_read += len(data)
        return data

    return read


def _gunicorn_reader(body) -> Callable[[int], bytes] | None:
    try:
        from gunicorn.http.body import Body, LengthReader
        from gunicorn.http.unreader import SocketUnreader
    except ImportError:
        return None
    if type(body) is not Body or type(body.reader) is not LengthReader:
        return None
    reader = body.reader
    unreader = reader.unreader
    if not isinstance(unreader, SocketUnreader):
        return None

    def read(n: int) -> bytes:
        # what gunicorn holds already comes first: the body's own buffer (taken from the reader
        # before), then the socket reader's read-ahead, which may run into the next request;
        # the rest of the block comes from the socket
        held = body.buf.getvalue()
        head = b""
        if held:
            body.buf = io.BytesIO()
            body.buf.write(held[n:])
            head = held[:n]
            if len(head) == n:
                return head
        want = min(n - len(head), reader.length)
        if want <= 0:
            return head
        held = unreader.buf.getvalue()
        try:
            if held:
                unreader.buf = io.BytesIO()
                unreader.buf.write(held[want:])
                data = _recv_block(unreader.sock.recv_into, want, held[:want])
            else:
                data = _recv_block(unreader.sock.recv_into, want)
        except Exception:
            body.failed = True  # where the next request starts is unknown: no keep-alive
            raise
        reader.length -= len(data)
        return head + data if head else data

    return read
