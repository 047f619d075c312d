"""Lock storage for WsgiDAV's LockManager, in the metadata database.

Locks survive restarts and are shared by every process serving the same database. ``create``
re-checks conflicts inside its own write transaction, so two processes can never both be
granted conflicting locks (WsgiDAV's own check only guards threads of one process).

Within one request, lock lists are served from one snapshot (a PROPFIND of 10,000 entries asks
for the locks of every entry); any change made through this storage drops the snapshot.
"""

from __future__ import annotations

import threading
import time

from wsgidav.dav_error import HTTP_LOCKED, DAVError
from wsgidav.lock_man.lock_manager import generate_lock_token, normalize_lock_root, validate_lock

from gateway.errors import Conflict
from gateway.meta.repo import LockRow, MetadataRepository

#: RFC 4918 leaves timeouts to the server; WsgiDAV's defaults (1 week, at most 4 weeks).
LOCK_TIMEOUT_DEFAULT = 604800
LOCK_TIMEOUT_MAX = 4 * 604800


def _covers(lock: LockRow, path: str) -> bool:
    """Does ``lock`` apply to ``path`` (its root, or an ancestor with depth infinity)?"""
    if lock.root == path:
        return True
    return lock.depth == "infinity" and (lock.root == "/" or path.startswith(lock.root.rstrip("/") + "/"))


class DbLockStorage:
    def __init__(self, repo: MetadataRepository, clock=time.time):
        self._repo = repo
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
        for lock in self._repo.all_locks():
            self._repo.delete_lock(lock.token)
        self.begin_request()

    def begin_request(self) -> None:
        """Called at the start of every request: lock lists are read afresh."""
        self._local.snapshot = None
        self._local.active = True

    def end_request(self) -> None:
        self._local.snapshot = None
        self._local.active = False

    def _locks(self) -> list[LockRow]:
        now = self._clock()
        if getattr(self._local, "active", False):
            if self._local.snapshot is None:
                self._local.snapshot = self._repo.all_locks()
            rows = self._local.snapshot
        else:
            rows = self._repo.all_locks()
        return [r for r in rows if r.expire >= now]

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
    def get(self, token):
        row = next((r for r in self._locks() if r.token == token), None)
        if row is None and not getattr(self._local, "active", False):
            row = self._repo.get_lock(token)
            if row is not None and row.expire < self._clock():
                self._repo.delete_lock(token)
                row = None
        return self._to_dict(row) if row else None

    def create(self, path, lock):
        path = normalize_lock_root(path)
        timeout = lock.get("timeout")
        timeout = LOCK_TIMEOUT_DEFAULT if timeout is None else float(timeout)
        if timeout < 0 or timeout > LOCK_TIMEOUT_MAX:
            timeout = LOCK_TIMEOUT_MAX
        lock["root"] = path
        lock["timeout"] = timeout
        lock["expire"] = self._clock() + timeout
        validate_lock(lock)
        lock["token"] = generate_lock_token()
        owner = lock.get("owner") or ""
        if isinstance(owner, bytes):
            owner = owner.decode("utf-8")
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
            self._repo.create_lock(row, conflicts)
        except Conflict as exc:
            raise DAVError(HTTP_LOCKED, context_info=str(exc)) from exc
        finally:
            self._local.snapshot = None
        return lock

    def refresh(self, token, *, timeout):
        if timeout is None or timeout < 0 or timeout > LOCK_TIMEOUT_MAX:
            timeout = LOCK_TIMEOUT_MAX
        expire = self._clock() + timeout
        self._repo.refresh_lock(token, timeout, expire)
        self._local.snapshot = None
        return self.get(token)

    def delete(self, token):
        self._local.snapshot = None
        return self._repo.delete_lock(token)

    def get_lock_list(self, path, *, include_root, include_children, token_only):
        path = normalize_lock_root(path)
        prefix = path.rstrip("/") + "/"
        out = []
        for row in self._locks():
            if (include_root and row.root == path) or (include_children and row.root.startswith(prefix)):
                out.append(row.token if token_only else self._to_dict(row))
        return out
