"""Metadata backup to another WebDAV server: a second copy of the database, independent of the
dataset repo.

What is copied: a consistent snapshot of the SQLite metadata database (``VACUUM INTO`` runs in
one read transaction, so it never sees half a change and never blocks the gateway's writers
under WAL), gzip-compressed. PostgreSQL has its own backup tools; for it the loop does not run
(:func:`sqlite_path` returns None and the caller logs why).

Remote layout, in the folder ``WEBDAV_URL`` (created with MKCOL when missing)::

    hfdav-meta-20260101T120000.123Z-000042-0123456789abcdef.sqlite3.gz
               ^ UTC time taken (ms)   ^ seq  ^ first 16 hex of the sha256 of the file

``seq`` grows by one per generation (the order does not depend on clocks). With client-side
encryption (the database holds an encryption key record) the file is **sealed** and its name ends
in ``.sqlite3.gz.sealed``: the line :data:`SEALED_MAGIC`, the key record (one JSON line; no secret
in it, the same record the dataset repo's ``hfdav.json`` shows), then the gzip sealed with
``purpose="backup"`` (docs/ENCRYPTION.md). Restoring it needs ``HFDAV_ENCRYPTION_KEY``; an
encrypted database is never uploaded in clear. Each upload is
downloaded again and its sha256 compared before older generations are pruned; the newest
:data:`KEEP_GENERATIONS` stay. A snapshot identical to the newest generation is not uploaded
again, so an idle gateway does not churn generations (sealing is randomized, so for sealed
generations the comparison uses the plaintext hash this process last uploaded).

:meth:`MetadataBackup.restore_latest` puts the newest generation that passes every check
(hash in its name, gzip CRC, SQLite ``integrity_check``, a ``nodes`` table) in place of the
database file; older generations are the fallback when the newest is damaged.

:class:`BackupLoop` runs :meth:`MetadataBackup.backup_once` every ``SYNC_INTERVAL`` seconds
in a daemon thread; failures are logged and retried with backoff, and never reach the gateway.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpx2

from gateway.errors import HfdavError, IntegrityError
from gateway.sync.repofmt import BlobSealer

log = logging.getLogger(__name__)

#: Generations kept on the remote server: enough to step back past a snapshot taken right after
#: a mistake, few enough that the folder stays small.
KEEP_GENERATIONS = 5
#: Per-request timeouts (seconds): connecting may be slow on a cold remote; a transfer may not stall longer.
CONNECT_TIMEOUT_S = 30
TRANSFER_TIMEOUT_S = 300
#: First retry after a failed backup, doubled each time, never beyond the sync interval.
RETRY_FIRST_S = 30
#: Bytes per read when streaming files.
IO_BLOCK = 1 << 20

NAME_RE = re.compile(r"^hfdav-meta-(\d{8}T\d{6}\.\d{3}Z)-(\d{6,})-([0-9a-f]{16})\.sqlite3\.gz(\.sealed)?$")
#: First line of a sealed generation (then the key record as one JSON line, then the sealed gzip).
SEALED_MAGIC = b"hfdav-sealed-metadata-backup 1\n"
SEALED_SUFFIX = ".sealed"
#: ``purpose`` bound into a sealed backup (a journal file or snapshot cannot pass for one).
BACKUP_PURPOSE = "backup"
#: Database setting holding the encryption key record (written by the gateway at its first start).
ENCRYPTION_SETTING = "encryption"
_SQLITE_URL_RE = re.compile(r"^sqlite(\+\w+)?:///(?P<path>[^?]+)")

_PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<D:propfind xmlns:D="DAV:"><D:prop><D:getcontentlength/></D:prop></D:propfind>'
)


class BackupError(HfdavError):
    """The remote server refused, the network failed, or a copy did not verify."""

    transient = True


class BackupKeyError(BackupError):
    """A sealed backup cannot be opened or made: no key, or the wrong one (a settings problem)."""

    transient = False


#: Turns a key record into the sealer of that record (raises on a wrong key).
Unlocker = Callable[[dict], BlobSealer]


def sqlite_path(database_url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL; None for other databases (PostgreSQL)."""
    m = _SQLITE_URL_RE.match(database_url)
    if not m or m.group("path") == ":memory:":
        return None
    return Path(m.group("path"))


