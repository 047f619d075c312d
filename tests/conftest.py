"""Shared fixtures for the layered tests: a metadata repository on SQLite or PostgreSQL,
a local store, a file service."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator

import pytest

from gateway.files import FileService
from gateway.meta.repo import MetadataRepository
from gateway.store.local import LocalStore

# A token in the developer's shell must not reach the tests: they talk to the Hub emulator with
# its own token, and a token without HF_DATASET_REPO stops the gateway from starting.
os.environ.pop("HF_TOKEN", None)


class _ErrorRecords(logging.Handler):
    """Keeps the ERROR (and worse) records of the ``gateway`` loggers a test emits."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def _no_unexpected_error_log(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test whose code logged an ERROR from a ``gateway.*`` logger in this process: an
    error nobody asserts on is a defect the test did not see. A test that provokes errors on
    purpose says so with ``@pytest.mark.allow_error_log`` (servers in other processes log
    elsewhere and are not watched)."""
    logger = logging.getLogger("gateway")
    handler = _ErrorRecords()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    if handler.records and request.node.get_closest_marker("allow_error_log") is None:
        lines = [f"{r.name}: {r.levelname}: {r.getMessage()}" for r in handler.records[:10]]
        more = len(handler.records) - len(lines)
        pytest.fail(
            "unexpected ERROR log records (mark the test @pytest.mark.allow_error_log if they are "
            "provoked on purpose):\n  " + "\n  ".join(lines) + (f"\n  ... and {more} more" if more > 0 else ""),
            pytrace=False,
        )


#: PostgreSQL used by the metadata suite; override with HFDAV_TEST_PG_URL.
PG_URL = os.environ.get("HFDAV_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_available() -> str | None:
    """None if PostgreSQL answers, else the reason it does not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    try:
        with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql"), connect_timeout=3):
            return None
    except Exception as exc:  # any connection failure means: no server here
        return f"PostgreSQL not reachable at {PG_URL}: {exc}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'meta.sqlite3'}"
        return
    with pg_schema_url("t_") as url:
        yield url


@contextlib.contextmanager
def pg_schema_url(prefix: str) -> Iterator[str]:
    """The URL of a fresh PostgreSQL schema (dropped afterwards); skips the test, saying why,
    when PostgreSQL cannot be reached."""
    reason = _pg_available()
    if reason:
        pytest.skip(reason)
    import psycopg

    schema = prefix + uuid.uuid4().hex[:12]
    base = PG_URL.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as c:
            c.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def repo(db_url):
    r = MetadataRepository.open(db_url)
    yield r
    r.close()


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "objects", fsync=False)


@pytest.fixture
def files(repo, store, tmp_path):
    return FileService(repo, store, tmp_dir=tmp_path / "tmp", chunk_size=1 << 20)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses the Hub emulator (``hub_transport``) runs once per transport, unless it
    pins one with ``@pytest.mark.parametrize("hub_transport", [...], indirect=True)``. The Xet
    variant of a slow or end-to-end test, or of one allowed 5 minutes or more, is marked slow."""
    if "hub_transport" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", "")
        if "hub_transport" in (names.replace(" ", "").split(",") if isinstance(names, str) else names):
            return
    from tests.hub_fixtures import HUB_TRANSPORTS

    timeout = metafunc.definition.get_closest_marker("timeout")
    long_timeout = timeout is not None and bool(timeout.args) and timeout.args[0] >= 300
    heavy = long_timeout or any(metafunc.definition.get_closest_marker(name) for name in ("slow", "e2e"))
    params = [
        pytest.param(t, marks=pytest.mark.slow) if t == "xet" and heavy else pytest.param(t) for t in HUB_TRANSPORTS
    ]
    metafunc.parametrize("hub_transport", params, indirect=True)


@pytest.fixture
def hub_transport(request, tmp_path, monkeypatch) -> str:
    """``lfs`` or ``xet``: how huggingface_hub uploads to the Hub emulator in this test."""
    from tests.hub_fixtures import use_hub_transport

    transport = getattr(request, "param", "lfs")
    use_hub_transport(transport, monkeypatch, tmp_path / "xet-cache")
    return transport
