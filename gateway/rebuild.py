"""``hfdav rebuild``: a new metadata database from the dataset repo alone.

The repo holds everything needed (FORMAT.md): the newest snapshot plus the journal files after
it. The rebuild is the same start-up the gateway does on an empty database
(:class:`gateway.sync.hubsync.HubSync`), run on its own: open an empty database, load the repo,
settle, stop. An existing database is replaced only with ``force`` (SQLite: its files are
removed first; a PostgreSQL database must be emptied by its owner).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from gateway.config import Settings
from gateway.errors import ConfigError, HfdavError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RebuildReport:
    nodes: int
    files: int
    bytes: int


class RebuildRefused(HfdavError):
    """The database is not empty and replacing it was not asked for (or is not possible)."""


def _sqlite_file(url: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(url[len(prefix) :]) if url.startswith(prefix) else None


def rebuild(settings: Settings, *, force: bool = False) -> RebuildReport:
    """Rebuild the metadata database of ``settings`` from the dataset repo."""
    if not settings.hub_enabled:
        raise ConfigError(["hfdav rebuild needs the Hub backend: set HF_DATASET_REPO and HF_TOKEN"])
    from gateway.app import build_gateway
    from gateway.meta.repo import MetadataRepository

    db_file = _sqlite_file(settings.database_url)
    if db_file is None or db_file.exists():
        repo = MetadataRepository.open(settings.database_url)
        try:
            pristine = repo.is_pristine()
        finally:
            repo.close()
        if not pristine:
            if not force:
                raise RebuildRefused(
                    f"the metadata database {db_file or settings.database_url} is not empty; "
                    "stop the server and pass --force to replace it"
                )
            if db_file is None:
                raise RebuildRefused("--force replaces SQLite databases only; empty the PostgreSQL database first")
            log.warning("removing the metadata database %s to rebuild it", db_file)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    gateway = build_gateway(settings)
    try:
        repo = gateway.repo
        files = [n for n in repo.walk("") if not n.is_dir]
        return RebuildReport(repo.count_nodes() - 1, len(files), sum(n.size for n in files))
    finally:
        gateway.close()
