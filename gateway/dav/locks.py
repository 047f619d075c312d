"""Lock storage for WsgiDAV's LockManager, in the metadata database.

Locks survive restarts and are shared by every process serving the same database. ``create``
re-checks conflicts and limits inside its own write transaction, so two processes can never both
be granted conflicting locks (WsgiDAV's own check only guards threads of one process).

A request reads only the locks that concern its paths. WsgiDAV asks for the locks of one path
at a time (the path, then each parent up to the share root; for a PROPFIND, every member
listed), so within one request the answers are kept (:class:`_RequestLocks`): the first question
about a path reads, in one indexed query, the locks on it, on its ancestors, on its siblings and
on its members;
a depth-infinity question (DELETE or MOVE of a folder, a depth-infinity LOCK) reads the locks
below the path. Any change made through this storage drops what the request kept.

Bounds (:class:`LockLimits`, settings ``HFDAV_LOCK_*``): the timeout a client gets is at most
``max_timeout`` (RFC 4918 §10.7 lets the server choose a shorter timeout than asked; the LOCK
answer reports the one granted), the owner XML at most ``owner_max`` bytes (413 beyond), at most
``max_per_user`` live locks per user and ``max_total`` in all (507 beyond). A depth-infinity
lock on the share root blocks every writer of the share, so only the users in
``root_lock_users`` (default: ``admin``) may take one (403 for the others). Administrators list
and break locks with ``hfdav locks`` and the admin API (:mod:`gateway.admin_api`).

The database errors of these calls (e.g. :class:`gateway.meta.db.DatabaseBusy`) are answered
through the one error table (:mod:`gateway.dav.errors`), as for the provider's calls.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wsgidav.dav_error import (
    HTTP_FORBIDDEN,
    HTTP_INSUFFICIENT_STORAGE,
    HTTP_LOCKED,
    HTTP_REQUEST_ENTITY_TOO_LARGE,
    DAVError,
)
from wsgidav.lock_man.lock_manager import generate_lock_token, normalize_lock_root, validate_lock

from gateway.config import int_setting
from gateway.dav.errors import translated
from gateway.errors import ConfigError, Conflict
from gateway.meta.records import LockLimitReached, LockRow, lock_ancestors, lock_parent

if TYPE_CHECKING:
    from gateway.meta.repo import MetadataRepository


@dataclass(frozen=True)
class LockLimits:
    """What a client may hold; see the module docstring. ``from_env`` reads the settings."""

    #: Longest timeout granted (seconds), also for ``Timeout: Infinite`` and for no Timeout
    #: header. One hour: Office, Finder and davfs2 refresh their locks well within it; a lock
    #: left by a crashed client or a careless one blocks the file at most that long.
    max_timeout: int = 3600
    #: Bytes of the ``<owner>`` XML of one lock. Clients send a user name or a URL (< 200 bytes).
    owner_max: int = 4096
    #: Live locks one user may hold, and all users together.
    max_per_user: int = 1000
    max_total: int = 10000
    #: Users allowed a depth-infinity lock on the share root.
    root_lock_users: frozenset[str] = field(default_factory=lambda: frozenset({"admin"}))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LockLimits:
        """``HFDAV_LOCK_MAX_TIMEOUT`` (seconds), ``HFDAV_LOCK_OWNER_MAX`` (bytes),
        ``HFDAV_LOCKS_PER_USER``, ``HFDAV_LOCKS_MAX``; raises ConfigError for bad values."""
        env = os.environ if env is None else env
        d = cls()
        problems: list[str] = []
        limits = cls(
            max_timeout=int_setting(env, "HFDAV_LOCK_MAX_TIMEOUT", d.max_timeout, 1, 7 * 24 * 3600, problems),
            owner_max=int_setting(env, "HFDAV_LOCK_OWNER_MAX", d.owner_max, 64, 1 << 20, problems),
            max_per_user=int_setting(env, "HFDAV_LOCKS_PER_USER", d.max_per_user, 1, 1_000_000, problems),
            max_total=int_setting(env, "HFDAV_LOCKS_MAX", d.max_total, 1, 1_000_000, problems),
        )
        if problems:
            raise ConfigError(problems)
        return limits

    def granted_timeout(self, asked: float | None) -> float:
        """The timeout to grant for ``asked`` seconds (None: no header; negative: Infinite)."""
        if asked is None or asked < 0 or asked > self.max_timeout:
            return float(self.max_timeout)
        return float(asked)


def _covers(lock: LockRow, path: str) -> bool:
    """Does ``lock`` apply to ``path`` (its root, or an ancestor with depth infinity)?"""
    if lock.root == path:
        return True
    return lock.depth == "infinity" and (lock.root == "/" or path.startswith(lock.root.rstrip("/") + "/"))


class _RequestLocks:
    """The locks one request has read, and which questions they answer completely."""

    def __init__(self):
        self.rows: dict[str, LockRow] = {}
        self._paths: set[str] = set()  # every lock rooted at one of these is in rows
        self._folders: set[str] = set()  # ... at a member of one of these folders
        self._subtrees: set[str] = set()  # ... at one of these or below it

    def _in_subtree(self, path: str) -> bool:
        return any(a in self._subtrees for a in lock_ancestors(path))

    def add(self, rows: list[LockRow]) -> None:
        self.rows.update((r.token, r) for r in rows)

    def ensure_near(self, repo: MetadataRepository, path: str) -> None:
        if path in self._paths or lock_parent(path) in self._folders or self._in_subtree(path):
            return
        self.add(repo.locks_near(path))
        self._paths.update(lock_ancestors(path))
        self._folders.add(path)
        if path != "/":
            self._folders.add(lock_parent(path))

    def ensure_below(self, repo: MetadataRepository, path: str) -> None:
        if not self._in_subtree(path):
            self.add(repo.locks_below(path))
            self._subtrees.add(path)


class DbLockStorage:
    """``share_path``: returns the provider's share path (``""`` for ``/``, or ``/dav``): lock
    roots are URL paths, the share root is where the share is mounted."""

    def __init__(
        self,
        repo: MetadataRepository,
        *,
        limits: LockLimits | None = None,
        share_path: Callable[[], str] = lambda: "",
        clock=time.time,
    ):
        self._repo = repo
        self.limits = limits if limits is not None else LockLimits.from_env()
        self._share_path = share_path
        self._clock = clock
        self._local = threading.local()

    def __repr__(self):
        return "DbLockStorage()"

    # -- life cycle (LockManager API) ---------------------------------------------------------
    def open(self):
        self._repo.delete_expired_locks()

    def close(self):
        pass

    def cleanup(self):
        self._repo.delete_expired_locks()

    def clear(self):
        self._repo.delete_locks_below("/", recursive=True)
        self._forget()

    def begin_request(self) -> None:
        """Called at the start of every request: lock lists are read afresh."""
        self._local.cache = _RequestLocks()
        self._local.created = []

    def end_request(self) -> None:
        self._local.cache = None
        self._local.created = None

    def created_in_request(self) -> list[str]:
        """Tokens of the locks this thread's current request was granted (a LOCK whose answer
        fails takes back these, and never a lock another request was granted meanwhile)."""
        return list(getattr(self._local, "created", None) or ())

    def _cache(self) -> _RequestLocks:
        """The request's locks; outside a request, a fresh set for each question."""
        return getattr(self._local, "cache", None) or _RequestLocks()

    def _forget(self) -> None:
        if getattr(self._local, "cache", None) is not None:
            self._local.cache = _RequestLocks()

    # -- conversions --------------------------------------------------------------------------
    @staticmethod
    def _to_dict(row: LockRow) -> dict:
        return {
            "token": row.token,
            "root": row.root,
            "depth": row.depth,
            "scope": row.scope,
            "type": row.type,
            "owner": row.owner.encode("utf-8"),  # WsgiDAV wants the owner XML as bytes
            "principal": row.principal,
            "timeout": row.timeout,
            "expire": row.expire,
        }

    # -- LockStorage API ----------------------------------------------------------------------
    @translated
    def get(self, token):
        row = self._cache().rows.get(token) or self._repo.get_lock(token)
        if row is None or row.expire < self._clock():
            return None
        return self._to_dict(row)

    def _check_new(self, path: str, lock: dict, owner: str) -> None:
        """The server's own rules for a new lock (see the module docstring)."""
        if len(owner.encode("utf-8")) > self.limits.owner_max:
            raise DAVError(
                HTTP_REQUEST_ENTITY_TOO_LARGE,
                context_info=f"the lock owner is longer than {self.limits.owner_max} bytes",
            )
        share_root = normalize_lock_root(self._share_path() or "/")
        if (
            path == share_root
            and str(lock["depth"]) == "infinity"
            and lock.get("principal") not in self.limits.root_lock_users
        ):
            raise DAVError(
                HTTP_FORBIDDEN,
                context_info="a depth-infinity lock on the share root would block every writer; "
                "lock the folders you work in instead",
            )

    @translated
    def create(self, path, lock):
        path = normalize_lock_root(path)
        timeout = lock.get("timeout")
        timeout = self.limits.granted_timeout(None if timeout is None else float(timeout))
        owner = lock.get("owner") or b""
        if isinstance(owner, bytes):
            owner = owner.decode("utf-8")
        self._check_new(path, lock, owner)
        lock["root"] = path
        lock["timeout"] = timeout
        lock["expire"] = self._clock() + timeout
        validate_lock(lock)
        lock["token"] = generate_lock_token()
        row = LockRow(
            token=lock["token"],
            root=path,
            depth=str(lock["depth"]),
            scope=lock["scope"],
            type=lock["type"],
            owner=owner,
            principal=lock.get("principal"),
            timeout=timeout,
            expire=lock["expire"],
        )

        def conflicts(existing: list[LockRow]) -> str | None:
            for other in existing:
                if row.scope == "shared" and other.scope == "shared":
                    continue
                if _covers(other, path) or (row.depth == "infinity" and _covers(row, other.root)):
                    return f"{path} conflicts with lock on {other.root}"
            return None

        try:
            self._repo.create_lock(
                row, conflicts, max_total=self.limits.max_total, max_per_principal=self.limits.max_per_user
            )
        except Conflict as exc:
            raise DAVError(HTTP_LOCKED, context_info=str(exc)) from exc
        except LockLimitReached as exc:
            raise DAVError(HTTP_INSUFFICIENT_STORAGE, context_info=str(exc)) from exc
        finally:
            self._forget()
        created = getattr(self._local, "created", None)
        if created is not None:
            created.append(row.token)
        return lock

    @translated
    def refresh(self, token, *, timeout):
        timeout = self.limits.granted_timeout(timeout)
        self._repo.refresh_lock(token, timeout, self._clock() + timeout)
        self._forget()
        return self.get(token)

    @translated
    def delete(self, token):
        self._forget()
        return self._repo.delete_lock(token)

    @translated
    def member_lock_roots(self, path) -> set[str]:
        """For a listing of the folder ``path``: the roots of live locks on its direct members
        (one query; locks deeper down are not read, see :meth:`MetadataRepository.locks_near`)."""
        path = normalize_lock_root(path)
        cache = self._cache()
        cache.ensure_near(self._repo, path)
        now = self._clock()
        return {
            r.root for r in cache.rows.values() if r.expire >= now and r.root != path and lock_parent(r.root) == path
        }

    @translated
    def get_lock_list(self, path, *, include_root, include_children, token_only):
        path = normalize_lock_root(path)
        cache = self._cache()
        if include_children:
            cache.ensure_below(self._repo, path)
        else:
            cache.ensure_near(self._repo, path)
        prefix = path.rstrip("/") + "/"
        now = self._clock()
        out = []
        for row in cache.rows.values():
            if row.expire < now:
                continue
            if (include_root and row.root == path) or (include_children and row.root.startswith(prefix)):
                out.append(row.token if token_only else self._to_dict(row))
        return out
