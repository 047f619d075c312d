"""Maps request targets to endpoints and enforces authentication.

Paths are split on ``/`` **before** percent-decoding: the client sends the revision as one segment
(``refs%2Fpr%2F1``) and the tree sub-path as one segment (``chunks%2F00``), while resolve file paths
keep literal ``/``.

API origin (``Authorization: Bearer <token>`` required, else 401 with
``X-Error-Message: Invalid credentials in Authorization header``; a token of ``read_tokens``
reads only, and no token writes to a repo of ``foreign_namespaces``: 403)::

    POST   /api/repos/create                    DELETE /api/repos/delete
    GET    /api/whoami-v2                       GET    /api/agent-harnesses        (no auth)
    GET    /api/{t}s/{ns}/{name}[/revision/{rev}]
    POST   /api/{t}s/{ns}/{name}/preupload/{rev}
    POST   /api/{t}s/{ns}/{name}/commit/{branch}
    GET    /api/{t}s/{ns}/{name}/tree/{rev}[/{path}]
    POST   /api/{t}s/{ns}/{name}/paths-info/{rev}
    GET    /api/{t}s/{ns}/{name}/commits/{rev}
    POST   /api/{t}s/{ns}/{name}/super-squash/{branch}
    GET    /api/{t}s/{ns}/{name}/refs           POST /api/{t}s/{ns}/{name}/branch/{branch}
    PUT    /api/{t}s/{ns}/{name}/settings
    GET    /api/{t}s/{ns}/{name}/xet-{read,write}-token/{rev}   (CAS token, see xet.py)
    POST   /{P}{ns}/{name}.git/info/lfs/objects/batch | /objects/verify
    POST   /{P}{ns}/{name}.git/info/lfs/complete/{oid}        (no auth)
    HEAD|GET /{P}{ns}/{name}/resolve/{rev}/{path}

Storage origin (no auth)::

    PUT      /upload/{type}/{ns}/{name}/{oid}[/{part}]
    HEAD|GET /objects/{type}/{ns}/{name}/{oid}
    /v1/…, /v2/…  (the Xet CAS API, its own Bearer tokens), HEAD|GET /xorbs/…, /xet-bridge/… (signed)
"""

from __future__ import annotations

from collections.abc import Callable

from . import api, lfs, xet
from .context import API_PLURALS, URL_PREFIXES, HubContext
from .httpio import HttpError, Request, Response, json_response, not_found
from .resolve import resolve
from .store import REPO_TYPES, Repo

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
_PREFIX_TYPES = {prefix.rstrip("/"): repo_type for repo_type, prefix in URL_PREFIXES.items() if prefix}


def _method_not_allowed() -> HttpError:
    return HttpError(405, "Method not allowed")


