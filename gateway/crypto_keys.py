"""Key handling of client-side encryption: the ``HFDAV_ENCRYPTION_KEY`` rule, the repo's key
record, and the :class:`Keyring` of subkeys derived from them. docs/ENCRYPTION.md is the spec.

``HFDAV_ENCRYPTION_KEY`` holds one of (checked in this order):

* ``passphrase:<text>`` — a passphrase of at least :data:`MIN_PASSPHRASE_CHARS` characters
  (everything after the first ``:``, kept as given, UTF-8). It is stretched with scrypt and a
  random 16-byte salt kept in the repo's key record.
* 64 hex digits — a raw 32-byte key (``python -c 'import secrets; print(secrets.token_hex(32))'``).
* base64 (standard or URL-safe alphabet, padding optional) of exactly 32 bytes — a raw key.

Anything else is a settings error; the messages never repeat the value.

A repo that uses encryption keeps a **key record** (JSON object, no secret in it) in its
configuration: the scheme name, the KDF and its parameters, the salt, the segment size and a
key-check value. From the secret and the record, :class:`Keyring` derives (HKDF-SHA256, the
salt as HKDF salt, one ``info`` label per purpose) independent subkeys:

* ``object-id``  — HMAC-SHA256 key naming objects (``object_hasher``): ids reveal nothing about content;
* ``data``       — per-object AES-256-GCM keys are HMAC-SHA256(data, object id);
* ``blob``       — per-blob AES-256-GCM keys for metadata blobs (:meth:`Keyring.seal_blob`);
* ``key-check``  — HMAC over a fixed label; stored in the record so a wrong key fails at start.

:func:`open_keyring` is the one decision at start: unencrypted, new, or unlock (or refuse).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from gateway.errors import ConfigError, IntegrityError

ENV_NAME = "HFDAV_ENCRYPTION_KEY"
PASSPHRASE_PREFIX = "passphrase:"
KEY_BYTES = 32
#: A passphrase shorter than this is refused: scrypt slows guessing, it does not make 6
#: characters safe in a public repo.
MIN_PASSPHRASE_CHARS = 12

#: Name of the scheme in the key record; a record naming another scheme is refused.
SCHEME = "hfdav-aes256gcm-v1"
SALT_BYTES = 16
#: scrypt cost for passphrases: N=2^17, r=8, p=1 (128 MiB, a fraction of a second, once at start).
SCRYPT_N = 1 << 17
SCRYPT_R = 8
SCRYPT_P = 1
#: Upper bounds accepted from a record, so an edited repo config cannot make start-up allocate
#: gigabytes.
SCRYPT_MAX_N = 1 << 20
SCRYPT_MAX_R = 32
SCRYPT_MAX_P = 16

#: Plaintext bytes per authenticated segment of an object (see docs/ENCRYPTION.md for the
#: trade-off: a Range read fetches and decrypts whole segments; each costs a 16-byte tag).
DEFAULT_SEGMENT_SIZE = 1 << 18
MIN_SEGMENT_SIZE = 1 << 12
MAX_SEGMENT_SIZE = 1 << 24
#: Segment size of sealed metadata blobs (they are read whole).
BLOB_SEGMENT_SIZE = 1 << 20

TAG_BYTES = 16
NONCE_BYTES = 12
KEY_ID_BYTES = 8
_KEY_CHECK_LABEL = b"hfdav key check v1"
_OBJECT_KEY_LABEL = b"hfdav object key v1\x00"
_BLOB_KEY_LABEL = b"hfdav blob key v1\x00"

#: Sealed blob header: magic, format version, log2(segment size), reserved, key id, random salt.
BLOB_MAGIC = b"HFDB"
BLOB_VERSION = 1
_BLOB_HEADER = struct.Struct("!4sBBH8s16s")

_HEX_KEY_RE = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class EncryptionSecret:
    """What ``HFDAV_ENCRYPTION_KEY`` holds: a raw key or a passphrase. Never printed."""

    kind: str  # "key" | "passphrase"
    material: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"EncryptionSecret(kind={self.kind!r}, material=<hidden>)"


def parse_encryption_key(text: str) -> EncryptionSecret:
    """Apply the rule of the module docstring; raise ValueError (without the value) if it fails."""
    if text.startswith(PASSPHRASE_PREFIX):
        phrase = text[len(PASSPHRASE_PREFIX) :]
        if len(phrase) < MIN_PASSPHRASE_CHARS:
            raise ValueError(f"{ENV_NAME}: a passphrase needs at least {MIN_PASSPHRASE_CHARS} characters")
        return EncryptionSecret("passphrase", phrase.encode("utf-8"))
    if _HEX_KEY_RE.match(text):
        return EncryptionSecret("key", bytes.fromhex(text))
    raw = _b64_key(text)
    if raw is not None:
        return EncryptionSecret("key", raw)
    raise ValueError(
        f"{ENV_NAME}: not a key: use 64 hex digits, base64 of 32 bytes, or "
        f"passphrase:<at least {MIN_PASSPHRASE_CHARS} characters> "
        "(a key: python -c 'import secrets; print(secrets.token_hex(32))')"
    )


def _b64_key(text: str) -> bytes | None:
    body = text.rstrip("=")
    if not re.fullmatch(r"[A-Za-z0-9+/_-]{43}", body):
        return None
    try:
        raw = base64.b64decode(body.replace("-", "+").replace("_", "/") + "=", validate=True)
    except binascii.Error:
        return None
    return raw if len(raw) == KEY_BYTES else None


def _hkdf(master: bytes, salt: bytes, label: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=b"hfdav/v1/" + label.encode()).derive(
        master
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Keyring:
    """Subkeys of one repo. Build with :meth:`create` (new repo) or :meth:`unlock` (existing).

    Thread-safe (holds only immutable keys). ``record`` is the key record to keep in the repo's
    configuration; it contains no secret.
    """

    def __init__(self, master: bytes, record: Mapping[str, Any]):
        salt = base64.b64decode(record["salt"])
        self.record: dict[str, Any] = dict(record)
        self.segment_size: int = int(record["segment_size"])
        self._id_key = _hkdf(master, salt, "object-id")
        self._data_key = _hkdf(master, salt, "data")
        self._blob_key = _hkdf(master, salt, "blob")
        self.key_check: bytes = hmac.digest(_hkdf(master, salt, "key-check"), _KEY_CHECK_LABEL, "sha256")
        #: Written into every object and blob header: tells "another key" from "damaged".
        self.key_id: bytes = self.key_check[:KEY_ID_BYTES]

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def create(
        cls, secret: EncryptionSecret, *, segment_size: int = DEFAULT_SEGMENT_SIZE, scrypt_n: int = SCRYPT_N
    ) -> Keyring:
        """A keyring for a new repo: fresh random salt; ``record`` must be stored before any object."""
        _check_segment_size(segment_size)
        salt = os.urandom(SALT_BYTES)
        record: dict[str, Any] = {"scheme": SCHEME, "salt": _b64(salt), "segment_size": segment_size}
        if secret.kind == "passphrase":
            record.update(kdf="scrypt", scrypt_n=scrypt_n, scrypt_r=SCRYPT_R, scrypt_p=SCRYPT_P)
        else:
            record["kdf"] = "none"
        ring = cls(_master_key(secret, record), record)
        ring.record["key_check"] = _b64(ring.key_check)
        return ring

    @classmethod
    def unlock(cls, secret: EncryptionSecret, record: Mapping[str, Any], *, where: str = "the repo") -> Keyring:
        """The keyring of an existing repo; ConfigError if the record is unusable or the key is wrong."""
        if record.get("scheme") != SCHEME:
            raise ConfigError([f"{where} uses encryption scheme {record.get('scheme')!r}; this hfdav knows {SCHEME!r}"])
        try:
            _check_segment_size(int(record["segment_size"]))
            expected = base64.b64decode(record["key_check"], validate=True)
            kdf = record["kdf"]
            base64.b64decode(record["salt"], validate=True)
        except (KeyError, ValueError, TypeError, binascii.Error) as exc:
            raise ConfigError([f"{where}: the encryption key record is damaged ({exc})"]) from exc
        wanted = "passphrase" if kdf == "scrypt" else "key"
        if secret.kind != wanted:
            raise ConfigError(
                [f"{ENV_NAME} does not match {where}: it was encrypted with a {wanted}, and a {secret.kind} was given"]
            )
        ring = cls(_master_key(secret, record), record)
        if not hmac.compare_digest(ring.key_check, expected):
            raise ConfigError([f"{ENV_NAME} does not match {where}: this is not the key it was encrypted with"])
        return ring

    # -- object ids and object keys --------------------------------------------------------------
    def object_hasher(self) -> hmac.HMAC:
        """A fresh HMAC-SHA256 with the object-id subkey (``update``/``hexdigest`` like hashlib).

        Pass the bound method as ``FileService(object_hasher=...)``: object id = hexdigest of the
        chunk's plaintext. Equal chunks get equal ids (dedup); without the key an id tells nothing.
        """
        return hmac.new(self._id_key, digestmod="sha256")

    def object_cipher(self, object_id: str) -> AESGCM:
        """The AES-256-GCM instance of one object (key = HMAC-SHA256(data subkey, id))."""
        return AESGCM(hmac.digest(self._data_key, _OBJECT_KEY_LABEL + object_id.encode("ascii"), "sha256"))

    # -- metadata blobs -----------------------------------------------------------------------
    def seal_blob(self, data: bytes, *, purpose: str) -> bytes:
        """Encrypt and authenticate a whole metadata blob (journal batch, snapshot, backup).

        ``purpose`` (e.g. ``"journal"``, ``"snapshot"``) is bound into the authentication:
        :meth:`open_blob` with another purpose fails. Each call uses a fresh random 16-byte salt,
        so sealing equal data twice gives unrelated bytes.
        """
        shift = BLOB_SEGMENT_SIZE.bit_length() - 1
        salt = os.urandom(16)
        header = _BLOB_HEADER.pack(BLOB_MAGIC, BLOB_VERSION, shift, 0, self.key_id, salt)
        cipher = AESGCM(hmac.digest(self._blob_key, _BLOB_KEY_LABEL + salt, "sha256"))
        out = bytearray(header)
        view = memoryview(data)
        count = max(1, -(-len(view) // BLOB_SEGMENT_SIZE))
        for i in range(count):
            final = i == count - 1
            piece = view[i * BLOB_SEGMENT_SIZE : (i + 1) * BLOB_SEGMENT_SIZE]
            out += cipher.encrypt(segment_nonce(i), piece, _blob_aad(header, purpose, i, final, len(view)))
        return bytes(out)

    def open_blob(self, blob: bytes, *, purpose: str) -> bytes:
        """Verify and decrypt a blob made by :meth:`seal_blob` with the same ``purpose``.

        Raises :class:`IntegrityError` (never returns bytes) if the blob is not a sealed blob,
        was sealed with another key or purpose, or was changed, truncated or extended.
        """
        if len(blob) < _BLOB_HEADER.size + TAG_BYTES or blob[:4] != BLOB_MAGIC:
            raise IntegrityError(f"not an encrypted hfdav metadata blob (purpose {purpose!r})")
        magic, version, shift, _reserved, key_id, salt = _BLOB_HEADER.unpack_from(blob)
        if version != BLOB_VERSION or not 12 <= shift <= 24:
            raise IntegrityError(f"metadata blob ({purpose}) has unknown format version {version}")
        if not hmac.compare_digest(key_id, self.key_id):
            raise IntegrityError(f"metadata blob ({purpose}) was sealed with a different key")
        header = bytes(blob[: _BLOB_HEADER.size])
        cipher = AESGCM(hmac.digest(self._blob_key, _BLOB_KEY_LABEL + salt, "sha256"))
        seg, body = 1 << shift, memoryview(blob)[_BLOB_HEADER.size :]
        plain_len = plaintext_length(len(body), seg)
        if plain_len is None:
            raise IntegrityError(f"metadata blob ({purpose}) failed authentication: impossible length")
        count = max(1, -(-plain_len // seg))
        out = bytearray()
        for i in range(count):
            final = i == count - 1
            piece = body[i * (seg + TAG_BYTES) : (i + 1) * (seg + TAG_BYTES)]
            try:
                out += cipher.decrypt(segment_nonce(i), piece, _blob_aad(header, purpose, i, final, plain_len))
            except InvalidTag:
                raise IntegrityError(
                    f"metadata blob ({purpose}) failed authentication at segment {i}: damaged, or not this purpose"
                ) from None
        return bytes(out)


def segment_nonce(index: int) -> bytes:
    """Segment ``index`` as a 96-bit big-endian counter (each key encrypts one fixed message)."""
    return index.to_bytes(NONCE_BYTES, "big")


def _blob_aad(header: bytes, purpose: str, index: int, final: bool, total: int) -> bytes:
    return header + struct.pack("!QBQ", index, final, total if final else 0) + b"purpose:" + purpose.encode()


def plaintext_length(body_len: int, segment_size: int) -> int | None:
    """Plaintext bytes behind ``body_len`` bytes of segments (+ tags); None if no plaintext fits.

    The final segment holds 1..segment_size bytes (0 only when it is the only one).
    """
    if body_len < TAG_BYTES:
        return None
    count = -(-body_len // (segment_size + TAG_BYTES))
    last = body_len - (count - 1) * (segment_size + TAG_BYTES)
    if last < TAG_BYTES or (count > 1 and last == TAG_BYTES):
        return None
    return body_len - count * TAG_BYTES


def _check_segment_size(size: int) -> None:
    if size & (size - 1) or not MIN_SEGMENT_SIZE <= size <= MAX_SEGMENT_SIZE:
        raise ValueError(f"segment size {size} must be a power of two in [{MIN_SEGMENT_SIZE}, {MAX_SEGMENT_SIZE}]")


def _master_key(secret: EncryptionSecret, record: Mapping[str, Any]) -> bytes:
    if record["kdf"] == "none":
        return secret.material
    if record["kdf"] != "scrypt":
        raise ConfigError([f"unknown key derivation {record['kdf']!r} in the encryption key record"])
    n, r, p = int(record["scrypt_n"]), int(record["scrypt_r"]), int(record["scrypt_p"])
    if n & (n - 1) or not 2 <= n <= SCRYPT_MAX_N or not 1 <= r <= SCRYPT_MAX_R or not 1 <= p <= SCRYPT_MAX_P:
        raise ConfigError([f"scrypt parameters N={n} r={r} p={p} in the encryption key record are out of bounds"])
    salt = base64.b64decode(record["salt"])
    return Scrypt(salt=salt, length=KEY_BYTES, n=n, r=r, p=p).derive(secret.material)


def record_to_json(record: Mapping[str, Any]) -> str:
    """Canonical JSON text of a key record (sorted keys), e.g. for a database setting."""
    return json.dumps(dict(record), sort_keys=True, separators=(",", ":"))


def record_from_json(text: str) -> dict[str, Any]:
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise ConfigError([f"the encryption key record is not JSON ({exc})"]) from exc
    if not isinstance(record, dict):
        raise ConfigError(["the encryption key record is not a JSON object"])
    return record


def open_keyring(
    secret: EncryptionSecret | None,
    record: Mapping[str, Any] | None,
    *,
    has_data: Callable[[], bool],
    where: str,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> tuple[Keyring | None, dict[str, Any] | None]:
    """Decide at start whether and how a repo is encrypted. Returns ``(keyring, new_record)``.

    ============  ============  ================================================================
    secret        record        outcome
    ============  ============  ================================================================
    none          none          ``(None, None)``: unencrypted
    none          present       ConfigError: the repo is encrypted and no key was given
    given         present       :meth:`Keyring.unlock` (ConfigError on a wrong key)
    given         none          ``has_data()`` true: ConfigError (the repo is not encrypted);
                                else a new keyring and its record, which the caller must store
                                in the repo configuration **before** storing any object
    ============  ============  ================================================================

    ``where`` names the repo in messages (``"data dir /srv/data"``, ``"dataset repo a/b"``).
    """
    if secret is None:
        if record is None:
            return None, None
        raise ConfigError([f"{where} is encrypted: set {ENV_NAME} to its key or passphrase"])
    if record is not None:
        return Keyring.unlock(secret, record, where=where), None
    if has_data():
        raise ConfigError(
            [
                f"{where} is not encrypted and already holds data, so it cannot be opened with {ENV_NAME}: "
                f"unset {ENV_NAME} to use it unencrypted, or start an encrypted store in an empty one"
            ]
        )
    ring = Keyring.create(secret, segment_size=segment_size)
    return ring, dict(ring.record)
