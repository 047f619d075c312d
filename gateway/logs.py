"""Logging set-up for the entry points (the package itself only calls logging.getLogger)."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_hfdav", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._hfdav = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpx2", "httpcore", "urllib3", "alembic", "filelock"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
