r"""Settings: built once from the environment (and command-line overrides), frozen, validated.

Nothing here runs at import time; :func:`load_settings` is called by the entry points and the
result is passed down. :func:`load_settings` reports every problem at once in a
:class:`~gateway.errors.ConfigError`.

Environment variables (command-line flags of ``hfdav serve`` override them):

==========================  ==========================================================
``SYS_TOKEN``               password of user ``admin`` (read-write). Unset: generated once,
                            kept in ``<data dir>/admin-password`` and printed once.
``HFDAV_USERS``             more users: ``name:password[:rw|ro]`` separated by ``,``, ``;``
                            or newlines (default right ``rw``; the right is case-insensitive).
                            A ``\`` escapes the next character (``\:``, ``\,``, ``\;``,
                            ``\\``); with three fields or more the last one must be the right,
                            so ``name:pa:ss:rw`` also gives the password ``pa:ss``.
``HFDAV_USERS_FILE``        more users from an htpasswd file (``htpasswd -B``: bcrypt hashes),
                            one ``name:hash[:rw|ro]`` a line. These users log in with Basic only.
``HFDAV_ANONYMOUS``         ``none`` (default), ``ro`` or ``rw``: access without a password.
``HFDAV_DIGEST``            ``on`` (default) or ``off``: offer and accept HTTP Digest besides Basic
``HFDAV_CHECKSUMS``         ``on`` (default) or ``off``: compute MD5 and SHA-1 of every upload for sync clients
``HFDAV_TRUSTED_PROXIES``   addresses or networks whose ``X-Forwarded-For`` / ``X-Real-IP`` name
                            the client (default ``127.0.0.0/8,::1``; ``none``: trust no header)
``HFDAV_LOGIN_FAILURES``    failed logins per client address or user before 429 (default 10)
``HFDAV_HOST``              listen address (default ``127.0.0.1``)
``HFDAV_PORT``              listen port (default ``8000``)
``HFDAV_PREFIX``            URL prefix of the WebDAV share (default ``/``; ``/dav`` behind nginx)
``HFDAV_S3_PREFIX``         URL prefix of the S3-compatible API (default ``/s3``; empty or ``off``
                            turns it off); buckets are the top-level folders of the drive
``HFDAV_S3_REGION``         the region S3 clients are told (default ``us-east-1``)
``HFDAV_S3_KEYS``           more S3 keys: ``key-id:secret:user`` separated by ``,`` (the user's
                            rights apply; users with a bcrypt hash can use S3 this way)
``HFDAV_DATA_DIR``          data directory (default ``./data``)
``HFDAV_DATABASE_URL``      SQLAlchemy URL (default SQLite file ``<data dir>/meta.sqlite3``)
``HFDAV_CHUNK_SIZE``        chunk size (default ``50MiB``; ``1MiB`` … ``1GiB``)
``HFDAV_THREADS``           request threads (default 32)
``HFDAV_MAX_HEADER_BYTES``  request line and headers together (default ``64KiB``): more is
                            answered 431; under gunicorn each line also at most 8190 bytes,
                            behind nginx at most a quarter of this (414 or 400)
``HFDAV_HEADER_TIMEOUT``    seconds from a request's first byte to the end of its headers
                            (default 20; total, however slowly they trickle): then 408
``HFDAV_IDLE_TIMEOUT``      seconds a kept-alive connection may wait for its next request
                            (default 60)
``HFDAV_BODY_TIMEOUT``      seconds a body read or response write may wait for the client
                            (default 60, per read or write, not per body)
``HFDAV_MAX_CONNECTIONS``   connections open at once (default 1000, capped by the open-files
                            limit): cheroot answers more with 503 and Retry-After, gunicorn
                            leaves them queued in the kernel; nginx takes what its open-files
                            limit allows
``HFDAV_MAX_CONNECTIONS_PER_CLIENT``
                            connections from one peer address (default 128; 0: no limit;
                            ``hfdav serve`` only: behind a proxy all clients share its address)
``HFDAV_LISTEN_BACKLOG``    connections the kernel queues before they are accepted (default
                            1024, capped by ``net.core.somaxconn``)
``HFDAV_LOG_LEVEL``         ``DEBUG`` … ``ERROR`` (default ``INFO``)
``HF_TOKEN``                Hugging Face token (Hub backend)
``HF_DATASET_REPO``         ``namespace/name`` of the dataset repo (Hub backend)
``HF_ENDPOINT``             Hub URL (default ``https://huggingface.co``), read by huggingface_hub
``HFDAV_DURABILITY``        ``async`` (default) or ``sync`` (Hub backend)
``HFDAV_HUB_TRANSPORT``     ``xet`` (default; ``lfs`` when ``HF_HUB_DISABLE_XET`` is set) or
                            ``lfs``: how chunks go to the Hub; with Xet its
                            cache lives in ``<data dir>/.cache/hf`` and telemetry is off unless
                            ``HF_HUB_DISABLE_TELEMETRY`` is set
``HFDAV_HUB_API_TIMEOUT``   seconds a Hub API call may wait to connect or for each piece of
                            its answer (default 20); commits: ``HFDAV_HUB_COMMIT_TIMEOUT``
                            (default 120); transfers (LFS PUTs, reads):
                            ``HFDAV_HUB_TRANSFER_TIMEOUT`` (default 45, per read or write)
``HFDAV_HUB_API_BUDGET``    Hub API calls hfdav makes per 5-minute window at most (default
                            1000, a free account's limit); background calls wait beyond
``HFDAV_CACHE_SIZE``        on-disk chunk cache (default ``10GiB``)
``HFDAV_STAGING_LIMIT``     staged-but-not-uploaded bytes before PUTs wait (default ``2GiB``)
``HFDAV_COMMIT_INTERVAL``   seconds a change may wait for more to share its Hub commit (default
                            30; async durability)
``HFDAV_COMMITS_PER_HOUR``  Hub commit budget (default 90; the Hub allows about 128 per hour)
``HFDAV_TRASH_DAYS``        days deleted files stay restorable in ``/.hfdav-trash`` (default 7; 0: off)
``HFDAV_VERSIONS``          earlier versions kept per file after an overwrite (default 0: off; e.g.
                            5). Unchanged chunks are shared, so a version costs only what changed;
                            on the Hub they count against the repo's storage until gc prunes them
``HFDAV_QUOTA``             bytes the drive may hold (e.g. ``100GiB``); shown to clients, PUTs
                            beyond it get 507. Default: no quota.
``HFDAV_MAX_XML_BODY``      largest XML request body (PROPFIND, PROPPATCH, LOCK) accepted;
                            bigger ones get 413 before they are read (default ``1MiB``)
``HFDAV_MAX_PROPFIND_INFINITY``
                            members a PROPFIND with ``Depth: infinity`` (or without Depth)
                            may list (default 10000; 0: always refused): over it, 403 with
                            the ``propfind-finite-depth`` precondition (Depth 1 still works)
``HFDAV_MAX_COPY_MEMBERS``  members a COPY of a folder may copy (default 10000; each is a
                            database row, and the time of the request): over it, 507
``HFDAV_ENCRYPTION_KEY``    client-side encryption: 64 hex digits or base64 of a 32-byte key,
                            or ``passphrase:<text>`` (see gateway/crypto_keys.py and
                            docs/ENCRYPTION.md). Unset: no encryption.
``WEBDAV_URL``              metadata backup target (WebDAV folder URL)
``WEBDAV_USERNAME``         its user
``WEBDAV_PASSWORD``         its password
``SYNC_INTERVAL``           seconds between metadata backups (default 3600)
==========================  ==========================================================
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway.crypto_keys import EncryptionSecret, parse_encryption_key
from gateway.errors import ConfigError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

#: Default chunk size. 50 MiB keeps a 1 TB file under 20k objects (Hub: ≤ 10k files per
#: folder is handled by sharding) and each chunk well under the Hub's 5 GB single-PUT limit.
DEFAULT_CHUNK_SIZE = 50 * MiB
MIN_CHUNK_SIZE = 1 * MiB
MAX_CHUNK_SIZE = 1 * GiB

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_USER_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def parse_size(text: str) -> int:
    """``"50MiB"``, ``"50M"``, ``"52428800"`` → bytes (K/M/G/T are binary multiples)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r} (examples: 52428800, 50MiB, 2G)")
    number, unit = float(m.group(1)), m.group(2).lower()
    factor = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": TiB}[unit]
    return int(number * factor)