@dataclass(frozen=True)
class Generation:
    """One backup file on the remote server."""

    name: str
    taken_at: datetime
    seq: int
    sha_prefix: str
    sealed: bool = False

    @classmethod
    def parse(cls, name: str) -> Generation | None:
        m = NAME_RE.match(name)
        if not m:
            return None
        taken = datetime.strptime(m.group(1), "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
        return cls(name, taken, int(m.group(2)), m.group(3), bool(m.group(4)))

    @classmethod
    def make(cls, seq: int, sha256_hex: str, now: datetime, *, sealed: bool = False) -> Generation:
        # milliseconds: boot compares this time with the repo's last commit, often a second apart
        now = now.astimezone(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        stamp = f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z"
        suffix = SEALED_SUFFIX if sealed else ""
        name = f"hfdav-meta-{stamp}-{seq:06d}-{sha256_hex[:16]}.sqlite3.gz{suffix}"
        return cls(name, now, seq, sha256_hex[:16], sealed)


class WebDavFolder:
    """The few WebDAV calls the backup needs, on one folder URL, with Basic credentials."""

    def __init__(self, url: str, username: str | None, password: str | None, *, transport=None):
        self.url = url if url.endswith("/") else url + "/"
        auth = httpx2.BasicAuth(username, password or "") if username else None
        self._client = httpx2.Client(
            auth=auth,
            timeout=httpx2.Timeout(TRANSFER_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            follow_redirects=False,
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def _request(self, method: str, url: str, *, ok: tuple[int, ...], **kwargs) -> httpx2.Response:
        try:
            r = self._client.request(method, url, **kwargs)
        except httpx2.HTTPError as exc:
            raise BackupError(f"{method} {_display(url)}: {type(exc).__name__}: {exc}") from exc
        if r.status_code not in ok:
            raise BackupError(f"{method} {_display(url)}: HTTP {r.status_code}")
        return r

    def ensure(self) -> None:
        """Create the folder (and missing parents) unless it exists."""
        self._ensure(self.url)

    def _ensure(self, url: str) -> None:
        r = self._request("PROPFIND", url, ok=(207, 404, 405), headers={"Depth": "0"}, content=_PROPFIND_BODY)
        if r.status_code == 207:
            return
        made = self._request("MKCOL", url, ok=(201, 405, 409))
        if made.status_code == 409:  # a parent is missing
            parent = urljoin(url, "..")
            if urlsplit(parent).path in ("", "/") or parent == url:
                raise BackupError(f"MKCOL {_display(url)}: HTTP 409 and no parent to create")
            self._ensure(parent)
            self._request("MKCOL", url, ok=(201, 405))

    def names(self) -> list[str]:
        """Names of the files directly in the folder."""
        r = self._request("PROPFIND", self.url, ok=(207,), headers={"Depth": "1"}, content=_PROPFIND_BODY)
        base = urlsplit(self.url).path
        out = []
        for href in ET.fromstring(r.content).iter("{DAV:}href"):
            path = unquote(urlsplit((href.text or "").strip()).path)
            if path.rstrip("/") == unquote(base).rstrip("/"):
                continue
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if name and not path.endswith("/"):
                out.append(name)
        return out

    #: ``progress(label, total_bytes)`` → a :class:`gateway.progress.Progress` for transfers
    #: (``hfdav backup`` and ``restore`` set it; the backup loop transfers quietly).
    progress = None

    def _meter(self, label: str, total: int | None):
        return self.progress(label, total) if self.progress is not None else contextlib.nullcontext()

    def put(self, name: str, source: Path) -> None:
        size = source.stat().st_size
        with source.open("rb") as f, self._meter(f"uploading {name}", size) as bar:

            def blocks():
                while block := f.read(IO_BLOCK):
                    if bar is not None:
                        bar.update(len(block))
                    yield block

            self._request(
                "PUT", self.url + name, ok=(200, 201, 204), content=blocks(),
                headers={"Content-Length": str(size), "Content-Type": "application/gzip"},
            )  # fmt: skip

    def download(self, name: str, dest: Path) -> str:
        """Stream the file into ``dest``; returns its sha256 hex."""
        digest = hashlib.sha256()
        try:
            with self._client.stream("GET", self.url + name) as r, dest.open("wb") as out:
                if r.status_code != 200:
                    raise BackupError(f"GET {_display(self.url + name)}: HTTP {r.status_code}")
                length = r.headers.get("Content-Length")
                with self._meter(f"downloading {name}", int(length) if length else None) as bar:
                    for block in r.iter_bytes(IO_BLOCK):
                        digest.update(block)
                        out.write(block)
                        if bar is not None:
                            bar.update(len(block))
        except httpx2.HTTPError as exc:
            raise BackupError(f"GET {_display(self.url + name)}: {type(exc).__name__}: {exc}") from exc
        return digest.hexdigest()

    def delete(self, name: str) -> None:
        self._request("DELETE", self.url + name, ok=(200, 204, 404))


def _display(url: str) -> str:
    """The URL without credentials, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(IO_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_database(path: Path) -> None:
    """Raise :class:`BackupError` unless ``path`` is an intact hfdav SQLite database."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            result = conn.execute("PRAGMA integrity_check").fetchone()
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as exc:
        raise BackupError(f"not a usable SQLite database: {exc}") from exc
    if not result or result[0] != "ok":
        raise BackupError(f"integrity_check failed: {result}")
    if "nodes" not in tables:
        raise BackupError("no nodes table: not an hfdav metadata database")


def database_key_record(path: Path) -> dict | None:
    """The encryption key record a database copy holds (None: the database is not encrypted)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (ENCRYPTION_SETTING,)).fetchone()
    except sqlite3.OperationalError:  # no settings table: a database never opened by the gateway
        return None
    except sqlite3.Error as exc:
        raise BackupError(f"cannot read the database copy: {exc}") from exc
    if row is None or not row[0]:
        return None
    try:
        record = json.loads(row[0])
    except ValueError as exc:
        raise BackupError(f"the database's encryption key record is not JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise BackupError("the database's encryption key record is not a JSON object")
    return record


def keyring_unlocker(secret) -> Unlocker:
    """An :data:`Unlocker` for ``HFDAV_ENCRYPTION_KEY`` (the keyring is the sealer)."""
    from gateway.crypto_keys import Keyring

    return lambda record: Keyring.unlock(secret, record, where="the metadata backup")


class MetadataBackup:
    """Snapshots of one SQLite database, kept as generations in one remote folder.

    ``unlock`` (given when ``HFDAV_ENCRYPTION_KEY`` is set) turns the key record of an encrypted
    database into the sealer of its backups. An encrypted database is backed up sealed, or not
    at all; a sealed generation is restored only through ``unlock``.
    """

    def __init__(
        self,
        db_path: Path,
        folder: WebDavFolder,
        *,
        keep: int = KEEP_GENERATIONS,
        clock=None,
        unlock: Unlocker | None = None,
    ):
        self.db_path = Path(db_path)
        self.folder = folder
        self.keep = keep
        self._clock = clock or (lambda: datetime.now(UTC))
        self._folder_ready = False
        self._unlock = unlock
        self._sealers: dict[str, BlobSealer] = {}
        #: (name, plaintext sha256) of the newest sealed generation this process uploaded.
        self._last_sealed: tuple[str, str] | None = None

    @classmethod
    def from_settings(cls, settings) -> MetadataBackup | None:
        """None when there is nothing to do: no ``WEBDAV_URL``, or a database other than SQLite."""
        if not settings.webdav_url:
            return None
        path = sqlite_path(settings.database_url)
        if path is None:
            return None
        folder = WebDavFolder(settings.webdav_url, settings.webdav_username, settings.webdav_password)
        key = getattr(settings, "encryption_key", None)
        return cls(path, folder, unlock=keyring_unlocker(key) if key is not None else None)

    def _sealer(self, record: dict) -> BlobSealer:
        """The sealer of ``record`` (unlocked once per record: a passphrase costs a scrypt run)."""
        if self._unlock is None:
            raise BackupKeyError(
                "the metadata database is encrypted (client-side encryption): set HFDAV_ENCRYPTION_KEY "
                "to seal or open its backups"
            )
        ident = json.dumps(record, sort_keys=True)
        sealer = self._sealers.get(ident)
        if sealer is None:
            try:
                sealer = self._unlock(record)
            except HfdavError as exc:  # a wrong key: ConfigError
                raise BackupKeyError(str(exc)) from exc
            self._sealers[ident] = sealer
        return sealer

    def close(self) -> None:
        self.folder.close()

    def generations(self) -> list[Generation]:
        """Generations on the remote server, newest (highest seq) first."""
        found = [g for g in map(Generation.parse, self.folder.names()) if g is not None]
        return sorted(found, key=lambda g: g.seq, reverse=True)

    def snapshot(self, dest: Path) -> str:
        """Write a gzip of a consistent copy of the database to ``dest`` (sealed if the database
        is encrypted); returns the sha256 of ``dest``."""
        return self._snapshot(dest)[0]

    def _snapshot(self, dest: Path) -> tuple[str, str, bool]:
        """``(sha256 of dest, sha256 of the gzip before sealing, sealed)``."""
        if not self.db_path.exists():
            raise BackupError(f"no database at {self.db_path}")
        raw = dest.with_suffix(".raw")
        record = None
        try:
            with contextlib.closing(sqlite3.connect(self.db_path, timeout=60)) as conn:
                conn.execute("VACUUM INTO ?", (str(raw),))
            record = database_key_record(raw)
            # mtime=0 and no file name: identical databases give identical files (and hashes)
            with raw.open("rb") as src, dest.open("wb") as out, gzip.GzipFile(
                filename="", mode="wb", fileobj=out, mtime=0
            ) as gz:
                shutil.copyfileobj(src, gz, IO_BLOCK)
        except sqlite3.Error as exc:
            raise BackupError(f"snapshot of {self.db_path} failed: {exc}") from exc
        finally:
            raw.unlink(missing_ok=True)
        plain_sha = _sha256_of(dest)
        if record is None:
            if self._unlock is not None:
                raise BackupKeyError(
                    "HFDAV_ENCRYPTION_KEY is set but the metadata database holds no encryption key record "
                    "(the gateway writes it at its first start): not uploading it in clear"
                )
            return plain_sha, plain_sha, False
        sealed = self._sealer(record).seal_blob(dest.read_bytes(), purpose=BACKUP_PURPOSE)
        with dest.open("wb") as out:
            out.write(SEALED_MAGIC)
            out.write(json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n")
            out.write(sealed)
        return _sha256_of(dest), plain_sha, True

    def _unseal(self, packed: Path) -> None:
        """Turn the downloaded sealed generation ``packed`` back into its gzip, in place."""
        data = packed.read_bytes()
        if not data.startswith(SEALED_MAGIC):
            raise BackupError("named sealed, but not a sealed hfdav backup")
        line_end = data.find(b"\n", len(SEALED_MAGIC))
        if line_end < 0:
            raise BackupError("damaged key record")
        try:
            record = json.loads(data[len(SEALED_MAGIC) : line_end])
        except ValueError as exc:
            raise BackupError(f"damaged key record: {exc}") from exc
        if not isinstance(record, dict):
            raise BackupError("damaged key record")
        sealer = self._sealer(record)
        try:
            packed.write_bytes(sealer.open_blob(data[line_end + 1 :], purpose=BACKUP_PURPOSE))
        except IntegrityError as exc:
            raise BackupError(f"{exc}") from exc

    def backup_once(self) -> Generation | None:
        """Take a snapshot, upload it, verify it, prune old generations.

        Returns the new generation, or None when the snapshot equals the newest one already
        stored. Raises :class:`BackupError`; the remote folder is never left with an
        unverified newest generation (a bad upload is deleted again).
        """
        with tempfile.TemporaryDirectory(prefix="hfdav-backup-") as tmp:
            local = Path(tmp, "snapshot.sqlite3.gz")
            sha, plain_sha, sealed = self._snapshot(local)
            if not self._folder_ready:
                self.folder.ensure()
                self._folder_ready = True
            existing = self.generations()
            if existing and (
                existing[0].sha_prefix == sha[:16] or (sealed and self._last_sealed == (existing[0].name, plain_sha))
            ):
                log.debug("metadata unchanged since backup %s", existing[0].name)
                return None
            gen = Generation.make((existing[0].seq + 1) if existing else 1, sha, self._clock(), sealed=sealed)
            self.folder.put(gen.name, local)
            copy = Path(tmp, "verify")
            try:
                got = self.folder.download(gen.name, copy)
            except BackupError:
                self._delete_quietly(gen.name)
                raise
            if got != sha:
                self._delete_quietly(gen.name)
                raise BackupError(f"backup {gen.name} came back with sha256 {got[:16]}…, expected {sha[:16]}…")
            size = local.stat().st_size
        if sealed:
            self._last_sealed = (gen.name, plain_sha)
        self._prune([gen, *existing])
        log.info("metadata backed up as %s (%d bytes, verified)", gen.name, size)
        return gen

    def _delete_quietly(self, name: str) -> None:
        try:
            self.folder.delete(name)
        except BackupError as exc:
            log.warning("could not remove unverified backup %s: %s", name, exc)

    def _prune(self, generations: list[Generation]) -> None:
        for old in generations[self.keep :]:
            try:
                self.folder.delete(old.name)
                log.info("removed old metadata backup %s", old.name)
            except BackupError as exc:
                log.warning("could not remove old backup %s: %s", old.name, exc)

    def restore_latest(self, dest: Path | None = None) -> Generation | None:
        """Replace the database file (``dest``, default the configured path) with the newest
        generation that verifies; returns it, or None when the folder holds no generation.

        The caller makes sure no process has the database open. Raises :class:`BackupError`
        when the server cannot be reached or no generation verifies, and :class:`BackupKeyError`
        at once when a sealed generation cannot be opened for want of the right key.
        """
        dest = Path(dest or self.db_path)
        generations = self.generations()
        if not generations:
            return None
        dest.parent.mkdir(parents=True, exist_ok=True)
        problems = []
        for gen in generations:
            with tempfile.TemporaryDirectory(prefix=".hfdav-restore-", dir=dest.parent) as tmp:
                packed, unpacked = Path(tmp, "download.gz"), Path(tmp, "restored.sqlite3")
                try:
                    sha = self.folder.download(gen.name, packed)
                    if sha[:16] != gen.sha_prefix:
                        raise BackupError(f"sha256 {sha[:16]} does not match its name")
                    if gen.sealed:
                        self._unseal(packed)
                    try:
                        with gzip.open(packed, "rb") as src, unpacked.open("wb") as out:
                            shutil.copyfileobj(src, out, IO_BLOCK)
                    except (OSError, EOFError) as exc:
                        raise BackupError(f"damaged gzip: {exc}") from exc
                    check_database(unpacked)
                except BackupKeyError:
                    raise
                except BackupError as exc:
                    log.warning("backup %s not usable: %s", gen.name, exc)
                    problems.append(f"{gen.name}: {exc}")
                    continue
                for suffix in ("-wal", "-shm", "-journal"):
                    Path(f"{dest}{suffix}").unlink(missing_ok=True)
                os.replace(unpacked, dest)
            log.info("metadata restored from backup %s (taken %s)", gen.name, gen.taken_at.isoformat())
            return gen
        raise BackupError("no backup generation could be restored:\n  " + "\n  ".join(problems))


class BackupLoop:
    """Runs :meth:`MetadataBackup.backup_once` every ``interval`` seconds in a daemon thread.

    A failure is logged and retried after ``retry_first`` seconds, doubling up to ``interval``.
    :meth:`stop` ends the thread (waiting for a backup in progress); it takes no backup itself.
    """

    def __init__(self, backup: MetadataBackup, interval: float, *, retry_first: float = RETRY_FIRST_S):
        self.backup = backup
        self.interval = interval
        self.retry_first = retry_first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metadata-backup", daemon=True)
        self.last_success: Generation | None = None
        self.failures = 0

    def start(self) -> BackupLoop:
        self._thread.start()
        return self

    def _run(self) -> None:
        delay = self.interval
        while not self._stop.wait(delay):
            try:
                gen = self.backup.backup_once()
            except Exception as exc:  # the loop survives anything; the gateway never sees it
                self.failures += 1
                delay = min(self.interval, self.retry_first * 2 ** min(self.failures - 1, 16))
                log.warning(
                    "metadata backup failed (attempt %d, next try in %ds): %s", self.failures, delay, exc,
                    exc_info=not isinstance(exc, BackupError),
                )  # fmt: skip
                continue
            self.failures = 0
            delay = self.interval
            if gen is not None:
                self.last_success = gen

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
