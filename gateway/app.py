"""Composition root: the only module that names concrete classes and wires them together."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field

from gateway.bandwidth import limit_of
from gateway.config import Settings
from gateway.crypto_keys import open_keyring, record_from_json, record_to_json
from gateway.errors import ConfigError
from gateway.files import FileService, chunk_hasher
from gateway.meta.repo import MetadataRepository
from gateway.packing import Packer
from gateway.store.base import ObjectStore
from gateway.store.encrypted import EncryptedStore
from gateway.store.inline import InlineStore
from gateway.store.local import LocalStore
from gateway.trash import Trash, free_reserved_name

log = logging.getLogger(__name__)

ADMIN_PASSWORD_FILE = "admin-password"
#: Database setting holding the encryption key record of the data dir (no secret in it).
ENCRYPTION_SETTING = "encryption"


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
    packer: Packer | None = None

    def close(self) -> None:
        for task in self.background:
            task.stop()
        self.files.close()
        self.store.close()
        self.repo.close()


def build_store(settings: Settings, *, check_repo: bool = True) -> ObjectStore:
    if settings.hub_enabled:
        return build_hub_store(settings, check_repo=check_repo)
    # small objects in one database: a small PUT pays one fsync (see gateway.store.inline)
    return InlineStore(LocalStore(settings.data_dir / "objects"), settings.data_dir / "small-objects.sqlite")


def hub_client(settings: Settings):
    """A client of the settings' dataset repo, with their timeouts and API budget."""
    from gateway.store.hub import HubClient
    from gateway.store.hubhttp import HubLimits

    limits = HubLimits(
        api_timeout=settings.hub_api_timeout,
        commit_timeout=settings.hub_commit_timeout,
        transfer_timeout=settings.hub_transfer_timeout,
        api_budget=settings.hub_api_budget,
    )
    return HubClient(
        settings.hf_dataset_repo,
        token=settings.hf_token,
        endpoint=settings.hf_endpoint,
        limits=limits,
        upload_limit=limit_of(settings.upload_limit, settings.bandwidth_burst),
        download_limit=limit_of(settings.download_limit, settings.bandwidth_burst),
    )


def build_hub_store(settings: Settings, *, check_repo: bool = True) -> ObjectStore:
    """The Hub backend's store: local staging and cache (write-back) in front of the dataset
    repo, which is created (private) if it does not exist. ``check_repo`` False (the data dir
    already holds a drive): the Hub is not contacted here, so a Hub that is down does not keep
    the drive from starting (the sync package checks the repo in the background)."""
    from gateway.store.hub import HubStore, apply_hub_transport
    from gateway.store.writeback import WriteBackStore

    apply_hub_transport(settings.hub_transport, settings.data_dir)
    client = hub_client(settings)
    if check_repo:
        ensure_repo_or_explain(client)
    return WriteBackStore(
        HubStore(client),
        settings.data_dir / "hub",
        staging_limit=settings.staging_limit,
        cache_size=settings.cache_size,
    )


def ensure_repo_or_explain(client) -> str:
    """``client.ensure_repo()``; a Hub that does not answer (or only fails) becomes
    :class:`HubUnreachable` with one line naming the endpoint."""
    from gateway.store.hub import HubError

    try:
        return client.ensure_repo()
    except HubError as exc:
        if not exc.transient:
            raise
        raise client.unreachable(exc) from exc


def seed_encryption_record(repo: MetadataRepository, wb) -> None:
    """A database rebuilt from the dataset repo gets the repo's encryption key record back (it
    lives in the repo's hfdav.json; it holds no secret)."""
    from gateway.sync.hubsync import repo_encryption_record

    record = repo_encryption_record(wb.remote.client)
    if record is not None:
        repo.set_setting(ENCRYPTION_SETTING, record_to_json(record))


def start_hub_sync(settings: Settings, repo: MetadataRepository, files: FileService, wb, packer, sealer=None):
    """Start the uploader and the committer behind the write-back store ``wb``; the file service
    stages chunks through them from now on. Restores an empty database from the repo first.
    ``sealer`` (the keyring, with client-side encryption) seals the repo's metadata files."""
    from gateway.files import chunk_hasher
    from gateway.sync.hubsync import HubSync

    ids_are_sha256 = files.object_hasher is chunk_hasher
    wb.remote.ids_are_sha256 = ids_are_sha256
    sync = HubSync(
        repo=repo,
        wb=wb,
        store=wb.remote,
        client=wb.remote.client,
        state_dir=settings.data_dir / "hub",
        chunk_size=settings.chunk_size,
        durability=settings.durability,
        commit_interval=settings.commit_interval,
        commits_per_hour=settings.commits_per_hour,
        ids_are_sha256=ids_are_sha256,
        small_threshold=packer.threshold if packer is not None else 0,
        pack_small=packer.pack_small_objects if packer is not None else None,
        collect_garbage=files.collect_garbage,
        encryption_record=record_from_json(text) if (text := repo.get_setting(ENCRYPTION_SETTING)) else None,
        sealer=sealer,
    )
    sync.start()
    files.write_back = sync
    return sync