#: The example value of ``SYS_TOKEN`` in ``.env.example`` and the example user passwords there:
#: refused at start, a copied example file must not open the drive to anyone who read it.
PLACEHOLDER_PASSWORDS = frozenset({"change-me-to-a-long-random-password", "alice-password", "guest-password"})
#: Password hash formats of ``HFDAV_USERS_FILE`` (bcrypt, as ``htpasswd -B`` writes it).
_BCRYPT_RE = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
DEFAULT_TRUSTED_PROXIES = ("127.0.0.0/8", "::1/128")
DEFAULT_LOGIN_FAILURES = 10


@dataclass(frozen=True)
class User:
    """A user of the drive: a clear-text ``password`` (Basic and Digest) or a bcrypt
    ``password_hash`` (Basic only)."""

    name: str
    password: str | None = field(default=None, repr=False)
    can_write: bool = True
    password_hash: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Settings:
    """Everything the gateway needs to know, validated. Build with :func:`load_settings`."""

    data_dir: Path
    database_url: str
    host: str = "127.0.0.1"
    port: int = 8000
    prefix: str = "/"
    s3_prefix: str | None = "/s3"
    s3_region: str = "us-east-1"
    #: (access key id, secret, user name) of HFDAV_S3_KEYS
    s3_keys: tuple[tuple[str, str, str], ...] = field(default=(), repr=False)
    chunk_size: int = DEFAULT_CHUNK_SIZE
    threads: int = 32
    log_level: str = "INFO"
    log_format: str = "text"
    mode: str = "local"
    admin_password: str | None = field(default=None, repr=False)
    users: tuple[User, ...] = ()
    anonymous: str = "none"
    digest: bool = True
    checksums: bool = True
    trusted_proxies: tuple[str, ...] = DEFAULT_TRUSTED_PROXIES
    login_failures: int = DEFAULT_LOGIN_FAILURES
    hf_token: str | None = field(default=None, repr=False)
    hf_dataset_repo: str | None = None
    hf_endpoint: str | None = None
    durability: str = "async"
    hub_transport: str = "lfs"
    hub_api_timeout: int = 20
    hub_commit_timeout: int = 120
    hub_transfer_timeout: int = 45
    hub_api_budget: int = 1000
    cache_size: int = 10 * GiB
    #: Limits of remote traffic in bytes per second (None: none), and the burst each allows.
    upload_limit: int | None = None
    download_limit: int | None = None
    bandwidth_burst: int | None = None
    staging_limit: int = 2 * GiB
    commit_interval: float = 30.0
    commits_per_hour: int = 90
    encryption_key: EncryptionSecret | None = field(default=None, repr=False)
    webdav_url: str | None = None
    webdav_username: str | None = None
    webdav_password: str | None = field(default=None, repr=False)
    sync_interval: int = 3600
    trash_days: float = 7
    versions: int = 0
    quota: int | None = None
    max_xml_body: int = 1 * MiB
    max_propfind_infinity: int = 10_000
    max_copy_members: int = 10_000
    max_header_bytes: int = 64 * KiB
    header_timeout: int = 20
    idle_timeout: int = 60
    body_timeout: int = 60
    max_connections: int = 1000
    max_connections_per_client: int = 128
    listen_backlog: int = 1024

    @property
    def hub_enabled(self) -> bool:
        return bool(self.hf_dataset_repo)

    def with_admin_password(self, password: str) -> Settings:
        return replace(self, admin_password=password)


