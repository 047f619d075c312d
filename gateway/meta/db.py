"""Engine set-up: SQLite (WAL, immediate write transactions) or PostgreSQL; Alembic migrations;
the retry rule for transactions that lost a race; the short lock wait of the health probe.

Failures that a second attempt cures are told apart here, in one place (:func:`is_transient`):

* PostgreSQL deadlocks and serialization failures (SQLSTATE ``40P01``/``40001``): the server
  aborted one of two transactions that waited for each other; running it again succeeds.
* SQLite ``SQLITE_READONLY`` on a connection that was opened while the database file could not
  be written (SQLite then silently opens it read-only, and it stays so for its lifetime even
  once the file is writable again). Such a connection is thrown out of the pool on that error
  (:func:`_on_error`), so the retry gets a fresh one, opened read-write if the file allows it.

:func:`retrying` runs a transaction body again on those, a few times with a growing, jittered
pause; when they keep coming it raises :class:`DatabaseBusy` (answered 503 with Retry-After).

Several processes may start on one fresh database at once (gunicorn workers):
:func:`setup_lock` serializes the schema migration and first set-up across processes (a
PostgreSQL advisory lock, or an flock on a file next to the SQLite database).
"""

from __future__ import annotations

import fcntl
import functools
import gc
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import QueuePool

from gateway.errors import HfdavError

log = logging.getLogger(__name__)

_MIGRATIONS = Path(__file__).with_name("migrations")

#: How long a SQLite writer waits for another writer before failing (seconds).
SQLITE_BUSY_TIMEOUT_S = 60

#: Attempts of a transaction that lost a race (deadlock, serialization failure) or met a
#: read-only SQLite connection before :class:`DatabaseBusy` is raised, and the first pause between two (doubled
#: each time, with jitter: the racers must not meet again in lock-step).
TRANSACTION_ATTEMPTS = 6
RETRY_BASE_S = 0.02

#: Seconds a client is told to wait (Retry-After) when the retries ran out.
RETRY_AFTER_S = 2

#: Milliseconds the health check's write probe waits for another writer's lock.
PROBE_WAIT_MS = 2000

#: PostgreSQL advisory lock key held while a process migrates and sets up the schema.
_SETUP_LOCK_KEY = 0x68666461760001  # "hfdav" 1

_PG_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock
_SQLITE_BUSY = 5
_SQLITE_READONLY = 8
_PG_LOCK_NOT_AVAILABLE = "55P03"


class DatabaseBusy(HfdavError):
    """A transaction kept losing races (or the database kept refusing writes) through every
    attempt. Trying again later may succeed: answer 503 with ``Retry-After``."""

    transient = True
    retry_after = RETRY_AFTER_S


def _sqlite_readonly(orig: BaseException | None) -> bool:
    code = getattr(orig, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == _SQLITE_READONLY


def is_transient(exc: BaseException) -> bool:
    """Would running the whole transaction again (on a fresh connection) likely succeed?

    A lost connection is not: the commit may have gone through before it was lost (PostgreSQL
    connections are checked before use, ``pool_pre_ping``)."""
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _PG_TRANSIENT_SQLSTATES:
        return True
    return _sqlite_readonly(orig)


def is_busy(exc: BaseException) -> bool:
    """Did a statement give up waiting for another writer's lock?"""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == _SQLITE_BUSY
    return getattr(orig, "sqlstate", None) == _PG_LOCK_NOT_AVAILABLE


@contextmanager
def short_lock_wait(conn) -> Iterator[None]:
    """SQLite: the connection waits at most :data:`PROBE_WAIT_MS` for the write lock (instead of
    :data:`SQLITE_BUSY_TIMEOUT_S`) inside the block. PostgreSQL sets ``lock_timeout`` per
    transaction instead."""
    if conn.dialect.name != "sqlite":
        yield
        return
    raw = conn.connection.dbapi_connection
    raw.execute(f"PRAGMA busy_timeout = {PROBE_WAIT_MS}")
    try:
        yield
    finally:
        with suppress(Exception):  # an invalidated connection is closed already
            raw.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")


F = TypeVar("F", bound=Callable)


def retrying(fn: F) -> F:
    """Decorator for a function that runs exactly one transaction: on a transient failure
    (:func:`is_transient`) the transaction has been rolled back, so the function runs again.
    After :data:`TRANSACTION_ATTEMPTS` attempts it raises :class:`DatabaseBusy`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            try:
                return fn(*args, **kwargs)
            except sa_exc.DBAPIError as exc:
                if not is_transient(exc):
                    raise
                if attempt == TRANSACTION_ATTEMPTS:
                    log.warning("%s: gave up after %d attempts: %s", fn.__name__, attempt, exc.orig)
                    raise DatabaseBusy(f"the database refused {attempt} attempts: {exc.orig}") from exc
                log.info("%s: attempt %d lost a race, trying again: %s", fn.__name__, attempt, exc.orig)
                time.sleep(RETRY_BASE_S * 2 ** (attempt - 1) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    return wrapper  # type: ignore[return-value]


#: ``sqlite_begin`` execution option of a read that runs one statement: no ``BEGIN``, since
#: SQLite runs a statement outside a transaction as one of its own (the same snapshot throughout).
SINGLE_STATEMENT = "single-statement"


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
            if mode != SINGLE_STATEMENT:
                conn.exec_driver_sql(f"BEGIN {mode}")

    else:
        engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    event.listen(engine, "handle_error", _on_error)
    return engine


def _on_error(ctx) -> None:
    """A SQLite connection that answers "readonly database" was opened while the file could not
    be written: treat it like a lost connection, so the pool drops it instead of handing it out
    again (every later write on it would fail the same way).

    The pool's idle connections are closed too: the connections of one process share one WAL
    index, opened read-only while any read-only connection stays open, so a connection opened
    after the file became writable again would still be read-only next to them."""
    if _sqlite_readonly(getattr(ctx, "original_exception", None)):
        ctx.is_disconnect = True
        if ctx.engine is not None:
            ctx.engine.dispose()
        gc.collect()  # and connections only garbage still holds (a rare path: worth a collection)


@contextmanager
def setup_lock(engine: Engine) -> Iterator[None]:
    """Held while one process migrates the schema and creates the root folder; the others wait
    (then find the work done). Several workers starting on one fresh database would otherwise
    race to create the same tables."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _SETUP_LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _SETUP_LOCK_KEY})
                conn.commit()
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    fd = os.open(f"{database}.setup-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (creating it on an empty database).
    Call it under :func:`setup_lock` when other processes may start at the same time."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection_engine"] = engine
    before = set(inspect(engine).get_table_names())
    command.upgrade(cfg, "head")
    if "nodes" not in before:
        log.info("created metadata schema at %s", engine.url.render_as_string(hide_password=True))
