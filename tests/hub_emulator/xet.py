"""The Xet storage path: token endpoints on the Hub origin, the CAS API and pre-signed reads on the
storage origin. What ``huggingface_hub`` 2.4 with ``hf_xet`` 1.8 sends, checked by logging requests:

Upload (``preupload`` still answers ``lfs``; the client picks Xet itself)::

    GET  /api/{t}s/{id}/xet-write-token/{rev}         (Hub auth) → {"casUrl", "accessToken", "exp"}
                                                       and X-Xet-Cas-Url / X-Xet-Access-Token /
                                                       X-Xet-Token-Expiration headers
    GET  {cas}/v1/chunks/default-merkledb/{chunk}      → 404 (no global dedup here)
    POST {cas}/v1/xorb-grants/default/{xorb}           {"length", "checksum"} → 201 {"id", "method",
                                                       "url", "headers"} (200 if the xorb exists)
    PUT  {storage}/xorb-uploads/{id}?…                 the serialized xorb, no CAS auth (412: done)
    POST {cas}/v1/xorb-commits/default/{xorb}/grant/{id}  → {"was_inserted"} (404: nothing uploaded)
    POST {cas}/v1/xorbs/default/{xorb}                 the client's fallback when grants answer 404
                                                       (``Config.xet_upload_grants=False``)
    POST {cas}/v2/shards                               body: the MDB shard → NDJSON frames ending
                                                       with {"type": "result"} (/v1/shards: {"result": 1})
    POST /api/{t}s/{id}/commit/{branch}                lfsFile {sha256, size}: accepted when a shard
                                                       uploaded with a token of this repo declared it

Download::

    HEAD /{P}{id}/resolve/{rev}/{path}   → 302, X-Xet-Hash, X-Linked-Size, X-Linked-Etag and
                                           Link: <…/xet-read-token/{commit}>; rel="xet-auth";
                                           Location: a signed storage URL serving the bytes (Range ok)
    GET  /api/{t}s/{id}/xet-read-token/{rev}
    GET  {cas}/v2/reconstructions/{file}  (or /v1/…, Range: bytes=a-b) → terms + signed xorb URLs
    GET  {storage}/xorbs/default/{xorb}?…  Range: the chunk bytes (the client decompresses)

CAS requests carry ``Authorization: Bearer <accessToken>`` (401 if missing or expired, 403 for a read
token on an upload). Signed URLs expire (``Config.xet_url_ttl``): 403 ``Request has expired``.
Faults are injected like on the LFS path (``emu.faults.add(method, path_regex, …)`` matches these
targets too); :func:`fail_xorb_uploads` and :func:`fail_shard_uploads` are shortcuts.

State under ``<data_dir>/xet/``: ``xorbs/<hash>`` (as uploaded) with ``xorbs/<hash>.idx`` (chunk
offsets), ``grants/<id>.json`` (+ ``.data`` once uploaded), ``files/<file hash>.json`` (size,
sha256, terms) and ``secret`` (URL signing key); each repo keeps ``xet/<sha256>.json`` for the
files uploaded for it (``Repo.xet_file``). Hashes are not recomputed (no BLAKE3 here), nor is a
grant's CRC-64 (its length is); a file's sha256 is checked against its reconstructed bytes when
the shard arrives (``Config.xet_verify_files``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .httpio import (
    HttpError,
    RangeNotSatisfiable,
    Request,
    Response,
    file_response,
    json_response,
    not_found,
    parse_range,
)
from .store import Repo, write_atomic
from .xet_format import FormatError, ShardFile, Term, iter_chunks, parse_shard, scan_xorb

if TYPE_CHECKING:
    from .context import HubContext
    from .faults import FaultInjector, FaultRule

_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_SHARD = 64 << 20


def fail_xorb_uploads(
    faults: FaultInjector, times: int | None = 1, status: int = 503, kind: str = "status"
) -> FaultRule:
    """Fail the next ``times`` xorb uploads (the ``PUT`` to a grant URL, or ``POST /v1/xorbs/…`` without
    grants) with ``status`` (or another fault kind)."""
    return faults.add(None, r"^/(v1/xorbs|xorb-uploads)/", kind, status=status, times=times)


def fail_shard_uploads(
    faults: FaultInjector, times: int | None = 1, status: int = 503, kind: str = "status"
) -> FaultRule:
    """Fail the next ``times`` shard uploads (``POST /v1/shards`` or ``/v2/shards``)."""
    return faults.add("POST", r"^/v[12]/shards", kind, status=status, times=times)


def fail_xorb_reads(faults: FaultInjector, times: int | None = 1, status: int = 503, kind: str = "status") -> FaultRule:
    """Fail the next ``times`` GETs of signed xorb or file URLs on the storage origin."""
    return faults.add("GET", r"^/(xorbs|xet-bridge)/", kind, status=status, times=times)


class XetCas:
    """The content-addressed store behind the CAS endpoints (shared by every repo, like the real CAS)."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "xet"
        (self.root / "xorbs").mkdir(parents=True, exist_ok=True)
        (self.root / "files").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        (self.root / "grants").mkdir(parents=True, exist_ok=True)
        secret_file = self.root / "secret"
        if not secret_file.exists():
            write_atomic(secret_file, os.urandom(32).hex().encode())
        self._secret = secret_file.read_bytes()
        self._lock = threading.Lock()
        self._indexes: OrderedDict[str, list[tuple[int, int]]] = OrderedDict()

    # -- tokens and signed URLs ---------------------------------------------------------------------------

    def make_token(self, scope: str, repo: Repo, ttl: int) -> tuple[str, int]:
        exp = int(time.time()) + ttl
        claims = json.dumps({"s": scope, "t": repo.repo_type, "r": repo.repo_id, "e": exp}).encode()
        body = base64.urlsafe_b64encode(claims).decode().rstrip("=")
        return f"xet_{body}.{self._sign(body)}", exp

    def check_token(self, req: Request, scope: str) -> dict[str, Any]:
        """Claims of the request's CAS token; 401 if missing, forged or expired, 403 if read-only for a write."""
        header = req.headers.get("Authorization") or ""
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        body, _, signature = token.removeprefix("xet_").partition(".")
        if not token.startswith("xet_") or not hmac.compare_digest(signature, self._sign(body)):
            raise HttpError(401, "Invalid or missing CAS access token")
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if claims["e"] < time.time():
            raise HttpError(401, "CAS access token expired")
        if scope == "write" and claims["s"] != "write":
            raise HttpError(403, "This CAS access token does not allow writes")
        return claims

    def _sign(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()[:32]

    def signed_path(self, path: str, ttl: int) -> str:
        exp = int(time.time()) + ttl
        return f"{path}?X-Xet-Expires={exp}&X-Xet-Signature={self._sign(f'{path}:{exp}')}"

    def check_signed(self, req: Request) -> None:
        exp = req.arg("X-Xet-Expires") or ""
        signature = req.arg("X-Xet-Signature") or ""
        if not exp.isdigit() or not hmac.compare_digest(signature, self._sign(f"{req.raw_path}:{exp}")):
            raise HttpError(403, "AccessDenied: bad signature")
        if int(exp) < time.time():
            raise HttpError(403, "AccessDenied: Request has expired")

    # -- xorbs --------------------------------------------------------------------------------------------

    def xorb_path(self, xorb: str) -> Path:
        return self.root / "xorbs" / xorb

    def has_xorb(self, xorb: str) -> bool:
        return (self.root / "xorbs" / f"{xorb}.idx").exists()

    def receive(self, req: Request, target: Path) -> int:
        """Stream a request body into ``target``; returns its size."""
        size = 0
        with open(target, "wb") as fh:
            for piece in req.iter_body():
                fh.write(piece)
                size += len(piece)
        if req.content_length is not None and size != req.content_length:
            raise ConnectionError("body shorter than its Content-Length")
        return size

    def put_xorb(self, xorb: str, req: Request) -> bool:
        """``POST /v1/xorbs``: store an uploaded xorb; False if it was already there (body drained)."""
        if self.has_xorb(xorb):
            req.drain()
            return False
        tmp = self.root / "tmp" / f"{xorb}.{os.urandom(6).hex()}"
        try:
            self.install_xorb(xorb, tmp, self.receive(req, tmp))
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def install_xorb(self, xorb: str, source: Path, size: int) -> None:
        """Index the chunks of an uploaded xorb file (400 if malformed) and move it into the store."""
        with open(source, "rb") as fh:
            try:
                index = scan_xorb(fh, size)
            except FormatError as err:
                raise HttpError(400, f"Invalid xorb: {err}") from err
        os.replace(source, self.xorb_path(xorb))
        write_atomic(self.root / "xorbs" / f"{xorb}.idx", json.dumps(index).encode())

    # -- upload grants: POST xorb-grants → PUT to the grant URL → POST xorb-commits ------------------------

    def grant(self, xorb: str, length: int, ttl: int) -> str:
        """A new upload grant for ``xorb`` of ``length`` bytes; returns its id."""
        grant_id = os.urandom(12).hex()
        record = {"xorb": xorb, "length": length, "exp": int(time.time()) + ttl}
        write_atomic(self.root / "grants" / f"{grant_id}.json", json.dumps(record).encode())
        return grant_id

    def _grant(self, grant_id: str) -> dict[str, Any] | None:
        if not re.fullmatch(r"[0-9a-f]{24}", grant_id):
            return None
        try:
            return json.loads((self.root / "grants" / f"{grant_id}.json").read_text())
        except FileNotFoundError:
            return None

    def upload_to_grant(self, grant_id: str, req: Request) -> Response:
        """The grant URL: 404 unknown grant, 412 already uploaded, 400 wrong length, else 200."""
        grant = self._grant(grant_id)
        if grant is None:
            raise not_found("EntryNotFound", "NoSuchUpload")
        target = self.root / "grants" / f"{grant_id}.data"
        if target.exists():
            req.drain()
            return Response(412, {"Content-Type": "text/plain"}, b"PreconditionFailed")
        tmp = self.root / "tmp" / f"{grant_id}.{os.urandom(6).hex()}"
        try:
            size = self.receive(req, tmp)
            if size != grant["length"]:
                raise HttpError(400, f"BadDigest: {size} bytes received, the grant is for {grant['length']}")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return Response(200, {"ETag": f'"{grant_id}"'})

    def commit_grant(self, xorb: str, grant_id: str) -> bool:
        """``POST xorb-commits``: install the uploaded xorb; 404 if nothing was uploaded for the grant."""
        grant = self._grant(grant_id)
        data = self.root / "grants" / f"{grant_id}.data"
        if grant is None or grant["xorb"] != xorb or not data.exists():
            if self.has_xorb(xorb):
                return False
            raise not_found("EntryNotFound", "Commit found no uploaded data for grant")
        inserted = not self.has_xorb(xorb)
        if inserted:
            self.install_xorb(xorb, data, data.stat().st_size)
        data.unlink(missing_ok=True)
        (self.root / "grants" / f"{grant_id}.json").unlink(missing_ok=True)
        return inserted

    def xorb_index(self, xorb: str) -> list[tuple[int, int]]:
        """``[(offset, uncompressed length)]`` per chunk, then ``(end of chunks, 0)``."""
        with self._lock:
            index = self._indexes.get(xorb)
            if index is not None:
                self._indexes.move_to_end(xorb)
                return index
        try:
            index = [tuple(pair) for pair in json.loads((self.root / "xorbs" / f"{xorb}.idx").read_text())]
        except FileNotFoundError as err:
            raise not_found("EntryNotFound", f"xorb {xorb} not found") from err
        with self._lock:
            self._indexes[xorb] = index  # type: ignore[assignment]
            while len(self._indexes) > 256:
                self._indexes.popitem(last=False)
        return index  # type: ignore[return-value]

    # -- files --------------------------------------------------------------------------------------------

    def file_info(self, file_hash: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.root / "files" / f"{file_hash}.json").read_text())
        except FileNotFoundError:
            return None

    def terms(self, file_hash: str) -> tuple[int, list[Term]]:
        info = self.file_info(file_hash) if _HASH_RE.match(file_hash) else None
        if info is None:
            raise not_found("EntryNotFound", f"file {file_hash} not found")
        return info["size"], [Term(*term) for term in info["terms"]]

    def put_shard(self, data: bytes, repo: Repo | None, verify: bool) -> list[ShardFile]:
        """Register the files of a shard (their xorbs must be stored); returns them."""
        try:
            shard = parse_shard(data)
        except FormatError as err:
            raise HttpError(400, f"Invalid shard: {err}") from err
        for declared in shard.xorbs:
            if not self.has_xorb(declared.xorb):
                raise HttpError(400, f"Shard references xorb {declared.xorb}, which was not uploaded")
        for file in shard.files:
            for term in file.terms:
                if not self.has_xorb(term.xorb):
                    raise HttpError(400, f"File {file.file_hash} references unknown xorb {term.xorb}")
                index = self.xorb_index(term.xorb)
                chunks = index[term.start : term.end]
                if term.end > len(index) - 1 or sum(length for _, length in chunks) != term.size:
                    raise HttpError(400, f"File {file.file_hash}: term {term} does not match xorb {term.xorb}")
            record = {"size": file.size, "sha256": file.sha256, "terms": [list(vars(t).values()) for t in file.terms]}
            write_atomic(self.root / "files" / f"{file.file_hash}.json", json.dumps(record).encode())
            if file.sha256 is None or verify:
                digest = hashlib.sha256()
                for piece in self.read_range(file.file_hash, 0, file.size - 1):
                    digest.update(piece)
                if file.sha256 is not None and digest.hexdigest() != file.sha256:
                    (self.root / "files" / f"{file.file_hash}.json").unlink(missing_ok=True)
                    raise HttpError(400, f"File {file.file_hash}: sha256 of the reconstructed bytes differs")
                if file.sha256 is None:
                    file.sha256 = digest.hexdigest()
                    record["sha256"] = file.sha256
                    write_atomic(self.root / "files" / f"{file.file_hash}.json", json.dumps(record).encode())
            if repo is not None:
                repo.add_xet_file(file.sha256, file.file_hash, file.size)
        return shard.files

    def read_range(self, file_hash: str, start: int, end: int) -> Iterator[bytes]:
        """The reconstructed bytes ``[start, end]`` (inclusive) of a file."""
        _, terms = self.terms(file_hash)
        position = 0
        for term in terms:
            term_end = position + term.size
            if term_end <= start:
                position = term_end
                continue
            if position > end:
                break
            index = self.xorb_index(term.xorb)
            with open(self.xorb_path(term.xorb), "rb") as fh:
                for chunk in range(term.start, term.end):
                    offset, length = index[chunk]
                    if position + length <= start:
                        position += length
                        continue
                    if position > end:
                        break
                    fh.seek(offset)
                    (data,) = iter_chunks(fh.read(index[chunk + 1][0] - offset))
                    lo = max(0, start - position)
                    hi = min(length, end - position + 1)
                    yield data[lo:hi]
                    position += length
            position = term_end

    def reconstruction(self, file_hash: str, byte_range: str | None, version: int, url_of) -> dict[str, Any]:
        """The reconstruction answer (v1 ``fetch_info`` or v2 ``xorbs``) for the whole file or a range."""
        size, terms = self.terms(file_hash)
        try:
            bounds = parse_range(byte_range, size) if byte_range else None
        except RangeNotSatisfiable as err:
            raise HttpError(416, "Range Not Satisfiable") from err
        start, end = bounds if bounds is not None else (0, size - 1)
        position, offset_into_first, chosen = 0, 0, []
        for term in terms:
            term_end = position + term.size
            if term_end > start and position <= end:
                if not chosen:
                    offset_into_first = start - position
                chosen.append(term)
            position = term_end
        fetch: dict[str, list[dict[str, Any]]] = {}
        seen: set[tuple[str, int, int]] = set()
        for term in chosen:
            if (term.xorb, term.start, term.end) in seen:
                continue
            seen.add((term.xorb, term.start, term.end))
            index = self.xorb_index(term.xorb)
            chunks = {"start": term.start, "end": term.end}
            span = {"start": index[term.start][0], "end": index[term.end][0] - 1}
            url = url_of(term.xorb)
            if version == 1:
                fetch.setdefault(term.xorb, []).append({"range": chunks, "url": url, "url_range": span})
            else:
                fetch.setdefault(term.xorb, []).append({"url": url, "ranges": [{"chunks": chunks, "bytes": span}]})
        answer: dict[str, Any] = {
            "offset_into_first_range": offset_into_first,
            "terms": [
                {"hash": t.xorb, "unpacked_length": t.size, "range": {"start": t.start, "end": t.end}} for t in chosen
            ],
        }
        answer["fetch_info" if version == 1 else "xorbs"] = fetch
        return answer


