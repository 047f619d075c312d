"""The administration API: maintenance of the running drive over HTTP, for read-write users.

A WSGI middleware in front of the WebDAV application (inside :class:`gateway.web.WebFront`, so
its requests are counted and logged like the others). It answers every request under
:data:`ADMIN_PREFIX` (on the server's own address, not under the share prefix) and hands the
rest on. Answers are JSON; errors ``{"error": "..."}`` with 400 (a bad request or an operation
that cannot run here), 404, 409 (a refusal, e.g. restoring over an existing file, or another
maintenance operation still running) or 500.

Locks:

* ``GET locks``: ``{"locks": [...]}``, every live lock with its token, path (decoded), depth,
  scope, user, owner XML and the seconds it has left.
* ``DELETE locks/<token>``: break one lock (204; 404 if there is none).
* ``DELETE locks?path=/a/b`` (``&all=1``: and every lock below it): ``{"broken": [...]}``.

Maintenance (:mod:`gateway.operations`; the same dicts ``hfdav ... --json`` prints):

* ``GET stats``; ``GET sync`` (Hub backend status); ``GET trash``
* ``POST fsck?repair=1&verify=SHARE``; ``POST verify?sample=SHARE`` (read back from the repo)
* ``POST gc?grace=6h&no_repack=1&squash=1``
* ``GET versions?path=<file>``; ``POST versions/restore?path=<file>&n=<number>``
* ``POST trash/restore?path=<trash path>&to=<dest>``; ``POST trash/purge?all=1``
* ``POST backup`` (metadata backup to ``WEBDAV_URL`` now)
* ``POST rebuild?into=<new data dir>`` (read only: the repo and the live drive are untouched)

The operations run synchronously in the request, one at a time (a second one gets 409 while
the first runs); long ones log their progress in the server's log. ``hfdav`` calls them when a
server serves the data dir: it finds the server by :data:`SERVER_RECORD`, written when the
server starts (:mod:`gateway.admin_client`).

Credentials: those of a configured read-write user, checked by the one authentication layer
(:class:`gateway.dav.auth.Authenticator`: Basic or Digest, throttled and logged like every
login; 401 without, 429 while blocked, 403 for a read-only user). The prefix starts with a dot
and is outside any name a client is likely to create.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote

from wsgidav.lock_man.lock_manager import normalize_lock_root

from gateway import operations as ops
from gateway import versions as file_versions
from gateway.dav.auth import ROLE_WRITE, Authenticator, Refusal
from gateway.errors import ConfigError, HfdavError, NotFound
from gateway.meta.repo import LockRow, MetadataRepository
from gateway.operations import OperationRefused
from gateway.progress import parse_duration

log = logging.getLogger(__name__)

ADMIN_PREFIX = "/.hfdav-admin/"
LOCKS_PATH = ADMIN_PREFIX + "locks"
#: The file in the data dir naming the URL of the server that serves it (``hfdav`` reads it).
SERVER_RECORD = "server.json"


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
    """``auth`` checks the credentials of the admin requests (the WebDAV ones go on to ``app``).
    The maintenance endpoints need the whole gateway: :meth:`attach` it once it is built."""

    def __init__(self, app, repo: MetadataRepository, auth: Authenticator, *, clock=time.time):
        self.app = app
        self._repo = repo
        self._auth = auth
        self._clock = clock
        self._gateway = None
        self._busy = threading.Lock()  # one maintenance operation at a time

    def attach(self, gateway) -> None:
        self._gateway = gateway

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
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING") or "").items()}
        if path == LOCKS_PATH or path.startswith(LOCKS_PATH + "/"):
            return self._locks(start_response, path, method, query)
        operation = OPERATIONS.get((method, path[len(ADMIN_PREFIX) :]))
        if operation is None:
            return _json(start_response, "404 Not Found", {"error": "unknown admin endpoint"})
        if self._gateway is None:
            return _json(start_response, "503 Service Unavailable", {"error": "the server is still starting"})
        return self._run(start_response, operation, query)

    def _run(self, start_response, operation, query: dict):
        if not self._busy.acquire(blocking=False):
            return _json(start_response, "409 Conflict", {"error": "another maintenance operation is running"})
        try:
            return _json(start_response, "200 OK", operation(self._gateway, query))
        except (OperationRefused, ConfigError, ValueError) as exc:
            return _json(start_response, "400 Bad Request", {"error": str(exc)})
        except NotFound as exc:
            return _json(start_response, "404 Not Found", {"error": f"not found: {exc}"})
        except HfdavError as exc:
            return _json(start_response, "409 Conflict", {"error": str(exc)})
        except Exception as exc:
            log.exception("admin operation failed")
            return _json(start_response, "500 Internal Server Error", {"error": f"{type(exc).__name__}: {exc}"})
        finally:
            self._busy.release()

    def _locks(self, start_response, path: str, method: str, query: dict):
        if path == LOCKS_PATH and method == "GET":
            now = self._clock()
            return _json(start_response, "200 OK", {"locks": [lock_info(lk, now) for lk in self._repo.all_locks()]})
        if path == LOCKS_PATH and method == "DELETE":
            target = query.get("path", "")
            if not target.startswith("/"):
                return _json(start_response, "400 Bad Request", {"error": "give ?path=/folder/file"})
            gone = self._repo.delete_locks_below(lock_root_for(target), recursive=_flag(query, "all"))
            return _json(start_response, "200 OK", {"broken": [lk.token for lk in gone]})
        if path.startswith(LOCKS_PATH + "/") and method == "DELETE":
            token = unquote(path[len(LOCKS_PATH) + 1 :])
            if not self._repo.delete_lock(token):
                return _json(start_response, "404 Not Found", {"error": "no such lock"})
            start_response("204 No Content", [("Content-Length", "0")])
            return []
        return _json(start_response, "404 Not Found", {"error": "unknown admin endpoint"})


def _flag(query: dict, name: str) -> bool:
    return query.get(name, "0").lower() in ("1", "true", "yes")


def _share(query: dict, name: str, default: float) -> float:
    value = float(query.get(name, default))
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must lie between 0 and 1")
    return value


def _grace(query: dict) -> float | None:
    return parse_duration(query["grace"]) if "grace" in query else None


#: (method, path below the prefix) → the operation, given the gateway and the query.
OPERATIONS = {
    ("GET", "stats"): lambda gw, q: ops.stats(gw),
    ("POST", "fsck"): lambda gw, q: ops.fsck(gw, repair=_flag(q, "repair"), verify=_share(q, "verify", 0.0)),
    ("POST", "verify"): lambda gw, q: ops.verify(gw, sample=_share(q, "sample", 1.0)),
    ("POST", "gc"): lambda gw, q: ops.gc(gw, grace_s=_grace(q), repack=not _flag(q, "no_repack"),
                                         squash=_flag(q, "squash")),  # fmt: skip
    ("GET", "trash"): lambda gw, q: ops.trash_list(gw),
    ("POST", "trash/restore"): lambda gw, q: ops.trash_restore(gw, q.get("path", ""), q.get("to")),
    ("POST", "trash/purge"): lambda gw, q: ops.trash_purge(gw, everything=_flag(q, "all")),
    ("GET", "versions"): lambda gw, q: file_versions.versions_list(gw, q.get("path", "")),
    ("POST", "versions/restore"): lambda gw, q: file_versions.versions_restore(gw, q.get("path", ""), q.get("n", 1)),
    ("POST", "backup"): lambda gw, q: ops.backup_now(gw.settings),
    ("GET", "sync"): lambda gw, q: ops.sync_status(gw),
    ("POST", "rebuild"): lambda gw, q: ops.rebuild_into(gw, Path(q.get("into") or "")) if q.get("into")
    else ops.refuse("rebuild needs ?into=<a new data dir>"),
}


# -- the record of a running server in its data dir --------------------------------------------


def server_url(host: str, port: int) -> str:
    """The URL a local client reaches a server bound to ``host``:``port`` at."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def write_server_record(data_dir: Path, url: str) -> Path:
    """Note in ``data_dir`` that this process serves it at ``url`` (``hfdav`` reads it)."""
    path = Path(data_dir) / SERVER_RECORD
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url.rstrip("/"), "pid": os.getpid()}) + "\n")
    os.replace(tmp, path)
    return path


def read_server_record(data_dir: Path) -> dict | None:
    try:
        record = json.loads((Path(data_dir) / SERVER_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("url"), str) else None


def remove_server_record(data_dir: Path) -> None:
    """Remove the record if this process wrote it."""
    record = read_server_record(data_dir)
    if record is not None and record.get("pid") == os.getpid():
        (Path(data_dir) / SERVER_RECORD).unlink(missing_ok=True)


def _json(start_response, status: str, payload: dict, extra: list[tuple[str, str]] | None = None):
    body = json.dumps(payload, sort_keys=True).encode() + b"\n"
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
               ("Cache-Control", "no-store"), *(extra or [])]  # fmt: skip
    start_response(status, headers)
    return [body]
