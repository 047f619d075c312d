"""The browser file manager: a WSGI app under :data:`UI_PREFIX` in front of the WebDAV stack.

``<share prefix>/.hfdav-ui/`` (``/dav/.hfdav-ui/`` in the container, ``/.hfdav-ui/`` with the share
at ``/``: inside the share's URL space, so the bundled nginx needs no location of its own;
WebDAV cannot use that name at the share's root) serves one page
(``static/``: plain HTML, CSS and JavaScript, nothing from
elsewhere at run time) and its JSON API under ``/.hfdav-ui/api/``. A browser's GET of a folder URL
of the share (``Accept: text/html``, path ending in ``/``) is redirected to the page showing that
folder; ``?dav`` after the URL keeps WsgiDAV's plain listing (lftp and scripts that read it send
no ``text/html``).

Sign-in is a form posting the user's WebDAV name and password (checked, throttled and logged by
:class:`gateway.dav.auth.Authenticator` like any login); the answer sets a signed session cookie
(:mod:`gateway.webui.session`: HttpOnly, SameSite=Strict, Secure behind https). Every call that
changes something needs the ``X-CSRF-Token`` header, and a read-only user's such calls are
refused with 403 whatever the page shows. Uploads: :mod:`gateway.webui.uploads`; share links:
:mod:`gateway.webui.shares` (public pages under ``/.hfdav-ui/s/<token>``).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import mimetypes
import os
import secrets
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, quote

from gateway.dav.auth import Identity, Refusal
from gateway.dav.ranges import parse_range, resolve
from gateway.errors import (
    AlreadyExists,
    Conflict,
    HfdavError,
    InsufficientStorage,
    InvalidPath,
    NotFound,
    QuotaExceeded,
    ReadOnly,
    Reserved,
    StoreError,
)
from gateway.paths import HIDDEN_ROOT_NAMES, name_of, normalize, parent_of
from gateway.trash import TRASH_PATH, in_trash
from gateway.webui.session import COOKIE, SESSION_SECONDS, Signer, cookie_header, load_key, parse_cookies
from gateway.webui.shares import ShareBook
from gateway.webui.uploads import UploadArea, UploadError

log = logging.getLogger(__name__)

UI_PREFIX = "/.hfdav-ui"
STATIC = Path(__file__).with_name("static")
#: Bytes a PATCH of an upload may carry at most; the page sends pieces of :data:`UPLOAD_PIECE`.
MAX_PIECE = 64 << 20
UPLOAD_PIECE = 8 << 20
#: Text previews read at most this much.
TEXT_PREVIEW_MAX = 1 << 20
PAGE_MAX = 1000
MAX_JSON = 64 * 1024
READ_BLOCK = 1 << 20
SHARE_COOKIE = "hfdav_share"

_STATUS = [
    (NotFound, "404 Not Found"),
    (AlreadyExists, "409 Conflict"),
    (Conflict, "409 Conflict"),
    (InvalidPath, "400 Bad Request"),
    (Reserved, "403 Forbidden"),
    (ReadOnly, "403 Forbidden"),
    (QuotaExceeded, "507 Insufficient Storage"),
    (InsufficientStorage, "507 Insufficient Storage"),
    (StoreError, "503 Service Unavailable"),
]
#: Types shown inline (previews); anything else is sent as an attachment.
_INLINE = ("image/", "video/", "audio/", "application/pdf", "text/plain")
_PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self'; frame-src 'self'; object-src 'self'; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'self'; base-uri 'none'"
)


class HttpError(Exception):
    def __init__(self, status: str, message: str, **extra):
        super().__init__(message)
        self.status = status
        self.extra = extra


class Request:
    def __init__(self, environ, ui: str):
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET")
        raw = environ.get("PATH_INFO") or "/"
        with contextlib.suppress(UnicodeError):
            raw = raw.encode("latin-1").decode("utf-8")
        self.path = raw[len(ui) :] or "/"
        self.query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()}
        self.cookies = parse_cookies(environ.get("HTTP_COOKIE"))

    def json(self) -> dict:
        if "application/json" not in (self.environ.get("CONTENT_TYPE") or ""):
            raise HttpError("415 Unsupported Media Type", "send JSON (Content-Type: application/json)")
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_JSON:
            raise HttpError("413 Content Too Large", "request too large")
        data = self.environ["wsgi.input"].read(length) if length else b""
        try:
            value = json.loads(data or b"{}")
        except ValueError:
            raise HttpError("400 Bad Request", "malformed JSON") from None
        if not isinstance(value, dict):
            raise HttpError("400 Bad Request", "expected a JSON object")
        return value

    @property
    def secure(self) -> bool:
        return (self.environ.get("wsgi.url_scheme") == "https"
                or (self.environ.get("HTTP_X_FORWARDED_PROTO") or "").lower() == "https")  # fmt: skip


class Response:
    def __init__(self, status="200 OK", body=b"", content_type="application/json", headers=None, length=None):
        self.status = status
        self.body = body
        self.headers = [("Content-Type", content_type), ("Cache-Control", "no-store"),
                        ("X-Content-Type-Options", "nosniff"), *(headers or [])]  # fmt: skip
        if isinstance(body, bytes):
            self.headers.append(("Content-Length", str(len(body))))
        elif length is not None:
            self.headers.append(("Content-Length", str(length)))


def json_response(value, status="200 OK", headers=None) -> Response:
    return Response(status, json.dumps(value).encode(), "application/json", headers)


def _str(d: dict, key: str) -> str:
    value = d.get(key)
    if not isinstance(value, str):
        raise HttpError("400 Bad Request", f"{key!r} must be a string")
    return value


def _path(text: str) -> str:
    path = normalize(text)
    if in_trash(path):
        raise HttpError("403 Forbidden", f"{TRASH_PATH} is the trash; use the trash view")
    return path


def _entry(node, base: str = "") -> dict:
    path = node.path[len(base) :] if base else node.path
    return {"name": node.name, "path": path or "/", "dir": node.is_dir, "size": node.size,
            "mtime": node.modified_at, "type": None if node.is_dir else _type_of(node)}  # fmt: skip


def _type_of(node) -> str:
    return node.content_type or mimetypes.guess_type(node.name)[0] or "application/octet-stream"


def _disposition(kind: str, name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


class WebUI:
    """WSGI middleware: answers :data:`UI_PREFIX` and redirects browsers' folder GETs; passes
    everything else to ``app``. ``health``: a callable returning ``(healthy, report)`` (the
    ``/healthz`` checks), set by the composition after the front is built."""

    def __init__(self, app, *, files, auth, prefix: str, data_dir: Path, health=None, clock=time.time):
        self.app = app
        self.files = files
        self.auth = auth
        self.prefix = prefix.rstrip("/")
        #: where the page and its API live: inside the share's URL space
        self.ui = self.prefix + UI_PREFIX
        self.health = health
        self._clock = clock
        self.signer = Signer(load_key(data_dir), clock=clock)
        self.uploads = UploadArea(Path(data_dir) / "webui-uploads", clock=clock)
        self.shares = ShareBook(files.repo, clock=clock)

    # -- dispatch -------------------------------------------------------------------------------
    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        if path == self.ui or path.startswith(self.ui + "/"):
            return self._answer(environ, start_response)
        if self._is_browser_folder_get(environ, path):
            rel = path[len(self.prefix) :] if self.prefix else path
            with contextlib.suppress(UnicodeError):
                rel = rel.encode("latin-1").decode("utf-8")
            target = f"{self.ui}/#{quote(rel.rstrip('/') or '/', safe='/')}"
            start_response("303 See Other", [("Location", target), ("Content-Length", "0"),
                                             ("Cache-Control", "no-store")])  # fmt: skip
            return [b""]
        return self.app(environ, start_response)

    def _is_browser_folder_get(self, environ, path: str) -> bool:
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return False
        if "text/html" not in (environ.get("HTTP_ACCEPT") or ""):
            return False
        if "dav" in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True):
            return False
        if path.startswith("/.hfdav-admin"):
            return False
        if self.prefix and path == self.prefix:  # the share's URL as typed, without the slash
            return True
        return path.endswith("/") and path.startswith(self.prefix + "/")

    def _answer(self, environ, start_response):
        req = Request(environ, self.ui)
        try:
            resp = self._route(req)
        except HttpError as exc:
            resp = json_response({"error": str(exc), **exc.extra}, exc.status)
        except UploadError as exc:
            resp = json_response({"error": str(exc), **exc.extra}, exc.status)
        except HfdavError as exc:
            status = next((s for cls, s in _STATUS if isinstance(exc, cls)), None)
            if status is None and getattr(exc, "transient", False):  # e.g. the database kept being busy
                status = "503 Service Unavailable"
            retry = str(getattr(exc, "retry_after", 2))
            headers = [("Retry-After", retry)] if status == "503 Service Unavailable" else []
            resp = json_response({"error": str(exc)}, status or "500 Internal Server Error", headers)
        start_response(resp.status, resp.headers)
        if req.method == "HEAD":
            close = getattr(resp.body, "close", None)
            if close is not None:
                close()
            return [b""]
        return [resp.body] if isinstance(resp.body, bytes) else resp.body

    def _route(self, req: Request) -> Response:
        p, m = req.path, req.method
        if m in ("GET", "HEAD"):
            if p in ("/", "/index.html") or p.startswith("/s/"):
                return self._page()
            if p.startswith("/static/"):
                return self._static(p[len("/static/") :])
        if p.startswith("/api/public/"):
            return self._public(req, p[len("/api/public/") :])
        if p == "/api/login" and m == "POST":
            return self._login(req)
        if p == "/api/logout" and m == "POST":
            return self._logout(req)
        user, can_write = self._session(req)
        if m not in ("GET", "HEAD"):
            if not self.signer.csrf_ok(req.cookies.get(COOKIE, ""), req.environ.get("HTTP_X_CSRF_TOKEN")):
                raise HttpError("403 Forbidden", "missing or wrong CSRF token")
            if not can_write and p != "/api/logout":
                raise HttpError("403 Forbidden", "this account is read-only")
        routes = {
            ("GET", "/api/me"): lambda: self._me(req, user, can_write),
            ("GET", "/api/list"): lambda: self._list(req, ""),
            ("GET", "/api/file"): lambda: self._file(req, _path(req.query.get("path", ""))),
            ("GET", "/api/zip"): lambda: self._zip(_path(req.query.get("path", ""))),
            ("GET", "/api/status"): lambda: self._status(),
            ("GET", "/api/trash"): lambda: self._trash(),
            ("GET", "/api/shares"): lambda: self._share_list(user),
            ("POST", "/api/mkdir"): lambda: self._mkdir(req),
            ("POST", "/api/rename"): lambda: self._rename(req),
            ("POST", "/api/move"): lambda: self._move(req, copy=False),
            ("POST", "/api/copy"): lambda: self._move(req, copy=True),
            ("POST", "/api/delete"): lambda: self._delete(req),
            ("POST", "/api/trash/restore"): lambda: self._restore(req),
            ("POST", "/api/trash/purge"): lambda: self._purge(req),
            ("POST", "/api/shares"): lambda: self._share_create(req, user),
            ("POST", "/api/uploads"): lambda: self._upload_create(req, user),
        }
        key = ("GET" if m == "HEAD" else m, p)
        if key in routes:
            return routes[key]()
        if p.startswith("/api/uploads/"):
            return self._upload(req, user, p[len("/api/uploads/") :])
        if p.startswith("/api/shares/") and p.endswith("/revoke") and m == "POST":
            token = p[len("/api/shares/") : -len("/revoke")]
            if not self.shares.revoke(token, None if user == "admin" else user):
                raise HttpError("404 Not Found", "no such live link of yours")
            return json_response({"revoked": token})
        raise HttpError("404 Not Found", "no such page")

    # -- page and assets --------------------------------------------------------------------------
    def _page(self) -> Response:
        body = (STATIC / "index.html").read_text().replace("{{UI}}", self.ui).encode()
        return Response("200 OK", body, "text/html; charset=utf-8",
                        [("Content-Security-Policy", _PAGE_CSP), ("X-Frame-Options", "SAMEORIGIN"),
                         ("Referrer-Policy", "no-referrer")])  # fmt: skip

    def _static(self, name: str) -> Response:
        if "/" in name or name.startswith(".") or not (STATIC / name).is_file():
            raise HttpError("404 Not Found", "no such asset")
        kind = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml", "png": "image/png"}.get(
            name.rsplit(".", 1)[-1], "application/octet-stream"
        )
        resp = Response("200 OK", (STATIC / name).read_bytes(), kind + ("; charset=utf-8" if "text" in kind else ""))
        resp.headers[1] = ("Cache-Control", "no-cache")
        return resp

    # -- sessions ---------------------------------------------------------------------------------
    def _login(self, req: Request) -> Response:
        data = req.json()
        name, password = _str(data, "user"), _str(data, "password")
        token = base64.b64encode(f"{name}:{password}".encode()).decode()
        client = req.environ.get("hfdav.client") or req.environ.get("REMOTE_ADDR") or "-"
        verdict = self.auth.identify({"HTTP_AUTHORIZATION": f"Basic {token}", "REQUEST_METHOD": "POST"}, client)
        if isinstance(verdict, Refusal):
            if verdict.status.startswith("429"):
                retry = dict(verdict.headers).get("Retry-After", "60")
                return json_response({"error": "too many failed sign-ins; try again later"}, verdict.status,
                                     [("Retry-After", retry)])  # fmt: skip
            return json_response({"error": "wrong user name or password"}, "401 Unauthorized")
        assert isinstance(verdict, Identity)
        value = self.signer.sign("session", [name.encode().hex()], SESSION_SECONDS)
        account = self.auth.account(name)
        cookie = cookie_header(COOKIE, value, path=self.ui + "/", secure=req.secure, max_age=SESSION_SECONDS)
        return json_response({"user": name, "can_write": bool(account and account.can_write),
                              "csrf": self.signer.csrf(value)}, headers=[cookie])  # fmt: skip

    def _logout(self, req: Request) -> Response:
        cookie = cookie_header(COOKIE, "", path=self.ui + "/", secure=req.secure, max_age=0)
        return json_response({"signed_out": True}, headers=[cookie])

    def _session(self, req: Request) -> tuple[str, bool]:
        fields = self.signer.verify("session", req.cookies.get(COOKIE), 1)
        if fields is None:
            raise HttpError("401 Unauthorized", "sign in first")
        try:
            user = bytes.fromhex(fields[0]).decode()
        except ValueError:
            raise HttpError("401 Unauthorized", "sign in first") from None
        account = self.auth.account(user)
        if account is None:
            raise HttpError("401 Unauthorized", "sign in first")
        req.environ["wsgidav.auth.user_name"] = user  # for the access log
        return user, account.can_write

    def _me(self, req: Request, user: str, can_write: bool) -> Response:
        return json_response({"user": user, "can_write": can_write, "csrf": self.signer.csrf(req.cookies[COOKIE]),
                              "upload_piece": UPLOAD_PIECE, "dav_prefix": self.prefix + "/"})  # fmt: skip

    # -- reading ----------------------------------------------------------------------------------
    def _node(self, path: str):
        node = self.files.stat(path)
        if node is None:
            raise NotFound(f"{path or '/'} does not exist")
        return node

    def _list(self, req: Request, base: str, *, hide_trash: bool = True) -> Response:
        rel = normalize(req.query.get("path", ""))
        path = normalize(base + rel)
        if hide_trash and in_trash(path):
            raise HttpError("403 Forbidden", "use the trash view")
        node = self._node(path)
        if not node.is_dir:
            raise Conflict(f"{rel} is not a folder")
        kids = [k for k in self.files.list(node) if not (path == "" and k.name in HIDDEN_ROOT_NAMES)]
        needle = req.query.get("q", "").casefold()
        if needle:
            kids = [k for k in kids if needle in k.name.casefold()]
        sort, desc = req.query.get("sort", "name"), req.query.get("order") == "desc"
        keys = {"size": lambda k: (k.size, k.name.casefold()), "mtime": lambda k: (k.modified_at, k.name.casefold())}
        kids.sort(key=keys.get(sort, lambda k: k.name.casefold()), reverse=desc)
        kids.sort(key=lambda k: not k.is_dir)  # folders first, stable
        try:
            offset = max(0, int(req.query.get("offset", 0)))
            limit = min(PAGE_MAX, max(1, int(req.query.get("limit", 200))))
        except ValueError:
            raise HttpError("400 Bad Request", "offset and limit are numbers") from None
        page = kids[offset : offset + limit]
        return json_response({"path": rel or "/", "total": len(kids), "offset": offset,
                              "entries": [_entry(k, base) for k in page]})  # fmt: skip

    def _file(self, req: Request, path: str) -> Response:
        found = self.files.stat_for_read(path)
        if found is None:
            raise NotFound(f"{path} does not exist")
        node, extents = found
        if node.is_dir:
            raise Conflict(f"{path} is a folder")
        kind = _type_of(node)
        as_text = req.query.get("text") == "1"
        modified = datetime.fromtimestamp(node.modified_at, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
        headers = [("Accept-Ranges", "bytes"), ("ETag", f'"{node.etag}"'), ("Last-Modified", modified)]
        if as_text:
            kind = "text/plain; charset=utf-8"
        inline = req.query.get("dl") != "1" and (as_text or kind.startswith(_INLINE))
        headers.append(("Content-Disposition", _disposition("inline" if inline else "attachment", node.name)))
        if not kind.startswith("application/pdf"):
            headers.append(("Content-Security-Policy", "sandbox"))  # a stored page never runs as this site
        size = node.size
        start, length, status = 0, size, "200 OK"
        specs = parse_range(req.environ.get("HTTP_RANGE"))
        if_range = req.environ.get("HTTP_IF_RANGE")
        if specs is not None and size > 0 and (not if_range or if_range == f'"{node.etag}"'):
            ranges = resolve(specs, size)
            if not ranges:
                return Response("416 Range Not Satisfiable", b"", "text/plain",
                                [("Content-Range", f"bytes */{size}")])  # fmt: skip
            if len(ranges) == 1:
                r = ranges[0]
                start, length, status = r.start, r.length, "206 Partial Content"
                headers.append(("Content-Range", r.content_range(size)))
        reader = self.files.open_read(node, extents)
        return Response(status, _read_body(reader, start, length), kind, headers, length=length)

    def _zip(self, path: str) -> Response:
        node = self._node(path)
        if not node.is_dir:
            raise Conflict(f"{path} is not a folder")
        name = (node.name or "drive") + ".zip"
        return Response("200 OK", zip_stream(self.files, node), "application/zip",
                        [("Content-Disposition", _disposition("attachment", name))])  # fmt: skip

    def _status(self) -> Response:
        used, quota = self.files.used_bytes(), self.files.quota
        report = {"used": used, "quota": quota}
        if self.health is not None:
            healthy, full = self.health()
            checks = full.get("checks", {})
            database = {"ok": checks.get("database", {}).get("ok")}
            report.update(healthy=healthy, version=full.get("version"), store=checks.get("store"),
                          sync=checks.get("committer"), database=database)  # fmt: skip
        return json_response(report)

    # -- changes ----------------------------------------------------------------------------------
    def _mkdir(self, req: Request) -> Response:
        path = _path(_str(req.json(), "path"))
        return json_response(_entry(self.files.mkdir(path)), "201 Created")

    def _rename(self, req: Request) -> Response:
        data = req.json()
        path, name = _path(_str(data, "path")), _str(data, "name")
        if not name or "/" in name:
            raise HttpError("400 Bad Request", "a name without '/'")
        if not path:
            raise HttpError("400 Bad Request", "the root has no name")
        target = _path(parent_of(path) + "/" + name)
        if self.files.stat(target) is not None:
            raise AlreadyExists(f"{target} exists")
        return json_response(_entry(self.files.move(path, target)))

    def _move(self, req: Request, *, copy: bool) -> Response:
        data = req.json()
        sources = data.get("paths")
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise HttpError("400 Bad Request", "'paths' must be a list of paths")
        dest = _path(_str(data, "dest"))
        folder = self._node(dest)
        if not folder.is_dir:
            raise Conflict(f"{dest} is not a folder")
        done = []
        for src in sources:
            src = _path(src)
            if not src:
                raise HttpError("400 Bad Request", "the root cannot be moved")
            if dest == src or dest.startswith(src + "/"):
                raise Conflict(f"{src} cannot go inside itself")
            target = dest + "/" + name_of(src)
            if self.files.stat(target) is not None:
                raise AlreadyExists(f"{target} exists")
            node = self.files.copy(src, target) if copy else self.files.move(src, target)
            done.append(_entry(node))
        return json_response({"done": done})

    def _delete(self, req: Request) -> Response:
        paths = req.json().get("paths")
        if not isinstance(paths, list) or not all(isinstance(s, str) for s in paths):
            raise HttpError("400 Bad Request", "'paths' must be a list of paths")
        for p in paths:
            path = _path(p)
            if not path:
                raise HttpError("400 Bad Request", "the root cannot be deleted")
            self._node(path)
            self.files.delete(path)
        return json_response({"deleted": len(paths), "to_trash": self.files.trash is not None})

    def _trash(self) -> Response:
        trash = self.files.trash
        if trash is None:
            return json_response({"enabled": False, "entries": []})
        entries = [{"trash_path": e.trash_path, "path": e.original_path, "deleted_at": e.deleted_at,
                    "dir": e.is_dir, "size": e.size} for e in reversed(trash.entries())]  # fmt: skip
        return json_response({"enabled": True, "days": trash.days, "entries": entries})

    def _trash_path(self, req: Request) -> str:
        path = normalize(_str(req.json(), "trash_path"))
        if not path.startswith(TRASH_PATH + "/") or self.files.trash is None:
            raise HttpError("400 Bad Request", "not an entry of the trash")
        return path

    def _restore(self, req: Request) -> Response:
        path = self._trash_path(req)
        return json_response({"restored": self.files.trash.restore(path)})

    def _purge(self, req: Request) -> Response:
        path = self._trash_path(req)
        stamp = TRASH_PATH + "/" + path[len(TRASH_PATH) + 1 :].split("/", 1)[0]
        self._node(path)
        self.files.delete(stamp)  # deleting inside the trash is final
        return json_response({"purged": path})

    # -- uploads ----------------------------------------------------------------------------------
    def _upload_create(self, req: Request, user: str) -> Response:
        data = req.json()
        path = _path(_str(data, "path"))
        size, mtime = data.get("size"), data.get("mtime")
        if not path or not isinstance(size, int) or size < 0:
            raise HttpError("400 Bad Request", "'path' and a 'size' >= 0 are needed")
        if mtime is not None and not isinstance(mtime, (int, float)):
            raise HttpError("400 Bad Request", "'mtime' is seconds since the epoch")
        self.files.check_writable(path)
        existing = self.files.stat(path)
        if existing is not None and existing.is_dir:
            raise Conflict(f"{path} is a folder")
        self.files.check_quota(size, existing.size if existing else 0)
        self.files.check_space(size)
        upload = self.uploads.create(user, path, size, mtime)
        return json_response(upload.as_json(), "201 Created")

    def _upload(self, req: Request, user: str, rest: str) -> Response:
        upload_id, _, action = rest.partition("/")
        upload = self.uploads.get(upload_id, user)
        m = req.method
        if action == "" and m in ("GET", "HEAD"):
            return json_response(upload.as_json())
        if action == "" and m in ("PATCH", "PUT"):
            try:
                offset = int(req.environ.get("HTTP_UPLOAD_OFFSET", ""))
                raw = req.environ.get("CONTENT_LENGTH")
                length = int(raw) if raw else None
            except ValueError:
                raise HttpError("400 Bad Request", "Upload-Offset and Content-Length are numbers") from None
            if length is not None and length > MAX_PIECE:
                raise HttpError("413 Content Too Large", f"send pieces of at most {MAX_PIECE} bytes")
            try:
                new = self.uploads.append(upload, offset, req.environ["wsgi.input"], length)
            except (OSError, ValueError):  # the body broke off: what arrived is kept
                offset = self.uploads.get(upload.id, user).offset
                raise HttpError("400 Bad Request", "the body broke off", offset=offset) from None
            return json_response({"offset": new, "size": upload.size})
        if action == "" and m == "DELETE":
            self.uploads.remove(upload)
            return json_response({"removed": upload.id})
        if action == "finish" and m == "POST":
            return self._upload_finish(upload)
        raise HttpError("405 Method Not Allowed", "not a method of an upload")

    def _upload_finish(self, upload) -> Response:
        if upload.offset != upload.size:
            raise HttpError("409 Conflict", f"{upload.offset} of {upload.size} bytes received", offset=upload.offset)
        with open(upload.data, "rb") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # no PATCH or finish meanwhile
            except OSError:
                raise HttpError("409 Conflict", "this upload is being written or finished") from None
            if os.fstat(f.fileno()).st_size != upload.size or not upload.dir.exists():
                raise HttpError("409 Conflict", "this upload changed meanwhile")
            self._makedirs(parent_of(upload.path))
            session = self.files.open_write(upload.path, expected_length=upload.size, mtime=upload.mtime)
            while piece := f.read(READ_BLOCK):
                session.write(piece)
            node = session.commit()
            self.uploads.remove(upload)
        return json_response(_entry(node))

    def _makedirs(self, path: str) -> None:
        parts = [s for s in path.split("/") if s]
        for i in range(1, len(parts) + 1):
            sub = "/" + "/".join(parts[:i])
            node = self.files.stat(sub)
            if node is None:
                with contextlib.suppress(AlreadyExists):
                    self.files.mkdir(sub)
            elif not node.is_dir:
                raise Conflict(f"{sub} is a file")

    # -- share links ------------------------------------------------------------------------------
    def _share_list(self, user: str) -> Response:
        now = self._clock()
        return json_response({"shares": [s.as_json(now) for s in self.shares.list(None if user == "admin" else user)]})

    def _share_create(self, req: Request, user: str) -> Response:
        data = req.json()
        path = _path(_str(data, "path"))
        node = self._node(path)
        expires_in, password = data.get("expires_in"), data.get("password") or None
        if expires_in is not None and (not isinstance(expires_in, (int, float)) or expires_in <= 0):
            raise HttpError("400 Bad Request", "'expires_in' is a number of seconds > 0")
        if password is not None and not isinstance(password, str):
            raise HttpError("400 Bad Request", "'password' is a string")
        expires_at = self._clock() + expires_in if expires_in else None
        share = self.shares.create(secrets.token_urlsafe(24), path, node.is_dir, user, expires_at=expires_at,
                                   password=password)  # fmt: skip
        return json_response({**share.as_json(self._clock()), "url": f"{self.ui}/s/{share.token}"}, "201 Created")

    def _public(self, req: Request, rest: str) -> Response:
        token, _, action = rest.partition("/")
        share = self.shares.live(token)
        if share is None:
            raise HttpError("404 Not Found", "this link does not exist, expired or was revoked")
        cookie_name = f"{SHARE_COOKIE}_{token[:16]}"
        if action == "unlock" and req.method == "POST":
            if not self.shares.password_ok(share, _str(req.json(), "password")):
                time.sleep(0.5)
                raise HttpError("403 Forbidden", "wrong password")
            value = self.signer.sign("share", [token], 12 * 3600)
            cookie = cookie_header(cookie_name, value, path=f"{self.ui}/", secure=req.secure, max_age=12 * 3600)
            return json_response({"unlocked": True}, headers=[cookie])
        if req.method not in ("GET", "HEAD"):
            raise HttpError("405 Method Not Allowed", "share links are read-only")
        locked = share.has_password and self.signer.verify("share", req.cookies.get(cookie_name), 1) != [token]
        info = {"name": name_of(share.path) or "drive", "dir": share.is_dir, "expires_at": share.expires_at,
                "locked": locked}  # fmt: skip
        if action == "":
            if not locked and not share.is_dir:
                node = self._node(share.path)
                info.update(size=node.size, type=_type_of(node), mtime=node.modified_at)
            return json_response(info)
        if locked:
            raise HttpError("403 Forbidden", "this link needs its password")
        if share.is_dir:
            rel = normalize(req.query.get("path", ""))
            inner = normalize(share.path + rel)
        else:
            inner = share.path
        if in_trash(inner):
            raise HttpError("403 Forbidden", "the trash is not shared")
        if action == "list" and share.is_dir:
            return self._list(req, share.path)
        if action == "file":
            return self._file(req, inner)
        if action == "zip" and share.is_dir:
            return self._zip(inner)
        raise HttpError("404 Not Found", "no such page")


def _read_body(reader, start: int, length: int):
    try:
        reader.seek(start)
        left = length
        while left > 0:
            piece = reader.read(min(READ_BLOCK, left))
            if not piece:
                raise StoreError("the file ended early")
            left -= len(piece)
            yield piece
    finally:
        reader.close()


class _Sink:
    """A write-only stream that keeps what zipfile writes until the response takes it."""

    def __init__(self):
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


def zip_stream(files, root):
    """A zip of the folder ``root`` written as it is sent: entries are stored (no compression),
    with data descriptors, so nothing is buffered beyond one read block."""
    sink = _Sink()
    base = root.path
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for node in files.repo.walk(base):
            if node.path == base or (base == "" and in_trash(node.path)):
                continue
            arcname = node.path[len(base) + 1 :]
            when = datetime.fromtimestamp(max(node.modified_at, 315532800), UTC).timetuple()[:6]
            info = zipfile.ZipInfo(arcname + ("/" if node.is_dir else ""), date_time=when)
            if node.is_dir:
                zf.writestr(info, b"")
            else:
                info.file_size = node.size
                with zf.open(info, "w", force_zip64=node.size >= (1 << 31)) as out:
                    reader = files.open_read(node)
                    try:
                        while piece := reader.read(READ_BLOCK):
                            out.write(piece)
                            yield sink.take()
                    finally:
                        reader.close()
            yield sink.take()
    yield sink.take()
