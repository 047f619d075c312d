"""Git-LFS: batch API, verify, multipart completion (Hub origin) and the storage service (own origin).

- ``POST /{P}{id}.git/info/lfs/objects/batch`` (Bearer auth): per object, no ``actions`` if this repo
  already stores it; otherwise ``upload.href`` on the storage origin plus ``verify.href``. Objects
  larger than ``multipart_threshold`` get the HF multipart form: ``upload.header`` holds ``chunk_size``
  and one URL per part (``"00001"``…), ``upload.href`` is the completion URL.
- Storage ``PUT /upload/{type}/{id}/{oid}`` (no auth): the body is streamed to disk while hashed;
  sha256 must equal the oid (400 ``BadDigest`` otherwise). Part PUTs answer an ``ETag`` (md5).
- ``POST /{P}{id}.git/info/lfs/complete/{oid}`` (no auth): ``{"oid", "parts": [{"partNumber", "etag"}]}``.
- ``POST /{P}{id}.git/info/lfs/objects/verify`` (Bearer auth): ``{"oid", "size"}`` → 200 or 404.
- Storage ``GET/HEAD /objects/{type}/{id}/{oid}`` (no auth, Range supported): the object bytes.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

from .context import URL_PREFIXES, HubContext
from .httpio import HttpError, Request, Response, file_response, json_response, not_found
from .store import Repo

_OID_RE = re.compile(r"^[0-9a-f]{64}$")
LFS_JSON = {"Content-Type": "application/vnd.git-lfs+json"}


def _lfs_base(ctx: HubContext, req: Request, repo: Repo) -> str:
    return f"{ctx.api_base(req)}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}.git/info/lfs"


def batch(ctx: HubContext, req: Request, repo: Repo) -> Response:
    body = req.json()
    if not isinstance(body, dict) or not isinstance(body.get("objects"), list):
        raise HttpError(422, "Expected {'operation', 'objects': [...]}")
    operation = body.get("operation", "upload")
    config = ctx.config
    objects: list[dict[str, Any]] = []
    for obj in body["objects"]:
        oid, size = obj.get("oid"), obj.get("size")
        if not isinstance(oid, str) or not _OID_RE.match(oid) or not isinstance(size, int) or size < 0:
            objects.append(
                {
                    "oid": str(oid),
                    "size": size if isinstance(size, int) else 0,
                    "error": {"code": 422, "message": "Invalid object: oid must be sha256, size an integer"},
                }
            )
            continue
        stored = repo.lfs_size(oid)
        answer: dict[str, Any] = {"oid": oid, "size": size}
        if operation == "download":
            if stored is None:
                answer["error"] = {"code": 404, "message": "Object does not exist"}
            else:
                answer["actions"] = {"download": {"href": ctx.storage_object_url(repo.repo_type, repo.repo_id, oid)}}
        elif stored != size:
            verify = {"href": f"{_lfs_base(ctx, req, repo)}/objects/verify"}
            if size > config.multipart_threshold:
                parts = max(1, -(-size // config.multipart_chunk_size))
                header = {"chunk_size": str(config.multipart_chunk_size)}
                for part in range(1, parts + 1):
                    header[f"{part:05d}"] = ctx.storage_upload_url(repo.repo_type, repo.repo_id, oid, part)
                upload = {"href": f"{_lfs_base(ctx, req, repo)}/complete/{oid}", "header": header}
            else:
                upload = {"href": ctx.storage_upload_url(repo.repo_type, repo.repo_id, oid) + f"?size={size}"}
            answer["actions"] = {"upload": upload, "verify": verify}
        objects.append(answer)
    ctx.stats.incr("lfs_batches")
    return json_response({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}, headers=LFS_JSON)


def verify(ctx: HubContext, req: Request, repo: Repo) -> Response:
    body = req.json() or {}
    ctx.stats.incr("lfs_verifies")
    oid, size = body.get("oid"), body.get("size")
    if not isinstance(oid, str) or repo.lfs_size(oid) is None or (size is not None and repo.lfs_size(oid) != size):
        raise not_found("EntryNotFound", f"LFS object {oid} not found")
    return json_response({}, headers=LFS_JSON)


def _receive(req: Request, target: Path, *extra: Any) -> tuple[str, int, list[Any]]:
    """Stream the body into ``target``; return (sha256 hex, size, [other digests' hexdigest])."""
    sha256 = hashlib.sha256()
    size = 0
    with open(target, "wb") as fh:
        for chunk in req.iter_body():
            sha256.update(chunk)
            for digest in extra:
                digest.update(chunk)
            fh.write(chunk)
            size += len(chunk)
    return sha256.hexdigest(), size, [digest.hexdigest() for digest in extra]


def upload(ctx: HubContext, req: Request, repo: Repo, oid: str, part: int | None) -> Response:
    """Storage PUT of a whole object (basic transfer) or of one part (multipart)."""
    if not _OID_RE.match(oid):
        raise HttpError(400, "Invalid oid")
    tmp = repo.temp_path(".upload")
    try:
        if part is not None:
            _, _, (md5,) = _receive(req, tmp, hashlib.md5())
            parts_dir = _parts_dir(repo, oid)
            parts_dir.mkdir(parents=True, exist_ok=True)
            tmp.replace(parts_dir / f"{part:05d}")
            (parts_dir / f"{part:05d}.etag").write_text(md5)
            ctx.stats.incr("lfs_parts")
            return Response(200, {"ETag": f'"{md5}"'})
        digest, size, _ = _receive(req, tmp)
        expected = req.arg("size")
        if digest != oid or (expected is not None and expected.isdigit() and int(expected) != size):
            raise HttpError(400, f"BadDigest: the sha256 of the body ({digest}, {size} bytes) does not match {oid}")
        repo.install_lfs_object(tmp, oid)
    finally:
        tmp.unlink(missing_ok=True)
    ctx.stats.incr("lfs_puts")
    return Response(200, {"ETag": f'"{oid}"'})


def _parts_dir(repo: Repo, oid: str) -> Path:
    return repo.root / "tmp" / f"parts-{oid}"


def complete_multipart(ctx: HubContext, req: Request, repo: Repo, oid: str) -> Response:
    """Concatenate the uploaded parts in ``partNumber`` order, check etags and sha256, install."""
    if not _OID_RE.match(oid):
        raise HttpError(400, "Invalid oid")
    body = req.json() or {}
    parts = sorted(body.get("parts") or [], key=lambda p: p.get("partNumber", 0))
    if body.get("oid") != oid or not parts:
        raise HttpError(400, "Invalid completion payload")
    parts_dir = _parts_dir(repo, oid)
    tmp = repo.temp_path(".multipart")
    sha256 = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for item in parts:
                part_file = parts_dir / f"{int(item['partNumber']):05d}"
                etag_file = part_file.with_suffix(".etag")
                if not part_file.exists() or str(item.get("etag", "")).strip('"') != etag_file.read_text():
                    raise HttpError(400, f"InvalidPart: part {item['partNumber']} is missing or its etag differs")
                with open(part_file, "rb") as src:
                    while block := src.read(1 << 20):
                        sha256.update(block)
                        out.write(block)
        if sha256.hexdigest() != oid:
            raise HttpError(400, f"BadDigest: the sha256 of the assembled parts does not match {oid}")
        repo.install_lfs_object(tmp, oid)
        shutil.rmtree(parts_dir, ignore_errors=True)
    finally:
        tmp.unlink(missing_ok=True)
    return json_response({}, headers=LFS_JSON)


def download(ctx: HubContext, req: Request, repo: Repo, oid: str) -> Response:
    """Storage GET/HEAD of an LFS object; no auth; Range → 206, past EOF → 416."""
    size = repo.lfs_size(oid) if _OID_RE.match(oid) else None
    if size is None:
        raise not_found("EntryNotFound", "NoSuchKey: the specified key does not exist")
    if req.method == "GET":
        ctx.stats.incr("storage_gets")
    return file_response(repo.lfs_path(oid), size, req.headers.get("Range"), {"ETag": f'"{oid}"'})
