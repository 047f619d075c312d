"""Earlier versions of files, for the fronts (CLI, admin API, WebDAV): list, read, restore.

The metadata side is :mod:`gateway.meta.versions`; this module adds reading through the file
service (a version reads like the current content: seekable, Range-friendly).
"""

from __future__ import annotations

from dataclasses import replace

from gateway.errors import NotFound
from gateway.meta import versions as meta_versions
from gateway.meta.versions import FileVersion
from gateway.paths import normalize

__all__ = ["FileVersion", "list_versions", "open_version", "read_version", "restore_version"]


def list_versions(files, path: str) -> list[FileVersion]:
    return meta_versions.list_versions(files.repo, normalize(path))


def open_version(files, path: str, number: int):
    """A seekable reader of earlier version ``number`` (1: the newest earlier one) of ``path``."""
    path = normalize(path)
    node = files.repo.get(path)
    if node is None:
        raise NotFound(path)
    v = meta_versions.get_version(files.repo, path, number)
    parts = meta_versions.version_extents(files.repo, v.version_id)
    as_node = replace(node, version_id=v.version_id, size=v.size, etag=v.etag, checksums=v.checksums)
    return files.open_read(as_node, parts)


def read_version(files, path: str, number: int) -> bytes:
    with open_version(files, path, number) as r:
        return r.read()


def restore_version(files, path: str, number: int):
    """Make version ``number`` current again; the content current until now becomes version 1."""
    return meta_versions.restore(files.repo, normalize(path), number)


# -- operations (CLI and admin API: ``GET versions?path=``, ``POST versions/restore?path=&n=``) --


def _iso(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def versions_list(gateway, path: str) -> dict:
    return {
        "path": normalize(path),
        "keep": gateway.repo.keep_versions,
        "versions": [
            {"n": v.number, "size": v.size, "etag": v.etag, "created_at": _iso(v.created_at), "md5": v.checksums.md5}
            for v in list_versions(gateway.files, path)
        ],
    }


def versions_restore(gateway, path: str, number: int) -> dict:
    node = restore_version(gateway.files, path, int(number))
    return {"path": node.path, "restored": int(number), "size": node.size, "etag": node.etag}


def show(action: str, result: dict) -> None:
    if action == "restore":
        print(f"restored version {result['restored']} of {result['path']} ({result['size']} bytes)")
        return
    if not result["versions"]:
        print(f"{result['path']}: no earlier versions (HFDAV_VERSIONS={result['keep']})")
    for v in result["versions"]:
        print(f"{v['n']:>4}  {v['created_at']}  {v['size']:>12}  {v['etag']}")
