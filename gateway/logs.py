"""Logging set-up for the entry points (the package itself only calls logging.getLogger).

One format for every process: ``hfdav serve``, boot.py, and gunicorn (its arbiter and its
worker; :class:`GunicornLogger` sends gunicorn's error and access logs through the same
handler). ``HFDAV_LOG_FORMAT=json`` writes one JSON object a line instead of text.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from datetime import UTC, datetime

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Start-up notices of WsgiDAV that say nothing to our users: the platform (or nginx) provides
#: TLS, and CORS is off on purpose.
_QUIET = ("wsgidav.wsgidav_app",)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (not at set-up)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``pid``,
    ``message``, and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def formatter(fmt: str = "text") -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else logging.Formatter(FORMAT)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Root logger to stderr in ``fmt`` (``text`` or ``json``) at ``level``."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        root.addHandler(handler)
    handler.setFormatter(formatter(fmt))
    root.setLevel(level)
    for noisy in ("httpx", "httpx2", "httpcore", "urllib3", "alembic", "filelock"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.ERROR)


def setup_from_environment() -> None:
    """:func:`setup_logging` from ``HFDAV_LOG_LEVEL`` and ``HFDAV_LOG_FORMAT`` (for processes
    that have no settings of their own, such as gunicorn's arbiter; the values were checked by
    whoever started it)."""
    level = (os.environ.get("HFDAV_LOG_LEVEL") or "INFO").strip().upper()
    fmt = (os.environ.get("HFDAV_LOG_FORMAT") or "text").strip().lower()
    setup_logging(level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO", fmt)


@functools.cache
def _gunicorn_logger_class():
    from gunicorn.glogging import Logger

    class GunicornLogger(Logger):
        """gunicorn's logger with its handlers replaced by hfdav's: its error log and (when
        turned on) its access log come out in hfdav's format, access lines with the client's
        address as the gateway found it (``X-Forwarded-For`` from a trusted proxy)."""

        def setup(self, cfg):
            super().setup(cfg)
            setup_from_environment()
            for logger in (self.error_log, self.access_log):
                for handler in list(logger.handlers):
                    logger.removeHandler(handler)
                logger.propagate = True

        def atoms(self, resp, req, environ, request_time):
            atoms = super().atoms(resp, req, environ, request_time)
            if environ.get("hfdav.client"):
                atoms["h"] = environ["hfdav.client"]
            return atoms

    return GunicornLogger


def __getattr__(name: str):
    # gunicorn is imported only by the process that asks for its logger class
    if name == "GunicornLogger":
        return _gunicorn_logger_class()
    raise AttributeError(name)
