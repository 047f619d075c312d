"""Composition root: the only module that names concrete classes and wires them together."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field

from gateway.config import Settings
from gateway.files import FileService
from gateway.meta.repo import MetadataRepository
from gateway.store.base import ObjectStore
from gateway.store.local import LocalStore

log = logging.getLogger(__name__)

ADMIN_PASSWORD_FILE = "admin-password"


def ensure_admin_password(settings: Settings) -> tuple[Settings, bool]:
    """With no SYS_TOKEN, use the password kept in the data dir, generating it the first time.

    Returns the settings (with the password) and whether it was generated just now.
    """
    if settings.admin_password:
        return settings, False
    path = settings.data_dir / ADMIN_PASSWORD_FILE
    if path.exists():
        return settings.with_admin_password(path.read_text().strip()), False
    password = secrets.token_urlsafe(18)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return settings.with_admin_password(password), True


@dataclass
class Gateway:
    """Everything a running server holds; ``close()`` releases it."""

    settings: Settings
    repo: MetadataRepository
    store: ObjectStore
    files: FileService
    wsgi_app: object
    background: list = field(default_factory=list)

    def close(self) -> None:
        for task in self.background:
            task.stop()
        self.store.close()
        self.repo.close()


def build_store(settings: Settings) -> ObjectStore:
    return LocalStore(settings.data_dir / "objects")


def build_gateway(settings: Settings) -> Gateway:
    """Open the database (migrating it), the store, and build the WSGI application."""
    from gateway.dav.app import make_wsgi_app

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    repo = MetadataRepository.open(settings.database_url, journal_enabled=settings.hub_enabled)
    store = build_store(settings)
    files = FileService(repo, store, tmp_dir=settings.data_dir / "tmp", chunk_size=settings.chunk_size)
    leftovers = files.clean_tmp()
    if leftovers:
        log.info("removed %d pieces of uploads interrupted by a restart", leftovers)
    app = make_wsgi_app(settings, files)
    return Gateway(settings, repo, store, files, app)
