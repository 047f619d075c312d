"""``HEAD``/``GET /{P}{id}/resolve/{rev}/{path}``: file downloads and metadata.

Headers the client reads from the final response: ``X-Repo-Commit`` (required), ``X-Linked-Etag`` or
``ETag`` (required), ``X-Linked-Size`` or ``Content-Length``.

- Regular file: 200 (206 with ``Content-Range`` for a Range, 416 past EOF), ``ETag: "<blob sha1>"``,
  true ``Content-Length`` also on HEAD, ``Accept-Ranges: bytes``.
- LFS file: 302 to the storage origin (another port, so ``get_hf_file_metadata`` stops at this
  response and keeps its headers; httpx drops the Authorization header on the cross-origin hop),
  ``ETag: "<pointer sha1>"``, ``X-Linked-Etag: "<sha256>"``, ``X-Linked-Size``. With
  ``lfs_redirect=False`` the bytes are served directly with ``ETag: "<sha256>"``.
- Xet file (uploaded through the CAS): the same 302, to a signed storage URL serving the
  reconstructed bytes, plus ``X-Xet-Hash`` and ``Link: <…/xet-read-token/{commit}>; rel="xet-auth"``.
- Missing file: 404 ``EntryNotFound`` with ``X-Repo-Commit``; unknown revision: 404 ``RevisionNotFound``.
"""

from __future__ import annotations

from . import xet
from .api import resolve_revision
from .context import HubContext
from .httpio import Request, Response, file_response, not_found
from .store import Repo


def resolve(ctx: HubContext, req: Request, repo: Repo, revision: str, path: str) -> Response:
    commit = resolve_revision(repo, revision)
    ctx.stats.incr("resolve_gets" if req.method == "GET" else "resolve_heads")
    entry = commit.tree.get(path)
    if entry is None:
        raise not_found("EntryNotFound", f"Entry not found: {path}", headers={"X-Repo-Commit": commit.id})
    headers = {"X-Repo-Commit": commit.id}
    if entry.xet_hash:
        xet_headers = xet.resolve_headers(ctx, req, repo, commit.id, entry)
        if ctx.config.lfs_redirect:
            return Response(302, {**headers, **xet_headers})
        headers.update({k: v for k, v in xet_headers.items() if k != "Location"})
        headers["ETag"] = f'"{entry.sha256}"'
        return xet.file_bytes_response(ctx, entry.xet_hash, entry.size, req.headers.get("Range"), headers)
    if entry.lfs and ctx.config.lfs_redirect:
        location = ctx.storage_object_url(repo.repo_type, repo.repo_id, entry.sha256 or "")
        headers.update(
            {
                "Location": location,
                "ETag": f'"{entry.oid}"',
                "X-Linked-Etag": f'"{entry.sha256}"',
                "X-Linked-Size": str(entry.size),
                "Accept-Ranges": "bytes",
            }
        )
        return Response(302, headers)
    headers["ETag"] = f'"{entry.sha256 if entry.lfs else entry.oid}"'
    return file_response(repo.path_of(entry), entry.size, req.headers.get("Range"), headers)
