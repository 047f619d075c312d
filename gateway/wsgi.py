"""WSGI entry point for gunicorn: ``gunicorn 'gateway.wsgi:create_app()'``.

Settings come from the environment when the factory runs (in the worker), never at import.
"""

from __future__ import annotations

import atexit

from gateway.app import build_gateway, ensure_admin_password
from gateway.config import load_settings
from gateway.logs import setup_logging


def create_app():
    settings = load_settings()
    setup_logging(settings.log_level)
    settings, _ = ensure_admin_password(settings)
    gateway = build_gateway(settings)
    atexit.register(gateway.close)
    return gateway.wsgi_app
