"""Tree entries, last-commit lookup and cursor pagination for tree/paths-info/commits listings.

Entry format (what ``RepoFile``/``RepoFolder`` parse): every entry has ``type``, ``path``, ``oid`` and
``size``; LFS files add ``lfs: {oid: <sha256>, size, pointerSize}``; with ``expand=true`` entries add
``lastCommit: {id, title, date}``. ``xetHash`` is never sent, so the client never tries Xet.

Pagination follows the Hub: the response carries ``Link: <absolute next URL>; rel="next"`` with all the
query parameters of the request plus ``cursor=`` (tree) or ``p=`` (commits); the client requests that
URL verbatim until no ``next`` link is returned.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from .httpio import HttpError, Request
from .store import Commit, Repo, TreeView


def file_json(path: str, view: TreeView) -> dict[str, Any]:
    entry = view.files[path]
    data: dict[str, Any] = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
    if entry.lfs:
        data["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
    if entry.xet_hash:
        data["xetHash"] = entry.xet_hash
    return data


def entry_json(path: str, view: TreeView) -> dict[str, Any] | None:
    """The tree entry of a file or directory of ``view``, or None if the path does not exist."""
    if path in view.files:
        return file_json(path, view)
    if path and view.is_dir(path):
        return {"type": "directory", "oid": view.dir_oids[path], "size": 0, "path": path}
    return None


def _oid_at(view: TreeView, path: str) -> str | None:
    entry = view.files.get(path)
    return entry.oid if entry is not None else view.dir_oids.get(path)


def commit_summary(commit: Commit) -> dict[str, str]:
    return {"id": commit.id, "title": commit.title, "date": commit.date}


def add_last_commits(repo: Repo, head: Commit, entries: list[dict[str, Any]]) -> None:
    """Set ``lastCommit`` on each entry: the newest commit of the history that changed that path."""
    pending = {entry["path"] for entry in entries}
    found: dict[str, Commit] = {}
    newer, newer_view = head, repo.tree_view(head)
    for commit in repo.history(head.id):
        if commit is head:
            continue
        view = repo.tree_view(commit)
        for path in list(pending):
            if _oid_at(view, path) != _oid_at(newer_view, path):
                found[path] = newer
                pending.discard(path)
        if not pending:
            break
        newer, newer_view = commit, view
    for entry in entries:
        entry["lastCommit"] = commit_summary(found.get(entry["path"], newer))


def encode_cursor(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError as err:
        raise HttpError(400, "Invalid cursor") from err


def next_link(base_url: str, req: Request, **params: str) -> str:
    """``Link`` header value pointing at the same URL with ``params`` replaced."""
    query = [(k, v) for k, values in req.query.items() if k not in params for v in values]
    query.extend(params.items())
    return f'<{base_url}{req.raw_path}?{urlencode(query)}>; rel="next"'


def tree_listing(view: TreeView, directory: str, recursive: bool) -> list[tuple[list[Any], str]]:
    """``(sort key, path)`` of the listing, in page order.

    Non-recursive listings put directories first; recursive listings are in path order and include
    the directories themselves.
    """
    if recursive:
        return sorted(([0, path], path) for path in view.descendants(directory))
    return sorted(([0 if view.is_dir(path) else 1, path], path) for path in view.children.get(directory, []))


def page_after(items: list[tuple[list[Any], str]], cursor: Any, size: int) -> tuple[list[str], Any]:
    """Up to ``size`` paths after ``cursor`` and the cursor of the next page (None on the last page)."""
    start = 0
    if cursor is not None:
        start = next((i for i, (key, _) in enumerate(items) if key > cursor), len(items))
    chunk = items[start : start + size]
    more = start + size < len(items)
    return [path for _, path in chunk], (chunk[-1][0] if more and chunk else None)


def paths_from_form(form: dict[str, Any]) -> tuple[list[str], bool]:
    """``paths`` and ``expand`` from a form body (``paths=a&paths=b&expand=False``) or a JSON body."""
    paths = form.get("paths") or []
    if isinstance(paths, str):
        paths = [paths]
    expand = form.get("expand", False)
    if isinstance(expand, list):
        expand = expand[0] if expand else False
    if isinstance(expand, str):
        expand = expand.lower() in ("1", "true", "yes")
    return [p for p in paths if isinstance(p, str)], bool(expand)


def existing_entries(view: TreeView, paths: Iterable[str]) -> list[dict[str, Any]]:
    """Entries for the paths that exist; missing paths are silently left out (Hub behaviour)."""
    entries = []
    for path in dict.fromkeys(p.strip("/") for p in paths):
        entry = entry_json(path, view)
        if entry is not None:
            entries.append(entry)
    return entries
