"""Engine set-up: SQLite (WAL, immediate write transactions) or PostgreSQL; Alembic migrations."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.pool import QueuePool

log = logging.getLogger(__name__)

_MIGRATIONS = Path(__file__).with_name("migrations")

#: How long a SQLite writer waits for another writer before failing (seconds).
SQLITE_BUSY_TIMEOUT_S = 60


def make_engine(url: str, *, pool_size: int = 16) -> Engine:
    """Create the engine. SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` for writers."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            poolclass=QueuePool,
            pool_size=pool_size,
            max_overflow=pool_size,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # pragma: no cover - driver hook
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # pragma: no cover - driver hook
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (creating it on an empty database)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection_engine"] = engine
    before = set(inspect(engine).get_table_names())
    command.upgrade(cfg, "head")
    if "nodes" not in before:
        log.info("created metadata schema at %s", engine.url.render_as_string(hide_password=True))
