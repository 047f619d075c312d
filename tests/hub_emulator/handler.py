"""The threaded HTTP/1.1 server: one request handler for both origins, with fault injection.

Each response carries ``Content-Length`` so httpx keeps connections alive; a request body the
endpoint did not consume is drained (up to 64 MiB, otherwise the connection is closed) so the next
request on the connection starts at the right byte. File bodies are sent with ``sendfile``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .context import HubContext
from .faults import API_LIMITED_MESSAGE, FaultRule
from .httpio import HttpError, Request, Response, json_response
from .router import Router

logger = logging.getLogger(__name__)

DRAIN_LIMIT = 64 << 20
_CLIENT_GONE = (ConnectionError, socket.timeout, TimeoutError)


class EmulatorHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that remembers its open connections so ``stop()`` can close them."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], ctx: HubContext, router: Router, role: str) -> None:
        self.ctx = ctx
        self.router = router
        self.role = role
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, EmulatorRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


class EmulatorRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "HubEmulator/1.0"
    sys_version = ""
    timeout = 300
    server: EmulatorHTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without NODELAY, Nagle + delayed ACK cost ~40 ms each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._serve()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _serve(self) -> None:
        ctx = self.server.ctx
        req = Request(self.command, self.path, self.headers, self.rfile)
        ctx.stats.incr("requests")
        rule = ctx.faults.take(self.command, self.path)
        try:
            if rule is not None:
                ctx.stats.incr("faults_fired")
                logger.info("fault %s fired for %s %s", rule.kind, self.command, self.path)
                if rule.kind == "hang":
                    rule.hold()
                    self._drop()
                    return
                if rule.kind in ("drop_before", "drop_after_read"):
                    if rule.kind == "drop_after_read":
                        req.drain()
                    self._drop()
                    return
                if rule.kind == "delay":
                    time.sleep(rule.seconds)
                elif rule.kind == "status":
                    req.drain()
                    self._finish(req, self._fault_response(rule))
                    return
            limit_headers: dict[str, str] = {}
            if self.server.role != "storage" and self.path.startswith("/api/"):
                allowed, limit_headers = ctx.faults.api_limit.admit()
                if not allowed:
                    req.drain()
                    self._finish(req, HttpError(429, API_LIMITED_MESSAGE, headers=limit_headers,
                                                header_message=True).to_response())  # fmt: skip
                    return
            response = self._dispatch(req)
            response.headers.update(limit_headers)
            if rule is not None and rule.kind == "drop_after":
                req.drain()
                self._drop()
                return
            self._finish(req, response)
        except _CLIENT_GONE:
            logger.debug("client went away during %s %s", self.command, self.path)
            self.close_connection = True
        finally:
            ctx.stats.incr("bytes_in", req.bytes_read)

    def _dispatch(self, req: Request) -> Response:
        try:
            return self.server.router.handle(req, self.server.role)
        except HttpError as err:
            return err.to_response()
        except _CLIENT_GONE:
            raise
        except Exception as err:  # a bug in an endpoint must not kill the connection silently
            logger.exception("internal error on %s %s", self.command, self.path)
            return json_response({"error": f"Internal error: {err}"}, 500)

    @staticmethod
    def _fault_response(rule: FaultRule) -> Response:
        return HttpError(rule.status, rule.error_message, headers=rule.headers(), header_message=True).to_response()

    def _drop(self) -> None:
        """Close the connection without answering."""
        self.server.ctx.stats.incr("dropped_connections")
        self.close_connection = True

    def _finish(self, req: Request, response: Response) -> None:
        if not req.drain(DRAIN_LIMIT):
            response.headers["Connection"] = "close"
            self.close_connection = True
        self._send(response)

    def _send(self, response: Response) -> None:
        stats = self.server.ctx.stats
        status = response.status
        if status == 429:
            stats.incr("status_429")
        if 400 <= status < 500:
            stats.incr("status_4xx")
        elif status >= 500:
            stats.incr("status_5xx")
        self.send_response(status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(response.content_length))
        self.end_headers()
        if self.command == "HEAD" or response.content_length == 0:
            return
        if response.file is not None:
            try:
                with open(response.file, "rb") as fh:
                    sent = self.connection.sendfile(fh, response.offset, response.length)
            except FileNotFoundError as err:  # deleted by a concurrent super-squash
                raise ConnectionError(f"{response.file} vanished") from err
            if sent != response.length:
                raise ConnectionError(f"short file body: {sent} of {response.length} bytes")
        elif response.stream is not None:
            sent = 0
            for piece in response.stream():
                self.wfile.write(piece)
                sent += len(piece)
            if sent != response.length:
                raise ConnectionError(f"short streamed body: {sent} of {response.length} bytes")
        else:
            self.wfile.write(response.body)
        stats.incr("bytes_out", response.content_length)
