"""WSGI entry point for gunicorn: ``gunicorn --config python:gateway.wsgi 'gateway.wsgi:create_app()'``.

Settings come from the environment when the factory runs (in the worker), never at import.

Closing the gateway drains background uploads and commits, which run on thread pools. Python
refuses new thread-pool work once interpreter shutdown has begun, before ``atexit`` handlers
run; so gunicorn closes the gateway from its ``worker_exit`` hook (defined here, loaded with
``--config python:gateway.wsgi``), while the worker is still fully alive. ``atexit`` remains
the fallback for other servers.
"""

from __future__ import annotations

import atexit

from gateway.app import Gateway, build_gateway, ensure_admin_password
from gateway.config import load_settings
from gateway.logs import setup_logging

_open: list[Gateway] = []


def create_app():
    settings = load_settings()
    setup_logging(settings.log_level, settings.log_format)
    settings, _ = ensure_admin_password(settings)
    gateway = build_gateway(settings)
    _open.append(gateway)
    atexit.register(close)
    return gateway.wsgi_app


def close() -> None:
    """Close the gateways this process opened (once; later calls do nothing)."""
    from gateway.admin_api import remove_server_record

    while _open:
        gateway = _open.pop()
        remove_server_record(gateway.settings.data_dir)
        gateway.close()


def post_worker_init(worker) -> None:
    """gunicorn server hook: note the URL the worker serves in the data dir (for ``hfdav``)."""
    from gateway.admin_api import server_url, write_server_record

    if _open and worker.sockets:
        host, port = worker.sockets[0].getsockname()[:2]
        write_server_record(_open[0].settings.data_dir, server_url(host, port))


def worker_exit(server, worker) -> None:
    """gunicorn server hook: runs in the worker after its last request, before Python shuts down."""
    close()