class Router:
    """Dispatch for both origins; endpoints raise ``HttpError`` for error answers."""

    def __init__(self, ctx: HubContext) -> None:
        self.ctx = ctx

    def _check_auth(self, req: Request) -> None:
        """401 for a missing or unknown token; ``req.can_write`` False for a read-only one."""
        req.can_write = True  # type: ignore[attr-defined]
        token = self.ctx.config.token
        if token is None:
            return
        header = req.headers.get("Authorization") or ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip() in self.ctx.config.read_tokens:
            req.can_write = False  # type: ignore[attr-defined]
            return
        if scheme.lower() != "bearer" or value.strip() != token:
            raise HttpError(401, INVALID_CREDENTIALS, header_message=True)

    def _repo(self, repo_type: str, namespace: str, name: str) -> Repo:
        repo = self.ctx.store.get(repo_type, f"{Request.decode(namespace)}/{Request.decode(name)}")
        if repo is None:
            raise not_found("RepoNotFound", "Repository not found")
        return repo

    def handle(self, req: Request, role: str) -> Response:
        if role == "storage":
            return self._storage(req)
        segs = req.segments
        if segs[:2] == ["api", "agent-harnesses"]:
            return json_response({"standardEnvVars": [], "harnesses": {}})
        if self._is_completion(segs):
            return self._git(req, segs)
        self._check_auth(req)
        if segs and segs[0] == "api":
            self.ctx.stats.incr("api_calls")
            return self._api(req, segs[1:])
        return self._git(req, segs)

    # -- /api ---------------------------------------------------------------------------------------------

    def _api(self, req: Request, segs: list[str]) -> Response:
        method = req.method
        if segs == ["whoami-v2"]:
            return api.whoami(self.ctx, req)
        if segs in (["repos", "create"], ["repos", "delete"]):
            create = segs[1] == "create"
            if method != ("POST" if create else "DELETE"):
                raise _method_not_allowed()
            return api.create_repo(self.ctx, req) if create else api.delete_repo(self.ctx, req)
        if len(segs) < 3 or segs[0] not in API_PLURALS:
            raise not_found("EntryNotFound", f"Unknown API route: {req.raw_path}")
        repo = self._repo(API_PLURALS[segs[0]], segs[1], segs[2])
        rest = [Request.decode(s) for s in segs[3:]]
        action = rest[0] if rest else ""
        routes: dict[tuple[str, str], Callable[[], Response]] = {
            ("GET", ""): lambda: api.repo_info(self.ctx, req, repo, "main"),
            ("GET", "revision"): lambda: api.repo_info(self.ctx, req, repo, _arg(rest, 1)),
            ("POST", "preupload"): lambda: api.preupload(self.ctx, req, repo, _arg(rest, 1)),
            ("POST", "commit"): lambda: api.commit(self.ctx, req, repo, _arg(rest, 1)),
            ("GET", "tree"): lambda: api.tree(self.ctx, req, repo, _arg(rest, 1), "/".join(rest[2:])),
            ("POST", "paths-info"): lambda: api.paths_info(self.ctx, req, repo, _arg(rest, 1)),
            ("GET", "commits"): lambda: api.commits(self.ctx, req, repo, _arg(rest, 1)),
            ("POST", "super-squash"): lambda: api.super_squash(self.ctx, req, repo, _arg(rest, 1)),
            ("GET", "refs"): lambda: api.refs(self.ctx, req, repo),
            ("POST", "branch"): lambda: api.create_branch(self.ctx, req, repo, _arg(rest, 1)),
            ("PUT", "settings"): lambda: api.settings(self.ctx, req, repo),
        }
        if action in ("xet-read-token", "xet-write-token") and method in ("GET", "HEAD"):
            if action == "xet-write-token":
                api.check_write(self.ctx, req, repo.repo_id)
            return xet.token(self.ctx, req, repo, action[4:-6], _arg(rest, 1))
        if method in ("POST", "PUT") and action != "paths-info":
            api.check_write(self.ctx, req, repo.repo_id)
        route = routes.get((method if method != "HEAD" else "GET", action))
        if route is None:
            if any(key[1] == action for key in routes):
                raise _method_not_allowed()
            raise not_found("EntryNotFound", f"Unknown API route: {req.raw_path}")
        return route()

    # -- git LFS and resolve on the API origin ---------------------------------------------------------------

    @staticmethod
    def _split_repo_path(segs: list[str]) -> tuple[str, list[str]]:
        if segs and segs[0] in _PREFIX_TYPES:
            return _PREFIX_TYPES[segs[0]], segs[1:]
        return "model", segs

    def _is_completion(self, segs: list[str]) -> bool:
        _, rest = self._split_repo_path(segs)
        return len(rest) == 6 and rest[1].endswith(".git") and rest[2:5] == ["info", "lfs", "complete"]

    def _git(self, req: Request, segs: list[str]) -> Response:
        repo_type, rest = self._split_repo_path(segs)
        if len(rest) >= 5 and rest[1].endswith(".git") and rest[2:4] == ["info", "lfs"]:
            if req.method != "POST":
                raise _method_not_allowed()
            self.ctx.stats.incr("api_calls")
            repo = self._repo(repo_type, rest[0], rest[1][: -len(".git")])
            api.check_write(self.ctx, req, repo.repo_id)
            return self._lfs_route(req, repo, rest[4:])
        if len(rest) >= 5 and rest[2] == "resolve":
            if req.method not in ("GET", "HEAD"):
                raise _method_not_allowed()
            repo = self._repo(repo_type, rest[0], rest[1])
            path = "/".join(Request.decode(s) for s in rest[4:])
            return resolve(self.ctx, req, repo, Request.decode(rest[3]), path)
        raise not_found("EntryNotFound", f"Not found: {req.raw_path}")

    def _lfs_route(self, req: Request, repo: Repo, tail: list[str]) -> Response:
        if tail == ["objects", "batch"]:
            return lfs.batch(self.ctx, req, repo)
        if tail == ["objects", "verify"]:
            return lfs.verify(self.ctx, req, repo)
        if len(tail) == 2 and tail[0] == "complete":
            return lfs.complete_multipart(self.ctx, req, repo, tail[1])
        raise not_found("EntryNotFound", f"Unknown LFS route: {req.raw_path}")

    # -- storage origin -------------------------------------------------------------------------------------

    def _storage(self, req: Request) -> Response:
        segs = [Request.decode(s) for s in req.segments]
        answer = xet.storage(self.ctx, req, segs)
        if answer is not None:
            return answer
        if len(segs) in (5, 6) and segs[0] == "upload" and segs[1] in REPO_TYPES:
            if req.method != "PUT":
                raise _method_not_allowed()
            part = None
            if len(segs) == 6:
                if not segs[5].isdigit() or int(segs[5]) < 1:
                    raise HttpError(400, "Invalid part number")
                part = int(segs[5])
            return lfs.upload(self.ctx, req, self._repo(segs[1], segs[2], segs[3]), segs[4], part)
        if len(segs) == 5 and segs[0] == "objects" and segs[1] in REPO_TYPES:
            if req.method not in ("GET", "HEAD"):
                raise _method_not_allowed()
            return lfs.download(self.ctx, req, self._repo(segs[1], segs[2], segs[3]), segs[4])
        raise not_found("EntryNotFound", "NoSuchKey")


def _arg(rest: list[str], index: int) -> str:
    if len(rest) <= index or not rest[index]:
        raise not_found("RevisionNotFound", "Missing revision")
    return rest[index]
