"""The NDJSON commit endpoint: ``POST /api/{t}s/{id}/commit/{branch}``.

Body: one JSON object per line, ``{"key": ..., "value": ...}``; first the ``header``
(``summary``, ``description``, optional ``parentCommit``), then operations in caller order:

- ``file``: ``{path, content, encoding: "base64"}`` — a regular file, inline;
- ``lfsFile``: ``{path, algo: "sha256", oid[, size]}`` — the object must already be in this repo's LFS
  store or declared by a shard uploaded to the Xet CAS for this repo (400 otherwise); ``size`` is
  absent for copies and then looked up;
- ``deletedFile``: ``{path}`` — 404 ``EntryNotFound`` if the file does not exist;
- ``deletedFolder``: ``{path}`` — every file under the folder.

Semantics: operations apply in order to the branch head's tree; the new commit's parent is the head.
``parentCommit`` (5-40 hex, prefix allowed) different from the head gives 412. Commits on one repo are
serialized by the repo lock. Success: ``{"success", "commitOid", "commitUrl", "hookOutput"}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Any

from .faults import COMMIT_QUOTA_MESSAGE, CommitQuota
from .httpio import HttpError, Request, not_found
from .store import Commit, FileEntry, Repo

MAX_LINE = 1 << 30
_PARENT_RE = re.compile(r"^[0-9a-f]{5,40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

PARENT_MISMATCH = "A commit has happened since. Please refresh and try again."
MISSING_LFS = (
    "Your push was rejected because an LFS pointer pointed to a file that does not exist. "
    "For instance, this can happen if you used git push --no-verify to push your changes. "
    "Offending file: {path}"
)

Operation = tuple[str, str, Any]


def normalize_path(path: Any) -> str:
    """Validate a repo path: relative, no empty / ``.`` / ``..`` segments, not under ``.git/``."""
    if not isinstance(path, str) or not path.strip("/"):
        raise HttpError(400, f"Invalid path: {path!r}")
    clean = path.strip("/")
    parts = clean.split("/")
    if any(part in ("", ".", "..") for part in parts) or parts[0] == ".git":
        raise HttpError(400, f"Invalid path: {path!r}")
    return clean


def parse_body(req: Request, repo: Repo) -> tuple[dict[str, Any], list[Operation]]:
    """Read the NDJSON body line by line; inline regular contents are stored as blobs right away."""
    header: dict[str, Any] | None = None
    ops: list[Operation] = []
    while line := req.readline(MAX_LINE):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            key, value = item["key"], item["value"]
        except (ValueError, KeyError, TypeError) as err:
            raise HttpError(400, f"Invalid NDJSON line in commit payload: {err}") from err
        if key == "header":
            header = value
        elif key == "file":
            content = value.get("content", "")
            try:
                if value.get("encoding") == "base64":
                    data = base64.b64decode(content, validate=True)
                else:
                    data = content.encode()
            except (binascii.Error, AttributeError) as err:
                raise HttpError(400, f"Invalid file content for {value.get('path')!r}") from err
            ops.append(("file", normalize_path(value.get("path")), repo.store_blob(data)))
        elif key == "lfsFile":
            if value.get("algo", "sha256") != "sha256" or not _SHA256_RE.match(str(value.get("oid", ""))):
                raise HttpError(400, f"Invalid lfsFile operation for {value.get('path')!r}")
            ops.append(("lfsFile", normalize_path(value.get("path")), value))
        elif key in ("deletedFile", "deletedFolder"):
            path = value.get("path")
            ops.append((key, "" if key == "deletedFolder" and path in ("", "/") else normalize_path(path), value))
        else:
            raise HttpError(400, f"Unknown key in commit payload: {key!r}")
    if not isinstance(header, dict) or not str(header.get("summary") or "").strip():
        raise HttpError(400, "The commit header with a non-empty summary is required")
    return header, ops


class TreeEditor:
    """Applies operations to a copy of a tree, keeping the set of directories for conflict checks."""

    def __init__(self, repo: Repo, tree: dict[str, FileEntry]) -> None:
        self.repo = repo
        self.tree = dict(tree)
        self.dirs = {path.rsplit("/", i)[0] for path in tree for i in range(1, path.count("/") + 1)}

    def _check_conflicts(self, path: str) -> None:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in self.tree:
                raise HttpError(400, f"Cannot create {path!r}: {'/'.join(parts[:depth])!r} is a file")
        if path in self.dirs and any(p.startswith(path + "/") for p in self.tree):
            raise HttpError(400, f"Cannot create {path!r}: it is a folder")

    def _add(self, path: str, entry: FileEntry) -> None:
        self._check_conflicts(path)
        self.tree[path] = entry
        parts = path.split("/")
        self.dirs.update("/".join(parts[:depth]) for depth in range(1, len(parts)))

    def apply(self, kind: str, path: str, value: Any) -> None:
        if kind == "file":
            self._add(path, value)
        elif kind == "lfsFile":
            oid = value["oid"]
            stored = self.repo.lfs_size(oid)
            xet = self.repo.xet_file(oid) if stored is None else None
            if xet is not None:
                stored = xet[1]
            if stored is None or (value.get("size") is not None and value["size"] != stored):
                raise HttpError(400, MISSING_LFS.format(path=path))
            self._add(path, FileEntry.for_xet(oid, stored, xet[0]) if xet else FileEntry.for_lfs(oid, stored))
        elif kind == "deletedFile":
            if path not in self.tree:
                raise not_found("EntryNotFound", f"A file with this name doesn't exist: {path}")
            del self.tree[path]
        elif kind == "deletedFolder":
            prefix = f"{path}/" if path else ""
            doomed = [p for p in self.tree if p.startswith(prefix)]
            if not doomed:
                raise not_found("EntryNotFound", f"A folder with this name doesn't exist: {path}")
            for p in doomed:
                del self.tree[p]


def commit(
    req: Request,
    repo: Repo,
    branch: str,
    *,
    author: str,
    quota: CommitQuota,
    commit_url: Callable[[str], str],
) -> dict[str, Any]:
    """Parse, validate and apply a commit; return the success JSON. Raises ``HttpError``."""
    if branch not in repo.refs:
        if repo.resolve(branch) is not None:
            raise HttpError(400, f"Invalid rev id: {branch} is not a branch")
        raise not_found("RevisionNotFound", f"Invalid rev id: {branch}")
    header, ops = parse_body(req, repo)
    parent = header.get("parentCommit")
    if parent is not None and not (isinstance(parent, str) and _PARENT_RE.match(parent)):
        raise HttpError(400, f"Invalid parentCommit: {parent!r}")
    with repo.lock:
        head = repo.resolve(branch)
        if head is None:
            raise not_found("RevisionNotFound", f"Invalid rev id: {branch}")
        if parent is not None and not head.id.startswith(parent):
            raise HttpError(412, PARENT_MISMATCH)
        editor = TreeEditor(repo, head.tree)
        for kind, path, value in ops:
            editor.apply(kind, path, value)
        reservation = quota.reserve()
        if reservation is None:
            raise HttpError(429, COMMIT_QUOTA_MESSAGE, headers={"Retry-After": str(quota.retry_after())})
        new = Commit.create(
            [head.id], str(header["summary"]).strip(), str(header.get("description") or ""), [author], editor.tree
        )
        try:
            repo.add_commit(new, branch)
        except BaseException:
            quota.release(reservation)
            raise
    return {"success": True, "commitOid": new.id, "commitUrl": commit_url(new.id), "hookOutput": ""}