# -- endpoints ------------------------------------------------------------------------------------------------


def token(ctx: HubContext, req: Request, repo: Repo, scope: str, revision: str) -> Response:
    """``GET /api/{t}s/{id}/xet-{read,write}-token/{rev}``."""
    from .api import resolve_revision

    if req.flag("create_pr"):
        raise HttpError(400, "Pull requests are not supported by this Hub emulator")
    resolve_revision(repo, revision)
    access, exp = ctx.xet.make_token(scope, repo, ctx.config.xet_token_ttl)
    ctx.stats.incr("xet_tokens")
    cas_url = ctx.storage_url
    headers = {"X-Xet-Cas-Url": cas_url, "X-Xet-Access-Token": access, "X-Xet-Token-Expiration": str(exp)}
    return json_response({"casUrl": cas_url, "accessToken": access, "exp": exp}, headers=headers)


def resolve_headers(ctx: HubContext, req: Request, repo: Repo, commit_id: str, entry: Any) -> dict[str, str]:
    """Headers of a resolve answer for a Xet file (a 302 to the signed storage URL)."""
    plural = f"{repo.repo_type}s"
    refresh = f"{ctx.api_base(req)}/api/{plural}/{repo.repo_id}/xet-read-token/{commit_id}"
    location = ctx.storage_url + ctx.xet.signed_path(f"/xet-bridge/{entry.xet_hash}", ctx.config.xet_url_ttl)
    return {
        "Location": location,
        "ETag": f'"{entry.oid}"',
        "X-Linked-Etag": f'"{entry.sha256}"',
        "X-Linked-Size": str(entry.size),
        "X-Xet-Hash": entry.xet_hash,
        "Link": f'<{refresh}>; rel="xet-auth"',
        "Accept-Ranges": "bytes",
    }


