"""Logging set-up for the entry points (the package itself only calls logging.getLogger)."""

from __future__ import annotations

import logging
import sys

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


def setup_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpx2", "httpcore", "urllib3", "alembic", "filelock"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.ERROR)