def _split_users(text: str) -> list[list[str]]:
    """``HFDAV_USERS`` as entries of fields: ``,`` ``;`` and newlines end an entry, ``:`` ends
    a field, ``\\`` makes the next character plain. Fields are trimmed; blank entries dropped.
    A trailing lone ``\\`` is kept as is."""
    entries: list[list[str]] = []
    fields: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, "\\"))
        elif ch == ":":
            fields.append("".join(current).strip())
            current = []
        elif ch in ",;\n":
            fields.append("".join(current).strip())
            entries.append(fields)
            fields, current = [], []
        else:
            current.append(ch)
    fields.append("".join(current).strip())
    entries.append(fields)
    return [e for e in entries if e != [""]]


def _right(text: str) -> str | None:
    """``rw`` or ``ro`` for a right written in any case, else None."""
    right = text.strip().lower()
    return right if right in ("rw", "ro") else None


def _check_name(name: str, where: str, seen: set[str], problems: list[str]) -> bool:
    """Whether ``name`` is a valid, new user name; a problem line otherwise. An invalid name is
    not repeated in the message: it may be a password typed in the wrong place."""
    if not _USER_NAME_RE.match(name):
        problems.append(f"{where}: the user name is not valid (1-64 letters, digits, _ . @ -)")
        return False
    if name == "admin":
        problems.append(f"{where}: the name 'admin' is reserved for the SYS_TOKEN user")
        return False
    if name in seen:
        problems.append(f"{where}: user {name!r} is defined twice")
        return False
    seen.add(name)
    return True


