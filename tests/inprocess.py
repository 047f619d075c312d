"""The gateway's WSGI application served in-process by cheroot on a free loopback port, for
tests that speak HTTP to it but need no separate process."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping

from cheroot import wsgi

from gateway.app import Gateway, build_gateway
from gateway.config import load_settings


@contextlib.contextmanager
def serving(app, *, threads: int = 4) -> Iterator[str]:
    """``app`` served until the block ends; yields its base URL (``http://127.0.0.1:PORT``)."""
    httpd = wsgi.Server(("127.0.0.1", 0), app, numthreads=threads)
    httpd.prepare()
    thread = threading.Thread(target=httpd.serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.bind_addr[1]}"
    finally:
        httpd.stop()
        thread.join(5)


@contextlib.contextmanager
def served_gateway(env: Mapping[str, str], *, threads: int = 4) -> Iterator[tuple[str, Gateway]]:
    """A gateway built from the settings in ``env`` and served: (base URL, gateway); closed after."""
    gw = build_gateway(load_settings(dict(env)))
    try:
        with serving(gw.wsgi_app, threads=threads) as base:
            yield base, gw
    finally:
        gw.close()
