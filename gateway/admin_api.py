"""The administration API: list and break WebDAV locks over HTTP, for read-write users.

A WSGI middleware in front of the WebDAV application (inside :class:`gateway.web.WebFront`, so
its requests are counted and logged like the others). It answers every request under
:data:`ADMIN_PREFIX` and hands the rest on:

* ``GET /.hfdav-admin/locks``: JSON ``{"locks": [...]}``, every live lock with its token, path
  (decoded), depth, scope, user, owner XML and the seconds it has left.
* ``DELETE /.hfdav-admin/locks/<token>``: break one lock (204; 404 if there is none).
* ``DELETE /.hfdav-admin/locks?path=/a/b`` (``&all=1``: and every lock below it): break the
  locks on a path; JSON ``{"broken": [...]}``.

Credentials: those of a configured read-write user, checked by the one authentication layer
(:class:`gateway.dav.auth.Authenticator`: Basic or Digest, throttled and logged like every
login; 401 without, 429 while blocked, 403 for a read-only user).
The prefix starts with a dot and is outside any name a client is likely to create; the same
operations are ``hfdav locks list|break|break-path`` on the command line.
"""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, quote, unquote

from wsgidav.lock_man.lock_manager import normalize_lock_root

from gateway.dav.auth import ROLE_WRITE, Authenticator, Refusal
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
    """``auth`` checks the credentials of the admin requests (the WebDAV ones go on to ``app``)."""

    def __init__(self, app, repo: MetadataRepository, auth: Authenticator, *, clock=time.time):
        self.app = app
        self._repo = repo
        self._auth = auth
        self._clock = clock

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        if not (path + "/").startswith(ADMIN_PREFIX):
            return self.app(environ, start_response)
        client = environ.get("hfdav.client") or environ.get("REMOTE_ADDR") or "-"
        verdict = self._auth.identify(environ, client)
        if isinstance(verdict, Refusal):
            return _json(start_response, verdict.status, {"error": verdict.body.decode().strip()}, verdict.headers)
        environ["wsgidav.auth.user_name"] = verdict.user  # for the access log
        if ROLE_WRITE not in verdict.roles:
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


def _json(start_response, status: str, payload: dict, extra: list[tuple[str, str]] | None = None):
    body = json.dumps(payload, sort_keys=True).encode() + b"\n"
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
               ("Cache-Control", "no-store"), *(extra or [])]  # fmt: skip
    start_response(status, headers)
    return [body]