def _parse_users(text: str, problems: list[str], seen: set[str]) -> list[User]:
    """``HFDAV_USERS`` (see the module docstring). Problems never quote a password."""
    users: list[User] = []
    for number, fields in enumerate(_split_users(text), 1):
        where = f"HFDAV_USERS entry {number}"
        if len(fields) < 2:
            problems.append(f"{where}: no ':' between the user name and the password (use name:password[:rw|ro])")
            continue
        right = "rw"
        if len(fields) >= 3:
            right = _right(fields[-1])
            if right is None:
                problems.append(
                    f"{where}: the last field is not a right (rw or ro); a password containing ':' "
                    "is written with its right at the end (name:pa:ss:rw) or as \\:"
                )
                continue
            fields = fields[:-1]
        name, password = fields[0], ":".join(fields[1:])
        if not _check_name(name, where, seen, problems):
            continue
        if not password:
            problems.append(f"{where}: user {name!r} has no password")
            continue
        if password in PLACEHOLDER_PASSWORDS:
            problems.append(f"{where}: user {name!r} has the example password of .env.example; choose a real one")
            continue
        users.append(User(name, password, right == "rw"))
    return users


def _read_users_file(path: Path, problems: list[str], seen: set[str]) -> list[User]:
    """An htpasswd-style file: ``name:bcrypt-hash[:rw|ro]`` a line, ``#`` comments. Only bcrypt
    (``$2y$`` as ``htpasswd -B`` writes it, ``$2a$``, ``$2b$``): the other htpasswd formats
    (MD5 ``$apr1$``, SHA-1, crypt, clear text) are too weak or too slow to check safely."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"HFDAV_USERS_FILE={path}: cannot be read ({exc.__class__.__name__})")
        return []
    users: list[User] = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"HFDAV_USERS_FILE line {number}"
        fields = line.split(":")
        if len(fields) not in (2, 3) or (len(fields) == 3 and _right(fields[2]) is None):
            problems.append(f"{where}: expected name:hash or name:hash:rw|ro")
            continue
        name, digest = fields[0].strip(), fields[1].strip()
        if not _check_name(name, where, seen, problems):
            continue
        if not _BCRYPT_RE.match(digest):
            problems.append(f"{where}: user {name!r} has no bcrypt hash (create the file with htpasswd -B)")
            continue
        right = _right(fields[2]) if len(fields) == 3 else "rw"
        users.append(User(name, None, right == "rw", password_hash=digest))
    return users


def _parse_s3_keys(text: str, users: set[str], problems: list[str]) -> tuple[tuple[str, str, str], ...]:
    """``HFDAV_S3_KEYS``: ``key-id:secret:user`` entries separated by ``,``; never quotes a secret."""
    keys: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for number, entry in enumerate((e.strip() for e in text.split(",")), 1):
        if not entry:
            continue
        key_id, _, rest = entry.partition(":")
        secret, _, user = rest.rpartition(":")
        where = f"HFDAV_S3_KEYS entry {number}"
        if not re.match(r"^[A-Za-z0-9_.@-]{3,128}$", key_id) or not secret or not user:
            problems.append(f"{where}: expected key-id:secret:user (key id of 3-128 letters, digits, _ . @ -)")
        elif user not in users:
            problems.append(f"{where}: names no configured user")
        elif key_id in seen or key_id in users:
            problems.append(f"{where}: the key id is taken (by another key or as a user name)")
        else:
            seen.add(key_id)
            keys.append((key_id, secret, user))
    return tuple(keys)


def _parse_trusted_proxies(text: str | None, problems: list[str]) -> tuple[str, ...]:
    """``HFDAV_TRUSTED_PROXIES``: addresses or networks separated by commas; ``none`` for none."""
    if text is None:
        return DEFAULT_TRUSTED_PROXIES
    if text.lower() == "none":
        return ()
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            problems.append(f"HFDAV_TRUSTED_PROXIES: {item!r} is not an address or network (e.g. 10.0.0.0/8)")
    return tuple(networks)


def _check_admin_password(password: str | None, problems: list[str]) -> None:
    if password in PLACEHOLDER_PASSWORDS:
        problems.append(
            "SYS_TOKEN is the example value of .env.example: set a long random password "
            "(e.g. the output of `openssl rand -base64 24`), or leave it unset to have one generated"
        )


def int_setting(env: Mapping[str, str], name: str, default: int, lo: int, hi: int, problems: list[str]) -> int:
    """The integer setting ``name`` of ``env`` (``default`` when unset or blank); a value that is
    no integer or outside ``lo``…``hi`` adds a line to ``problems``."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        problems.append(f"{name}={raw!r}: not an integer")
        return default
    if not lo <= value <= hi:
        problems.append(f"{name}={value}: must be between {lo} and {hi}")
    return value


