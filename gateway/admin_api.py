"""The administration API: list and break WebDAV locks over HTTP, for read-write users.

A WSGI middleware in front of the WebDAV application (inside :class:`gateway.web.WebFront`, so
its requests are counted and logged like the others). It answers every request under
:data:`ADMIN_PREFIX` and hands the rest on:

* ``GET /.hfdav-admin/locks``: JSON ``{"locks": [...]}``, every live lock with its token, path
  (decoded), depth, scope, user, owner XML and the seconds it has left.
* ``DELETE /.hfdav-admin/locks/<token>``: break one lock (204; 404 if there is none).
* ``DELETE /.hfdav-admin/locks?path=/a/b`` (``&all=1``: and every lock below it): break the
  locks on a path; JSON ``{"broken": [...]}``.

Credentials: HTTP Basic of a configured read-write user (401 without, 403 for a read-only one).
The prefix starts with a dot and is outside any name a client is likely to create; the same
operations are ``hfdav locks list|break|break-path`` on the command line.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from collections.abc import Mapping
from urllib.parse import parse_qs, quote, unquote

from wsgidav.lock_man.lock_manager import normalize_lock_root

from gateway.meta.repo import LockRow, MetadataRepository

ADMIN_PREFIX = "/.hfdav-admin/"
LOCKS_PATH = ADMIN_PREFIX + "locks"


def lock_root_for(path: str) -> str:
    """The lock root (a URL path as WsgiDAV stores it) of ``path``, given decoded or encoded."""
    return normalize_lock_root(quote(unquote(path)))


def lock_info(lock: LockRow, now: float) -> dict:
    """One lock as the API and ``hfdav locks list`` show it."""
    return {
        "token": lock.token,
        "path": unquote(lock.root),
        "depth": lock.depth,
        "scope": lock.scope,
        "user": lock.principal,
        "owner": lock.owner,
        "timeout": lock.timeout,
        "expires_in": max(0, round(lock.expire - now)),
    }


class AdminApi:
    """``users`` maps user name → (password, can_write), as :func:`gateway.dav.auth.user_table`."""

    def __init__(self, app, repo: MetadataRepository, users: Mapping[str, tuple[str, bool]], *, clock=time.time):
        self.app = app
        self._repo = repo
        self._users = dict(users)
        self._clock = clock

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        if not (path + "/").startswith(ADMIN_PREFIX):
            return self.app(environ, start_response)
        user = self._user(environ)
        if user is None:
            return _json(start_response, "401 Unauthorized", {"error": "credentials required"},
                         [("WWW-Authenticate", 'Basic realm="hfdav"')])  # fmt: skip
        if not self._users[user][1]:
            return _json(start_response, "403 Forbidden", {"error": "read-write users only"})
        method = environ.get("REQUEST_METHOD", "GET")
        if path == LOCKS_PATH and method == "GET":
            now = self._clock()
            return _json(start_response, "200 OK", {"locks": [lock_info(lk, now) for lk in self._repo.all_locks()]})
        if path == LOCKS_PATH and method == "DELETE":
            query = parse_qs(environ.get("QUERY_STRING") or "")
            target = (query.get("path") or [""])[0]
            if not target.startswith("/"):
                return _json(start_response, "400 Bad Request", {"error": "give ?path=/folder/file"})
            recursive = (query.get("all") or ["0"])[0] in ("1", "true", "yes")
            gone = self._repo.delete_locks_below(lock_root_for(target), recursive=recursive)
            return _json(start_response, "200 OK", {"broken": [lk.token for lk in gone]})
        if path.startswith(LOCKS_PATH + "/") and method == "DELETE":
            token = unquote(path[len(LOCKS_PATH) + 1 :])
            if not self._repo.delete_lock(token):
                return _json(start_response, "404 Not Found", {"error": "no such lock"})
            start_response("204 No Content", [("Content-Length", "0")])
            return []
        return _json(start_response, "404 Not Found", {"error": "unknown admin endpoint"})

    def _user(self, environ) -> str | None:
        """The user whose Basic credentials the request carries, or None."""
        scheme, _, value = (environ.get("HTTP_AUTHORIZATION") or "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            name, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        entry = self._users.get(name)
        if not sep or entry is None or not hmac.compare_digest(entry[0].encode(), password.encode()):
            return None
        return name


def _json(start_response, status: str, payload: dict, extra: list[tuple[str, str]] | None = None):
    body = json.dumps(payload, sort_keys=True).encode() + b"\n"
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
               ("Cache-Control", "no-store"), *(extra or [])]  # fmt: skip
    start_response(status, headers)
    return [body]