def wrap_encryption(settings: Settings, repo: MetadataRepository, store: ObjectStore):
    """``(store, object_hasher)``: the store wrapped in :class:`EncryptedStore` when the data dir
    is (or, empty and given HFDAV_ENCRYPTION_KEY, becomes) encrypted; else unchanged.

    Raises ConfigError at start for a wrong key, a missing key, or a key given for a data dir
    that already holds unencrypted objects (see :func:`gateway.crypto_keys.open_keyring`).
    """
    text = repo.get_setting(ENCRYPTION_SETTING)
    keyring, new_record = open_keyring(
        settings.encryption_key,
        record_from_json(text) if text else None,
        has_data=lambda: repo.stored_bytes() > 0 or next(iter(store.list_ids()), None) is not None,
        where=f"the data dir {settings.data_dir}",
    )
    if keyring is None:
        return store, chunk_hasher
    if new_record is not None:
        repo.set_setting(ENCRYPTION_SETTING, record_to_json(new_record))
        log.info("client-side encryption set up for the new data dir %s", settings.data_dir)
    encrypted = EncryptedStore(store, keyring)
    return encrypted, encrypted.object_hasher


def check_metadata_present(settings: Settings, repo: MetadataRepository, store: ObjectStore) -> None:
    """ConfigError if the database is empty (just created) while the local store holds objects:
    the database lost its contents (a truncated or replaced file), and starting would show an
    empty drive next to the data. (With the Hub backend an empty database is rebuilt from the
    dataset repo at start instead.)"""
    if settings.hub_enabled or not repo.is_pristine():
        return
    if next(iter(store.list_ids()), None) is None:
        return
    where = getattr(store, "root", settings.data_dir / "objects")
    raise ConfigError([
        f"the metadata database ({settings.database_url}) is empty, but {where} holds stored objects: "
        "the database lost its contents, and starting would show an empty drive. Nothing was changed. "
        "To recover, put the database back from a backup (`hfdav restore --force` with WEBDAV_URL set, "
        "or a copy of the database file) and run `hfdav fsck`; "
        f"to start over with an empty drive instead, move {where} and "
        f"{settings.data_dir / 'small-objects.sqlite'} away.",
    ])  # fmt: skip


def build_gateway(settings: Settings, *, refuse_lost_metadata: bool = True) -> Gateway:
    """Open the database (migrating it), the store, and build the WSGI application.

    ``refuse_lost_metadata``: raise ConfigError for an empty database next to stored objects
    (:func:`check_metadata_present`); maintenance commands that inspect such a data dir pass False.
    """
    from gateway.dav.app import make_wsgi_app

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    repo = MetadataRepository.open(settings.database_url, journal_enabled=settings.hub_enabled)
    repo.keep_versions = settings.versions
    try:
        # a data dir that holds a drive starts without the Hub (it may be down): only a new or
        # emptied database needs the repo before it can serve
        has_drive = not repo.is_pristine()
        base_store = build_store(settings, check_repo=not has_drive)
        if refuse_lost_metadata:
            check_metadata_present(settings, repo, base_store)
        if settings.hub_enabled and not has_drive and repo.get_setting(ENCRYPTION_SETTING) is None:
            seed_encryption_record(repo, base_store)
        store, object_hasher = wrap_encryption(settings, repo, base_store)
    except Exception:
        repo.close()
        raise
    trash = Trash(repo, days=settings.trash_days) if settings.trash_days else None
    files = FileService(
        repo,
        store,
        tmp_dir=settings.data_dir / "tmp",
        chunk_size=settings.chunk_size,
        object_hasher=object_hasher,
        quota=settings.quota,
        trash=trash,
        checksums=settings.checksums,
    )
    moved = free_reserved_name(repo)
    if moved:
        log.warning("a file was stored at the reserved trash path; it was renamed to %s", moved)
    leftovers = files.clean_tmp()
    if leftovers:
        log.info("removed %d pieces of uploads interrupted by a restart", leftovers)
    app = make_wsgi_app(settings, files)
    packer = Packer(repo, store, tmp_dir=files.tmp_dir, object_hasher=files.object_hasher, target=settings.chunk_size)
    background = []
    if settings.hub_enabled:
        try:
            sealer = store.keyring if isinstance(store, EncryptedStore) else None
            background.append(start_hub_sync(settings, repo, files, base_store, packer, sealer))
        except Exception:
            store.close()
            repo.close()
            raise
    gateway = Gateway(settings, repo, store, files, app, background=background, packer=packer)
    app.admin.attach(gateway)  # the admin API's maintenance operations run on it
    return gateway