def load_settings(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build and validate :class:`Settings`; raise :class:`ConfigError` listing every problem.

    ``overrides`` maps field names to values already parsed by the command line (``None``
    values are ignored).
    """
    env = dict(os.environ if environ is None else environ)
    over = {k: v for k, v in (overrides or {}).items() if v is not None}
    problems: list[str] = []

    def text(name: str, default: str | None = None) -> str | None:
        value = env.get(name)
        return value.strip() if value is not None and value.strip() != "" else default

    def integer(name: str, default: int, lo: int, hi: int) -> int:
        return int_setting(env, name, default, lo, hi, problems)

    def size(name: str, default: int, lo: int, hi: int) -> int:
        raw = text(name)
        if raw is None:
            return default
        try:
            value = parse_size(raw)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
            return default
        if not lo <= value <= hi:
            problems.append(f"{name}={raw}: must be between {lo} and {hi} bytes")
        return value

    def rate(name: str) -> int | None:
        """A bandwidth limit: ``10M``, ``10MiB/s``, ``500k`` (binary multiples; 0 or unset: none)."""
        raw = text(name)
        if raw is None:
            return None
        try:
            value = parse_size(raw.strip().removesuffix("/s").removesuffix("/S"))
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
            return None
        if 0 < value < 16 * KiB:
            problems.append(f"{name}={raw}: a limit below 16 KiB/s would stall transfers (0 turns it off)")
        return value or None

    def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
        raw = (text(name) or default).lower()
        if raw not in allowed:
            problems.append(f"{name}={raw!r}: must be one of {', '.join(allowed)}")
            return default
        return raw

    data_dir = Path(over.get("data_dir") or text("HFDAV_DATA_DIR", "./data")).expanduser().resolve()
    database_url = over.get("database_url") or text("HFDAV_DATABASE_URL") or f"sqlite:///{data_dir / 'meta.sqlite3'}"
    if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", database_url):
        scheme = database_url.split(":")[0]
        problems.append(f"HFDAV_DATABASE_URL: only sqlite:/// and postgresql:// URLs are supported, got {scheme}:…")

    prefix = over.get("prefix") or text("HFDAV_PREFIX", "/")
    if not prefix.startswith("/") or "//" in prefix or any(c in prefix for c in "?#% "):
        problems.append(f"HFDAV_PREFIX={prefix!r}: must be a plain path such as / or /dav")
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else "/"

    s3_prefix = env.get("HFDAV_S3_PREFIX", "/s3").strip()
    if s3_prefix.lower() in ("", "off"):
        s3_prefix = None
    elif not s3_prefix.startswith("/") or "//" in s3_prefix or any(c in s3_prefix for c in "?#% ") \
            or not s3_prefix.strip("/"):  # fmt: skip
        problems.append(f"HFDAV_S3_PREFIX={s3_prefix!r}: must be a plain path such as /s3, or off")
        s3_prefix = None
    else:
        s3_prefix = "/" + s3_prefix.strip("/")
        if s3_prefix == prefix or s3_prefix.startswith(prefix.rstrip("/") + "/") and prefix != "/":
            problems.append(f"HFDAV_S3_PREFIX={s3_prefix!r}: must not lie inside the WebDAV share {prefix!r}")
    s3_region = text("HFDAV_S3_REGION", "us-east-1")
    if not re.match(r"^[a-z0-9-]{1,32}$", s3_region):
        problems.append(f"HFDAV_S3_REGION={s3_region!r}: must look like us-east-1")

    log_level = (text("HFDAV_LOG_LEVEL", "INFO") or "INFO").upper()
    if log_level not in _LOG_LEVELS:
        problems.append(f"HFDAV_LOG_LEVEL={log_level!r}: must be one of {', '.join(_LOG_LEVELS)}")
        log_level = "INFO"

    repo = text("HF_DATASET_REPO")
    token = text("HF_TOKEN")
    mode = (over.get("mode") or text("HFDAV_MODE") or "").lower()
    if mode not in ("", "local", "hub"):
        problems.append(f"HFDAV_MODE={mode!r}: must be hub or local")
        mode = ""
    if mode == "local":
        repo = None  # asked for: the Hub settings are not used
    elif mode == "hub" and not (repo and token):
        missing = " and ".join(n for n, v in (("HF_TOKEN", token), ("HF_DATASET_REPO", repo)) if not v)
        problems.append(f"HFDAV_MODE=hub needs {missing} (a write token and the dataset repo, namespace/name)")
    elif token and not repo:
        problems.append(
            "HF_TOKEN is set but HF_DATASET_REPO is not: set HF_DATASET_REPO=namespace/name for the Hub "
            "backend, or HFDAV_MODE=local (hfdav serve --local) to keep the drive on this disk"
        )
    elif repo and not token:
        problems.append("HF_DATASET_REPO is set but HF_TOKEN is not: the Hub backend needs a write token")
    if repo and not _REPO_RE.match(repo):
        problems.append(f"HF_DATASET_REPO={repo!r}: must look like namespace/name")

    encryption_key = None
    if text("HFDAV_ENCRYPTION_KEY") is not None:
        try:
            encryption_key = parse_encryption_key(text("HFDAV_ENCRYPTION_KEY"))
        except ValueError as exc:
            problems.append(str(exc))

    webdav_url = text("WEBDAV_URL")
    if webdav_url and not re.match(r"^https?://", webdav_url):
        problems.append(f"WEBDAV_URL={webdav_url!r}: must start with http:// or https://")

    host = over.get("host") or text("HFDAV_HOST", "127.0.0.1")
    port = over["port"] if "port" in over else integer("HFDAV_PORT", 8000, 0, 65535)
    if not 0 <= int(port) <= 65535:
        problems.append(f"--port {port}: must be between 0 and 65535")
    chunk_size = (
        over["chunk_size"]
        if "chunk_size" in over
        else size("HFDAV_CHUNK_SIZE", DEFAULT_CHUNK_SIZE, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE)
    )

    admin_password = over.get("admin_password") or text("SYS_TOKEN")
    _check_admin_password(admin_password, problems)
    seen_users: set[str] = set()
    users = _parse_users(env.get("HFDAV_USERS", ""), problems, seen_users)
    users_file = text("HFDAV_USERS_FILE")
    if users_file:
        users += _read_users_file(Path(users_file).expanduser(), problems, seen_users)

    s3_keys = _parse_s3_keys(env.get("HFDAV_S3_KEYS", ""), {u.name for u in users} | {"admin"}, problems)

    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        host=host,
        port=int(port),
        prefix=prefix,
        s3_prefix=s3_prefix,
        s3_region=s3_region,
        s3_keys=s3_keys,
        chunk_size=chunk_size,
        threads=over.get("threads") or integer("HFDAV_THREADS", 32, 1, 512),
        log_level=log_level,
        log_format=choice("HFDAV_LOG_FORMAT", "text", ("text", "json")),
        mode="hub" if repo else "local",
        admin_password=admin_password,
        users=tuple(users),
        anonymous=choice("HFDAV_ANONYMOUS", "none", ("none", "ro", "rw")),
        digest=choice("HFDAV_DIGEST", "on", ("on", "off")) == "on",
        checksums=choice("HFDAV_CHECKSUMS", "on", ("on", "off")) == "on",
        trusted_proxies=_parse_trusted_proxies(text("HFDAV_TRUSTED_PROXIES"), problems),
        login_failures=integer("HFDAV_LOGIN_FAILURES", DEFAULT_LOGIN_FAILURES, 2, 1000),
        hf_token=token,
        hf_dataset_repo=repo,
        hf_endpoint=text("HF_ENDPOINT"),
        durability=choice("HFDAV_DURABILITY", "async", ("async", "sync")),
        # lfs by default: measured, it costs the gateway a third less CPU per GiB and a quarter
        # of Xet's memory, and was faster (docs/HUB.md, "Transports")
        hub_transport=choice("HFDAV_HUB_TRANSPORT", "lfs", ("xet", "lfs")),
        hub_api_timeout=integer("HFDAV_HUB_API_TIMEOUT", 20, 1, 3600),
        hub_commit_timeout=integer("HFDAV_HUB_COMMIT_TIMEOUT", 120, 1, 3600),
        hub_transfer_timeout=integer("HFDAV_HUB_TRANSFER_TIMEOUT", 45, 1, 3600),
        hub_api_budget=integer("HFDAV_HUB_API_BUDGET", 1000, 10, 1_000_000),
        cache_size=size("HFDAV_CACHE_SIZE", 10 * GiB, 0, 1 << 50),
        upload_limit=rate("HFDAV_UPLOAD_LIMIT"),
        download_limit=rate("HFDAV_DOWNLOAD_LIMIT"),
        bandwidth_burst=size("HFDAV_BANDWIDTH_BURST", 0, 0, 1 << 40) or None,
        staging_limit=size("HFDAV_STAGING_LIMIT", 2 * GiB, 2 * MiB, 1 << 50),
        commit_interval=integer("HFDAV_COMMIT_INTERVAL", 30, 0, 24 * 3600),
        commits_per_hour=integer("HFDAV_COMMITS_PER_HOUR", 90, 1, 3600),
        encryption_key=encryption_key,
        webdav_url=webdav_url,
        webdav_username=text("WEBDAV_USERNAME"),
        webdav_password=text("WEBDAV_PASSWORD"),
        sync_interval=integer("SYNC_INTERVAL", 3600, 10, 7 * 24 * 3600),
        trash_days=integer("HFDAV_TRASH_DAYS", 7, 0, 3650),
        versions=integer("HFDAV_VERSIONS", 0, 0, 1000),
        quota=size("HFDAV_QUOTA", 0, 0, 1 << 60) or None,
        max_xml_body=size("HFDAV_MAX_XML_BODY", 1 * MiB, 4 * KiB, 16 * MiB),
        max_propfind_infinity=integer("HFDAV_MAX_PROPFIND_INFINITY", 10_000, 0, 10_000_000),
        max_copy_members=integer("HFDAV_MAX_COPY_MEMBERS", 10_000, 1, 10_000_000),
        max_header_bytes=size("HFDAV_MAX_HEADER_BYTES", 64 * KiB, 4 * KiB, 1 * MiB),
        header_timeout=integer("HFDAV_HEADER_TIMEOUT", 20, 1, 3600),
        idle_timeout=integer("HFDAV_IDLE_TIMEOUT", 60, 1, 24 * 3600),
        body_timeout=integer("HFDAV_BODY_TIMEOUT", 60, 1, 24 * 3600),
        max_connections=integer("HFDAV_MAX_CONNECTIONS", 1000, 1, 1_000_000),
        max_connections_per_client=integer("HFDAV_MAX_CONNECTIONS_PER_CLIENT", 128, 0, 1_000_000),
        listen_backlog=integer("HFDAV_LISTEN_BACKLOG", 1024, 1, 65535),
    )
    if settings.staging_limit < 2 * settings.chunk_size:
        problems.append("HFDAV_STAGING_LIMIT must hold at least two chunks (2 × HFDAV_CHUNK_SIZE)")
    if problems:
        raise ConfigError(problems)
    return settings
