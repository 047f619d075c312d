"""Leaner socket I/O for cheroot, the default HTTP server.

cheroot reads and writes sockets through the pure-Python ``_pyio`` buffered classes. For the
large bodies a storage gateway moves, that costs more CPU than the work itself:

* a read of a PUT block allocates a buffer the size of the whole block for every socket read,
  copies what arrived out of it and joins the pieces (:func:`direct_body_reader` instead
  receives into one buffer per block);
* a write of a GET block is copied into the write buffer, copied again into a ``bytes`` on
  every partial send, and the sent part is cut off the front each time
  (:class:`Connection` writes with ``sendall`` straight from the caller's block).

Both keep cheroot's byte counters right: it decides keep-alive and body draining on them.
"""

from __future__ import annotations

from collections.abc import Callable

from cheroot.makefile import MakeFile, StreamReader, StreamWriter
from cheroot.server import HTTPConnection, KnownLengthRFile


class _SendallWriter(StreamWriter):
    """cheroot's socket writer, with each write sent at once by ``socket.sendall``."""

    def __init__(self, sock, bufsize):
        super().__init__(sock, "wb", bufsize)
        self._sock = sock

    def write(self, b) -> int:
        self._checkClosed()
        with self._write_lock:
            self._flush_unlocked()  # nothing is buffered, unless a subclass of cheroot's did
            self._sock.sendall(b)
        n = len(b) if not isinstance(b, memoryview) else b.nbytes
        self.bytes_written += n
        return n


class Connection(HTTPConnection):
    """cheroot's connection with :class:`_SendallWriter` as its writer (set it as the server's
    ``ConnectionClass``)."""

    def __init__(self, server, sock, makefile=MakeFile):
        super().__init__(server, sock, makefile)
        if makefile is MakeFile:  # a TLS adapter may bring a writer of its own: keep that
            self.wfile = _SendallWriter(sock, self.wbufsize)


def direct_body_reader(body) -> Callable[[int], bytes] | None:
    """A reader of up to ``n`` bytes of a cheroot request body of known length straight from
    the socket, or None for any other body (gunicorn's, chunked, a test's BytesIO). Whatever
    cheroot had buffered already is handed on first."""
    if type(body) is not KnownLengthRFile or not isinstance(body.rfile, StreamReader):
        return None
    rfile = body.rfile
    socket_io = rfile.raw

    def read(n: int) -> bytes:
        n = min(n, body.remaining)
        if n <= 0:
            return b""
        if rfile.has_data():
            data = rfile.read1(n)  # only bytes cheroot holds already, no socket read
        else:
            data = bytearray(n)
            view = memoryview(data)
            got = 0
            while got < n:
                k = socket_io.readinto(view[got:])
                if not k:
                    break  # the client closed early: a short body, found by the byte count
                got += k
            view.release()
            if got < n:
                del data[got:]
        body.remaining -= len(data)
        rfile.bytes_read += len(data)
        return data

    return read
