"""Repository API endpoints under ``/api``: create/delete, info, preupload, commit, tree, paths-info,
commits, super-squash, refs, branches, settings and whoami.

Every not-found answer carries ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound`` or
``EntryNotFound``): on an ``http://`` endpoint the client cannot infer it from the status alone.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from . import committing, gitutil, listing
from .context import URL_PREFIXES, HubContext
from .httpio import HttpError, Request, Response, json_response, not_found
from .store import REPO_TYPES, Commit, Repo, valid_repo_id


def resolve_revision(repo: Repo, revision: str) -> Commit:
    commit = repo.resolve(revision)
    if commit is None:
        raise not_found("RevisionNotFound", f"Invalid rev id: {revision}")
    return commit


def _repo_identity(ctx: HubContext, body: Any) -> tuple[str, str]:
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise HttpError(400, "Expected a JSON body with a repo 'name'")
    repo_type = body.get("type") or "model"
    if repo_type not in REPO_TYPES:
        raise HttpError(400, f"Invalid repo type: {repo_type}")
    name = body["name"]
    repo_id = name if "/" in name else f"{body.get('organization') or ctx.config.username}/{name}"
    if not valid_repo_id(repo_id):
        raise HttpError(400, f"Invalid repo name: {repo_id}")
    return repo_type, repo_id


def check_write(ctx: HubContext, req: Request, repo_id: str) -> None:
    """403 for a read-only token (see the router) or a repo in one of ``foreign_namespaces``."""
    if not getattr(req, "can_write", True) or repo_id.split("/")[0] in ctx.config.foreign_namespaces:
        raise HttpError(403, f"You don't have the rights to write to {repo_id}", header_message=True)


def create_repo(ctx: HubContext, req: Request) -> Response:
    """``POST /api/repos/create``: 200 ``{"url"}``; 409 ``{"error", "url"}`` if it exists (exist_ok reads it)."""
    body = req.json()
    repo_type, repo_id = _repo_identity(ctx, body)
    check_write(ctx, req, repo_id)
    private = body.get("visibility") == "private" or bool(body.get("private"))
    repo, created = ctx.store.create(repo_type, repo_id, private=private)
    url = ctx.repo_url(req, repo_type, repo_id)
    if not created:
        return json_response({"error": f"You already created this {repo_type} repo", "url": url}, 409)
    return json_response({"url": url, "name": repo_id, "id": repo_id})


def delete_repo(ctx: HubContext, req: Request) -> Response:
    """``DELETE /api/repos/delete`` with ``{"name", "organization", "type"}``."""
    repo_type, repo_id = _repo_identity(ctx, req.json())
    check_write(ctx, req, repo_id)
    if not ctx.store.delete(repo_type, repo_id):
        raise not_found("RepoNotFound", "Repository not found")
    return json_response({})


def repo_info(ctx: HubContext, req: Request, repo: Repo, revision: str) -> Response:
    """``GET /api/{t}s/{id}[/revision/{rev}]``: ``id``, ``sha``, ``siblings`` (+ sizes with ``blobs=true``)."""
    commit = resolve_revision(repo, revision)
    blobs = req.flag("blobs")
    siblings = []
    for path, entry in sorted(commit.tree.items()):
        sibling: dict[str, Any] = {"rfilename": path}
        if blobs:
            sibling.update(size=entry.size, blobId=entry.oid)
            if entry.lfs:
                sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256, "pointerSize": entry.pointer_size}
        siblings.append(sibling)
    namespace = repo.repo_id.split("/")[0]
    return json_response(
        {
            "_id": repo.root.name,
            "id": repo.repo_id,
            "author": namespace,
            "sha": commit.id,
            "lastModified": commit.date,
            "createdAt": repo.meta.get("createdAt"),
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "cardData": None,
            "siblings": siblings,
            "usedStorage": sum(entry.size for entry in commit.tree.values()),
        }
    )


def preupload(ctx: HubContext, req: Request, repo: Repo, revision: str) -> Response:
    """Decide ``uploadMode`` per file: ``lfs`` if size >= threshold, binary sample, or an LFS pattern of
    ``.gitattributes``; ``regular`` otherwise (always for empty files). Existing paths get ``oid``
    (sha256 for LFS, git blob sha1 for regular files)."""
    commit = resolve_revision(repo, revision)
    body = req.json()
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, list):
        raise HttpError(400, "Expected {'files': [...]}")
    attributes = commit.tree.get(".gitattributes")
    patterns = gitutil.lfs_patterns(repo.path_of(attributes).read_text()) if attributes else []
    answers = []
    for item in files:
        path, size = item.get("path"), item.get("size", 0)
        if not isinstance(path, str) or not isinstance(size, int):
            raise HttpError(400, "Each file needs 'path' and 'size'")
        sample = _decode_sample(item.get("sample", ""))
        lfs = size > 0 and (
            size >= ctx.config.lfs_threshold
            or gitutil.is_binary_sample(sample)
            or gitutil.matches_lfs_pattern(path, patterns)
        )
        answer: dict[str, Any] = {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False}
        existing = commit.tree.get(path.strip("/"))
        if existing is not None:
            answer["oid"] = existing.sha256 if existing.lfs else existing.oid
        answers.append(answer)
    ctx.stats.incr("preuploads")
    return json_response({"files": answers, "commitOid": commit.id})


def _decode_sample(sample: Any) -> bytes:
    try:
        return base64.b64decode(sample or "")
    except (binascii.Error, TypeError):
        return b""


def commit(ctx: HubContext, req: Request, repo: Repo, branch: str) -> Response:
    if req.flag("create_pr"):
        raise HttpError(400, "Pull requests are not supported by this Hub emulator")
    ctx.stats.incr("commit_requests")
    prefix = f"{ctx.api_base(req)}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}/commit/"
    result = committing.commit(
        req,
        repo,
        branch,
        author=ctx.config.username,
        quota=ctx.faults.commit_quota,
        commit_url=lambda sha: prefix + sha,
    )
    ctx.stats.incr("commits")
    return json_response(result)


def tree(ctx: HubContext, req: Request, repo: Repo, revision: str, path: str) -> Response:
    """``GET /api/{t}s/{id}/tree/{rev}[/{path}]?recursive=&expand=&cursor=``, paged with ``Link``."""
    commit = resolve_revision(repo, revision)
    view = repo.tree_view(commit)
    directory = path.strip("/")
    if directory and not view.is_dir(directory):
        raise not_found("EntryNotFound", f'{directory} does not exist on "{revision}"')
    expand = req.flag("expand")
    size = max(1, int(req.arg("limit") or (ctx.config.expand_page_size if expand else ctx.config.page_size)))
    cursor = req.arg("cursor")
    items = listing.tree_listing(view, directory, req.flag("recursive"))
    paths, next_key = listing.page_after(items, listing.decode_cursor(cursor) if cursor else None, size)
    entries = [listing.entry_json(p, view) for p in paths]
    if expand:
        listing.add_last_commits(repo, commit, entries)  # type: ignore[arg-type]
    headers = {}
    if next_key is not None:
        headers["Link"] = listing.next_link(ctx.api_base(req), req, cursor=listing.encode_cursor(next_key))
    ctx.stats.incr("tree_pages")
    return json_response(entries, headers=headers)


def paths_info(ctx: HubContext, req: Request, repo: Repo, revision: str) -> Response:
    """``POST /api/{t}s/{id}/paths-info/{rev}``, form (``paths=…&expand=…``) or JSON body."""
    commit = resolve_revision(repo, revision)
    paths, expand = listing.paths_from_form(req.form_or_json())
    if len(paths) > 1000:
        raise HttpError(413, "too many parameters")
    entries = listing.existing_entries(repo.tree_view(commit), paths)
    if expand:
        listing.add_last_commits(repo, commit, entries)
    ctx.stats.incr("paths_info")
    return json_response(entries)


def commits(ctx: HubContext, req: Request, repo: Repo, revision: str) -> Response:
    """``GET /api/{t}s/{id}/commits/{rev}?p=&limit=``: newest first, paged with ``Link``."""
    head = resolve_revision(repo, revision)
    try:
        page = max(0, int(req.arg("p") or 0))
        limit = max(1, int(req.arg("limit") or ctx.config.commits_page_size))
    except ValueError as err:
        raise HttpError(400, "Invalid paging parameters") from err
    history = list(repo.history(head.id))
    chunk = history[page * limit : (page + 1) * limit]
    formatted = "formatted" in req.query.get("expand[]", [])
    items = []
    for item in chunk:
        data: dict[str, Any] = {
            "id": item.id,
            "title": item.title,
            "message": item.message,
            "date": item.date,
            "authors": [{"user": author, "avatar": None} for author in item.authors],
        }
        if formatted:
            data["formatted"] = {"title": item.title, "message": item.message}
        items.append(data)
    headers = {}
    if (page + 1) * limit < len(history):
        headers["Link"] = listing.next_link(ctx.api_base(req), req, p=str(page + 1))
    return json_response(items, headers=headers)


def super_squash(ctx: HubContext, req: Request, repo: Repo, branch: str) -> Response:
    """Collapse ``branch`` into one parentless commit with the same tree; old SHAs become unresolvable
    and LFS objects / blobs that no remaining commit references are deleted."""
    body = req.json() or {}
    message = str(body.get("message") or f"Super-squash branch '{branch}'")
    with repo.lock:
        if branch not in repo.refs:
            raise not_found("RevisionNotFound", f"Invalid rev id: {branch}")
        head = resolve_revision(repo, branch)
        squashed = Commit.create([], message, "", [ctx.config.username], head.tree)
        repo.add_commit(squashed, branch)
        removed = repo.collect_garbage()
    ctx.stats.incr("super_squashes")
    return json_response({"commitOid": squashed.id, "removed": removed})


def refs(ctx: HubContext, req: Request, repo: Repo) -> Response:
    branches = [{"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha} for name, sha in repo.refs.items()]
    data: dict[str, Any] = {"branches": branches, "converts": [], "tags": []}
    if req.flag("include_prs"):
        data["pullRequests"] = []
    return json_response(data)


def create_branch(ctx: HubContext, req: Request, repo: Repo, branch: str) -> Response:
    """``POST /api/{t}s/{id}/branch/{branch}`` with optional ``{"startingPoint": rev}``."""
    body = req.json() or {}
    start = resolve_revision(repo, str(body.get("startingPoint") or "main"))
    with repo.lock:
        if branch in repo.refs:
            raise HttpError(409, f"Reference already exists: refs/heads/{branch}")
        repo.set_ref(branch, start.id)
    return json_response({})


def settings(ctx: HubContext, req: Request, repo: Repo) -> Response:
    body = req.json() or {}
    with repo.lock:
        if "private" in body:
            repo.meta["private"] = bool(body["private"])
        if "visibility" in body:
            repo.meta["private"] = body["visibility"] == "private"
        repo.save_meta()
    return json_response({})


def whoami(ctx: HubContext, req: Request) -> Response:
    name = ctx.config.username
    role = "write" if getattr(req, "can_write", True) else "read"
    return json_response(
        {
            "type": "user",
            "id": name,
            "name": name,
            "fullname": name,
            "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "emulator", "role": role}},
        }
    )