def file_bytes_response(
    ctx: HubContext, file_hash: str, size: int, range_header: str | None, headers: dict[str, str]
) -> Response:
    """200/206/416 serving a Xet file's reconstructed bytes."""
    headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream", **headers}
    try:
        byte_range = parse_range(range_header, size)
    except RangeNotSatisfiable:
        return Response(416, {**headers, "Content-Range": f"bytes */{size}"})
    status = 200
    start, end = 0, size - 1
    if byte_range is not None:
        start, end = byte_range
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        status = 206
    length = end - start + 1 if size else 0
    return Response(status, headers, length=length, stream=lambda: ctx.xet.read_range(file_hash, start, end))


def storage(ctx: HubContext, req: Request, segs: list[str]) -> Response | None:
    """CAS routes and signed reads on the storage origin; None if the path is not a Xet route."""
    cas: XetCas = ctx.xet
    if segs[:1] == ["xorbs"] and len(segs) == 3:
        if req.method not in ("GET", "HEAD"):
            raise HttpError(405, "Method not allowed")
        cas.check_signed(req)
        xorb = segs[2]
        if not _HASH_RE.match(xorb) or not cas.has_xorb(xorb):
            raise not_found("EntryNotFound", "NoSuchKey")
        ctx.stats.incr("xet_xorb_gets")
        path = cas.xorb_path(xorb)
        return file_response(path, path.stat().st_size, req.headers.get("Range"), {"ETag": f'"{xorb}"'})
    if segs[:1] == ["xorb-uploads"] and len(segs) == 2:
        if req.method != "PUT":
            raise HttpError(405, "Method not allowed")
        cas.check_signed(req)
        ctx.stats.incr("xet_grant_puts")
        return cas.upload_to_grant(segs[1], req)
    if segs[:1] == ["xet-bridge"] and len(segs) == 2:
        if req.method not in ("GET", "HEAD"):
            raise HttpError(405, "Method not allowed")
        cas.check_signed(req)
        size, _ = cas.terms(segs[1])
        if req.method == "GET":
            ctx.stats.incr("storage_gets")
        return file_bytes_response(ctx, segs[1], size, req.headers.get("Range"), {"ETag": f'"{segs[1]}"'})
    if not segs or segs[0] not in ("v1", "v2"):
        return None
    version = int(segs[0][1])
    route = segs[1] if len(segs) > 1 else ""
    method = req.method
    if route == "telemetry":
        ctx.stats.incr("xet_telemetry")
        return json_response({})
    if route == "chunks" and method == "GET" and len(segs) == 4:
        cas.check_token(req, "read")
        ctx.stats.incr("xet_dedup_queries")
        raise not_found("EntryNotFound", "Chunk not tracked by global deduplication")
    if route == "xorb-grants" and method == "POST" and len(segs) == 4:
        cas.check_token(req, "write")
        ctx.stats.incr("xet_grant_requests")
        if not ctx.config.xet_upload_grants:
            raise not_found("EntryNotFound", "Upload grants are not available on this CAS")
        xorb = segs[3]
        body = req.json()
        length = body.get("length") if isinstance(body, dict) else None
        if not _HASH_RE.match(xorb) or not isinstance(length, int) or length <= 0:
            raise HttpError(400, "Expected a xorb hash and {'length', 'checksum'}")
        if cas.has_xorb(xorb):
            return json_response({})
        grant_id = cas.grant(xorb, length, ctx.config.xet_url_ttl)
        url = ctx.storage_url + cas.signed_path(f"/xorb-uploads/{grant_id}", ctx.config.xet_url_ttl)
        return json_response({"id": grant_id, "method": "PUT", "url": url, "headers": {}}, 201)
    if route == "xorb-commits" and method == "POST" and len(segs) == 6 and segs[4] == "grant":
        cas.check_token(req, "write")
        inserted = cas.commit_grant(segs[3], segs[5])
        ctx.stats.incr("xet_xorbs")
        return json_response({"was_inserted": inserted})
    if route == "xorbs" and method == "POST" and len(segs) == 4 and version == 1:
        cas.check_token(req, "write")
        if not _HASH_RE.match(segs[3]):
            raise HttpError(400, "Malformed xorb hash")
        inserted = cas.put_xorb(segs[3], req)
        ctx.stats.incr("xet_xorbs")
        return json_response({"was_inserted": inserted})
    if route == "shards" and method == "POST" and len(segs) == 2:
        claims = cas.check_token(req, "write")
        repo = ctx.store.get(claims["t"], claims["r"])
        data = req.read_body(MAX_SHARD)
        files = cas.put_shard(data, repo, ctx.config.xet_verify_files)
        ctx.stats.incr("xet_shards")
        ctx.stats.incr("xet_files", len(files))
        if version == 1:
            return json_response({"result": 1})
        frames = [{"type": "validating", "verified": len(files), "total": len(files)}, {"type": "result"}]
        body = "".join(json.dumps(frame) + "\n" for frame in frames).encode()
        return Response(200, {"Content-Type": "application/x-ndjson"}, body)
    if route == "reconstructions" and method == "GET" and len(segs) == 3:
        cas.check_token(req, "read")
        ctx.stats.incr("xet_reconstructions")
        ttl = ctx.config.xet_url_ttl
        answer = cas.reconstruction(
            segs[2],
            req.headers.get("Range"),
            version,
            lambda xorb: ctx.storage_url + cas.signed_path(f"/xorbs/default/{xorb}", ttl),
        )
        return json_response(answer)
    raise HttpError(501, f"Not implemented by this CAS: {method} {req.raw_path}")
