"""The S3-compatible API: a WSGI application over the file service, path-style
(``<prefix>/<bucket>/<key>``).

Buckets are the top-level folders of the drive; an object's key is its path below the bucket,
``/`` separating folders. An S3 client and a WebDAV client see the same files: what one writes the
other reads, with the same rights, quota, trash and encryption (everything goes through
:class:`gateway.files.FileService`). Keys map onto the tree as a file system does: writing
``a/b/c`` creates the folders ``a`` and ``a/b``; a key ending in ``/`` with an empty body is a
folder (how S3 tools make empty folders); an empty folder is listed as such a key without a
delimiter, and as a common prefix of its parent's listing with one.

Credentials: the access key id is a user's name and the secret key that user's password (users
with a bcrypt hash only, from ``HFDAV_USERS_FILE``, cannot sign with it: SigV4 needs the secret
itself), or a key of ``HFDAV_S3_KEYS`` (``key-id:secret:user``), which acts as its user.
Read-only users may read; any write is AccessDenied. Failed signatures count as failed logins
(the same per-client and per-user throttle as WebDAV).

ETags: the MD5 of the content for an object written in one piece (computed while the body streams,
kept with the version), ``<md5 of the parts' md5s>-<parts>`` for one completed from parts (kept in
a dead property tied to the version, so a later overwrite over WebDAV never shows a stale one).

Metadata: ``x-amz-meta-*`` headers are kept in a dead property tied to the version;
``x-amz-meta-mtime`` (rclone's) sets the file's modification time, and every object reports its
modification time back in it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fnmatch
import hashlib
import logging
import mimetypes
import re
import secrets
from collections.abc import Iterable
from dataclasses import replace
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qs, quote, unquote

from gateway.dav.auth import Authenticator, accounts
from gateway.errors import (
    AlreadyExists,
    ChecksumMismatch,
    Conflict,
    HfdavError,
    IncompleteUpload,
    InsufficientStorage,
    InvalidPath,
    NotFound,
    QuotaExceeded,
    ReadOnly,
    Reserved,
    StoreError,
)
from gateway.files import FileService
from gateway.meta.records import Checksums, Node
from gateway.paths import HIDDEN_ROOT_NAMES, normalize
from gateway.s3 import sigv4
from gateway.s3.checksums import BodyChecksum
from gateway.s3.multipart import Uploads, prop_data, prop_value
from gateway.s3.xml import (
    S3Error,
    cors_document,
    document,
    element,
    http_time,
    iso_time,
    parse_complete,
    parse_cors,
    parse_delete,
    status_line,
)

log = logging.getLogger(__name__)
auth_log = logging.getLogger("hfdav.auth")

#: Bytes read from the request body (and sent of a response body) at a time.
BLOCK = 1 << 20
#: Largest XML request body (CompleteMultipartUpload of 10000 parts is about 1 MiB).
MAX_XML_BODY = 2 << 20
#: Largest object of a single PUT (S3's own limit).
MAX_PUT = 5 << 40
EMPTY_MD5 = hashlib.md5(b"", usedforsecurity=False).hexdigest()
ETAG_PROP = "{urn:hfdav:s3}etag"
META_PROP = "{urn:hfdav:s3}meta"
CORS_PROP = "{urn:hfdav:s3}cors"
#: Top-level folders that are no buckets.
HIDDEN = HIDDEN_ROOT_NAMES
_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
#: Response headers a GET may override with ``response-…`` query parameters.
_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}
#: Headers every CORS answer exposes besides the rule's (a browser uploading parts reads ETag).
_EXPOSE = ("ETag", "x-amz-request-id", "x-amz-version-id")


class _Request:
    """One request: its parts as the handlers need them."""

    def __init__(self, environ, prefix: str):
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO") or "/"
        try:
            path = path.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            raise S3Error("InvalidURI", "the path is not UTF-8") from None
        rest = path[len(prefix) :].lstrip("/")
        bucket, _, key = rest.partition("/")
        self.bucket = bucket
        self.key = key
        self.query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING") or "", keep_blank_values=True).items()}
        self.id = secrets.token_hex(8).upper()
        self.user: str | None = None
        self.can_write = False
        self.signed: sigv4.Signed | None = None
        self.resource = "/" + rest

    def header(self, name: str) -> str | None:
        return sigv4._header(self.environ, name)


class S3App:
    """See the module docstring. ``share_prefix``: the WebDAV share's prefix; when the share is
    at ``/`` the S3 prefix is also a WebDAV path, and only requests that look like S3 (signed,
    presigned or a CORS preflight) are claimed by S3 (:meth:`claims`)."""

    def __init__(self, files: FileService, *, prefix: str, auth: Authenticator, table=None,
                 region: str = "us-east-1", share_prefix: str = "/", anonymous: str = "none"):  # fmt: skip
        self.files = files
        self.repo = files.repo
        self.prefix = prefix.rstrip("/")
        self.auth = auth
        self.accounts = dict(table or {})
        self.region = region
        self.share_prefix = share_prefix
        self.anonymous = anonymous
        self.uploads = Uploads(files)

    @classmethod
    def from_settings(cls, settings, files: FileService, auth: Authenticator) -> S3App:
        table = accounts(settings)
        for key_id, secret, user in settings.s3_keys:  # a key acts as its user, with its rights
            table[key_id] = replace(table[user], password=secret, password_hash=None)
        return cls(files, prefix=settings.s3_prefix, auth=auth, table=table, region=settings.s3_region,
                   share_prefix=settings.prefix, anonymous=settings.anonymous)  # fmt: skip

    # -- dispatch ---------------------------------------------------------------------------
    def claims(self, environ) -> bool:
        path = environ.get("PATH_INFO") or "/"
        if path != self.prefix and not path.startswith(self.prefix + "/"):
            return False
        if self.share_prefix != "/":
            return True
        return sigv4.is_signed(environ) or _is_preflight(environ)

    def __call__(self, environ, start_response):
        try:
            req = _Request(environ, self.prefix)
        except S3Error as exc:
            return self._error(environ, start_response, exc, secrets.token_hex(8), [])
        cors: list[tuple[str, str]] = []
        try:
            if req.method == "OPTIONS":
                return self._preflight(req, start_response)
            cors = self._cors_headers(req)
            self._authenticate(req)
            status, headers, body = self._route(req)
        except S3Error as exc:
            if not exc.resource:
                exc.resource = req.resource
            return self._error(environ, start_response, exc, req.id, cors)
        except HfdavError as exc:
            return self._error(environ, start_response, _translate(exc, req.resource), req.id, cors)
        headers = [*headers, ("x-amz-request-id", req.id), *cors]
        if isinstance(body, bytes):
            if not any(h[0].lower() == "content-length" for h in headers):
                headers.append(("Content-Length", str(len(body))))
            start_response(status_line(status), headers)
            return [] if req.method == "HEAD" else [body]
        start_response(status_line(status), headers)
        return body

    def _error(self, environ, start_response, exc: S3Error, request_id: str, cors) -> list[bytes]:
        if exc.status >= 500:
            log.warning("S3 %s %s: %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), exc)
        body = exc.body(request_id)
        headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(body))),
                   ("x-amz-request-id", request_id), *exc.headers, *cors]  # fmt: skip
        start_response(status_line(exc.status), headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    def _route(self, req: _Request):
        m, q = req.method, req.query
        if not req.bucket:
            if m in ("GET", "HEAD"):
                return self.list_buckets(req)
            raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.")
        if not req.key:
            if m == "GET":
                for sub, handler in (("location", self.bucket_location), ("cors", self.get_cors),
                                     ("uploads", self.list_uploads), ("versioning", self.bucket_versioning),
                                     ("acl", self.bucket_acl)):  # fmt: skip
                    if sub in q:
                        return handler(req)
                for sub, code in (("policy", "NoSuchBucketPolicy"), ("lifecycle", "NoSuchLifecycleConfiguration"),
                                  ("tagging", "NoSuchTagSet")):  # fmt: skip
                    if sub in q:
                        self._bucket(req)
                        raise S3Error(code, f"The bucket has no {sub} configuration")
                if set(q) & {"website", "replication", "encryption", "object-lock", "logging", "notification",
                             "requestPayment", "accelerate", "inventory", "metrics", "analytics", "ownershipControls",
                             "intelligent-tiering", "publicAccessBlock"}:  # fmt: skip
                    raise S3Error("NotImplemented", "A header or query you provided implies functionality that is "
                                  "not implemented.")  # fmt: skip
                return self.list_objects(req)
            if m == "HEAD":
                self._bucket(req)
                return 200, [], b""
            if m == "PUT":
                if "cors" in q:
                    return self.put_cors(req)
                if q:
                    raise S3Error("NotImplemented", f"bucket configuration {', '.join(q)} is not supported")
                return self.create_bucket(req)
            if m == "DELETE":
                if "cors" in q:
                    return self.delete_cors(req)
                if q:
                    raise S3Error("NotImplemented", f"bucket configuration {', '.join(q)} is not supported")
                return self.delete_bucket(req)
            if m == "POST" and "delete" in q:
                return self.delete_objects(req)
            raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.")
        if m in ("GET", "HEAD"):
            if "uploadId" in q and m == "GET":
                return self.list_parts(req)
            if set(q) & {"acl", "tagging", "retention", "legal-hold", "attributes", "torrent"}:
                raise S3Error("NotImplemented", "object sub-resources are not supported")
            return self.get_object(req)
        if m == "PUT":
            if "uploadId" in q or "partNumber" in q:
                if req.header("x-amz-copy-source"):
                    return self.upload_part_copy(req)
                return self.upload_part(req)
            if set(q) & {"acl", "tagging", "retention", "legal-hold"}:
                raise S3Error("NotImplemented", "object sub-resources are not supported")
            if req.header("x-amz-copy-source"):
                return self.copy_object(req)
            return self.put_object(req)
        if m == "POST":
            if "uploads" in q:
                return self.create_upload(req)
            if "uploadId" in q:
                return self.complete_upload(req)
            raise S3Error("MethodNotAllowed", "POST is not supported on objects (browser form uploads are not)")
        if m == "DELETE":
            if "uploadId" in q:
                return self.abort_upload(req)
            return self.delete_object(req)
        raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.")

    # -- authentication ---------------------------------------------------------------------
    def _secret(self, access_key: str) -> str | None:
        account = self.accounts.get(access_key)
        return account.password if account is not None else None

    def _authenticate(self, req: _Request) -> None:
        environ = req.environ
        client = environ.get("hfdav.client") or environ.get("REMOTE_ADDR") or "-"
        if not sigv4.is_signed(environ):
            if self.anonymous == "rw" or (self.anonymous == "ro" and req.method in ("GET", "HEAD")):
                req.can_write = self.anonymous == "rw"
                return
            raise S3Error("AccessDenied", "Access Denied")
        wait = self.auth.throttle.retry_after(client, None)
        if wait > 0:
            raise S3Error("SlowDown", "too many failed logins; try again later",
                          headers=[("Retry-After", str(max(1, int(wait))))])  # fmt: skip
        try:
            signed = sigv4.verify(environ, self._secret)
        except S3Error as exc:
            if exc.code in ("SignatureDoesNotMatch", "InvalidAccessKeyId"):
                name = exc.extra.pop("access_key", None)
                known = name if name in self.accounts else None
                auth_log.warning("login failed: client=%s user=%s scheme=s3v4 reason=%s", client,
                                 known or "(unknown)", "wrong-password" if known else "unknown-user")  # fmt: skip
                self.auth.throttle.failed(client, known)
            raise
        account = self.accounts[signed.access_key]
        self.auth.throttle.succeeded(client, account.name)
        req.user, req.can_write, req.signed = account.name, account.can_write, signed
        environ["wsgidav.auth.user_name"] = account.name  # named in the access log

    def _need_write(self, req: _Request) -> None:
        if not req.can_write:
            raise S3Error("AccessDenied", "Access Denied: this user may only read")

    # -- paths --------------------------------------------------------------------------------
    def _bucket(self, req: _Request) -> Node:
        if req.bucket in HIDDEN or not req.bucket or "/" in req.bucket:
            raise S3Error("NoSuchBucket", "The specified bucket does not exist", bucket_name=req.bucket)
        node = self.repo.get(_path(req.bucket))
        if node is None or not node.is_dir:
            raise S3Error("NoSuchBucket", "The specified bucket does not exist", bucket_name=req.bucket)
        return node

    def _object_path(self, bucket: str, key: str) -> str:
        if len(key.encode("utf-8")) > 1024:
            raise S3Error("KeyTooLongError", "Your key is too long")
        try:
            return normalize(f"/{bucket}/{key}")
        except InvalidPath as exc:
            raise S3Error("InvalidObjectName", f"the key cannot be stored: {exc}") from None

    def _ensure_folders(self, path: str) -> None:
        """The folders above ``path`` (below its bucket), created where missing."""
        parts = path.strip("/").split("/")[:-1]
        current = ""
        for i, name in enumerate(parts):
            current += "/" + name
            if i == 0:
                continue  # the bucket: checked by the caller
            node = self.repo.get(current)
            if node is None:
                with contextlib.suppress(AlreadyExists):
                    self.files.mkdir(current)
            elif not node.is_dir:
                raise S3Error("InvalidRequest", f"{'/'.join(parts[1 : i + 1])} is an object, not a folder")

    # -- ETag and metadata ----------------------------------------------------------------------
    def etag_of(self, node: Node, props: dict[str, str] | None = None) -> str:
        if node.is_dir:
            return EMPTY_MD5
        if node.checksums.md5 and props is None:
            return node.checksums.md5
        props = self.repo.get_properties(node.id) if props is None else props
        stored = prop_data(props.get(ETAG_PROP))
        if stored and stored.get("v") == node.etag:
            return stored["etag"]
        if node.checksums.md5:
            return node.checksums.md5
        return f"{node.etag}-1"  # no MD5 kept (HFDAV_CHECKSUMS=off): not mistaken for one

    def _meta(self, node: Node, props: dict[str, str]) -> dict[str, str]:
        stored = prop_data(props.get(META_PROP))
        meta = dict(stored.get("meta") or {}) if stored and stored.get("v") == node.etag else {}
        mtime = meta.get("mtime")
        try:
            exact = mtime is not None and abs(float(mtime) - node.modified_at) < 1e-3
        except ValueError:
            exact = False
        if not exact:
            meta["mtime"] = f"{node.modified_at:.6f}".rstrip("0").rstrip(".")
        return meta

    def _store_props(self, node: Node, *, etag: str | None = None, meta: dict | None = None) -> None:
        if etag is not None and etag != node.checksums.md5:
            self.repo.set_property(node.id, ETAG_PROP, prop_value("etag", {"v": node.etag, "etag": etag}))
        if meta:
            self.repo.set_property(node.id, META_PROP, prop_value("meta", {"v": node.etag, "meta": meta}))
        elif meta is not None:
            self.repo.remove_property(node.id, META_PROP)

    # -- service ------------------------------------------------------------------------------
    def list_buckets(self, req: _Request):
        root = self.repo.get("")
        assert root is not None  # the root folder always exists
        buckets = [n for n in self.repo.children(root.id) if n.is_dir and n.name not in HIDDEN]
        who = req.user or "anonymous"
        owner = f"<Owner>{element('ID', who)}{element('DisplayName', who)}</Owner>"
        inner = "".join(
            f"<Bucket>{element('Name', b.name)}{element('CreationDate', iso_time(b.created_at))}</Bucket>"
            for b in sorted(buckets, key=lambda n: n.name.encode())
        )
        return (
            200,
            [("Content-Type", "application/xml")],
            document("ListAllMyBucketsResult", f"{owner}<Buckets>{inner}</Buckets>"),
        )

    # -- buckets ------------------------------------------------------------------------------
    def create_bucket(self, req: _Request):
        self._need_write(req)
        self._read_small_body(req)  # CreateBucketConfiguration: the region is ours anyway
        if not _BUCKET_RE.match(req.bucket) or req.bucket in HIDDEN or req.bucket.startswith(".hfdav"):
            raise S3Error("InvalidBucketName", "The specified bucket is not valid.", bucket_name=req.bucket)
        node = self.repo.get(_path(req.bucket))
        if node is not None:
            if node.is_dir:
                raise S3Error("BucketAlreadyOwnedByYou", "Your previous request to create the named bucket "
                              "succeeded and you already own it.", bucket_name=req.bucket)  # fmt: skip
            raise S3Error("BucketAlreadyExists", "a file of that name is at the top of the drive")
        try:
            self.files.mkdir(_path(req.bucket))
        except AlreadyExists:
            raise S3Error("BucketAlreadyOwnedByYou", "the bucket exists", bucket_name=req.bucket) from None
        return 200, [("Location", f"/{req.bucket}")], b""

    def delete_bucket(self, req: _Request):
        self._need_write(req)
        node = self._bucket(req)
        if self.repo.children(node.id):
            raise S3Error("BucketNotEmpty", "The bucket you tried to delete is not empty", bucket_name=req.bucket)
        self.files.delete(node.path)
        return 204, [], b""

    def bucket_location(self, req: _Request):
        self._bucket(req)
        region = "" if self.region == "us-east-1" else self.region
        return (
            200,
            [("Content-Type", "application/xml")],
            document("LocationConstraint", "").replace(
                b"></LocationConstraint>", f">{region}</LocationConstraint>".encode()
            ),
        )

    def bucket_versioning(self, req: _Request):
        self._bucket(req)
        return 200, [("Content-Type", "application/xml")], document("VersioningConfiguration", "")

    def bucket_acl(self, req: _Request):
        self._bucket(req)
        who = element("ID", req.user or "anonymous") + element("DisplayName", req.user or "anonymous")
        grant = ('<Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser">'
                 f"{who}</Grantee><Permission>FULL_CONTROL</Permission></Grant>")  # fmt: skip
        return (
            200,
            [("Content-Type", "application/xml")],
            document("AccessControlPolicy", f"<Owner>{who}</Owner><AccessControlList>{grant}</AccessControlList>"),
        )

    # -- listing --------------------------------------------------------------------------------
    def _entries(self, bucket: Node, prefix: str, delimiter: str) -> list[tuple[str, Node | None]]:
        """Every key below ``prefix`` in key order, grouped by ``delimiter``: (key, node) for an
        object, (common prefix, None) for a group."""
        base_key = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
        try:
            base_path = normalize(f"{bucket.path}/{base_key}")
        except InvalidPath:
            return []
        folder = self.repo.get(base_path) if base_key else bucket
        if folder is None or not folder.is_dir:
            return []
        raw: list[tuple[str, Node]] = []
        if delimiter == "/":
            # an empty folder is a common prefix of its parent's listing; a listing of its own
            # prefix is empty (tools that list a folder with a delimiter take a key equal to the
            # prefix for a member)
            for n in self.repo.children(folder.id):
                raw.append((base_key + n.name + ("/" if n.is_dir else ""), n))
        else:
            nodes = self.repo.walk(folder.path)
            parents = {n.parent_id for n in nodes}
            start = len(bucket.path) + 1
            for n in nodes:
                if n.is_dir and (n.id in parents or n.id == bucket.id):
                    continue  # a folder with members is no key of its own
                raw.append((n.path[start:] + ("/" if n.is_dir else ""), n))
        out: dict[str, Node | None] = {}
        for key, node in raw:
            if not key.startswith(prefix):
                continue
            if delimiter:
                at = key.find(delimiter, len(prefix))
                if at >= 0:
                    out.setdefault(key[: at + len(delimiter)], None)
                    continue
            out[key] = node
        return sorted(out.items(), key=lambda kv: kv[0].encode("utf-8"))

    def list_objects(self, req: _Request):
        bucket = self._bucket(req)
        q = req.query
        v2 = q.get("list-type") == "2"
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        if q.get("encoding-type", "url") != "url":
            raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request")
        encode = "encoding-type" in q
        try:
            max_keys = int(q.get("max-keys", "1000"))
        except ValueError:
            raise S3Error("InvalidArgument", "max-keys must be an integer") from None
        if max_keys < 0:
            raise S3Error("InvalidArgument", "max-keys must not be negative")
        max_keys = min(max_keys, 1000)
        if v2:
            token = q.get("continuation-token")
            if token is not None:
                try:
                    after = base64.urlsafe_b64decode(token.encode() + b"==").decode("utf-8")
                except (binascii.Error, UnicodeDecodeError, ValueError):
                    raise S3Error("InvalidArgument", "The continuation token provided is incorrect") from None
            else:
                after = q.get("start-after", "")
        else:
            after = q.get("marker", "")
        entries = self._entries(bucket, prefix, delimiter)
        if after:
            after_b = after.encode("utf-8")
            entries = [e for e in entries if e[0].encode("utf-8") > after_b]
        page, truncated = entries[:max_keys], len(entries) > max_keys

        def enc(text: str) -> str:
            return quote(text, safe="/") if encode else text

        props_by_parent: dict[int, dict[int, dict[str, str]]] = {}
        parts = [element("Name", bucket.name), element("Prefix", enc(prefix))]
        if delimiter:
            parts.append(element("Delimiter", enc(delimiter)))
        parts.append(element("MaxKeys", max_keys))
        if encode:
            parts.append(element("EncodingType", "url"))
        parts.append(element("IsTruncated", "true" if truncated else "false"))
        if v2:
            parts.append(element("KeyCount", len(page)))
            if "continuation-token" in q:
                parts.append(element("ContinuationToken", q["continuation-token"]))
            if "start-after" in q:
                parts.append(element("StartAfter", enc(q["start-after"])))
            if truncated:
                token = base64.urlsafe_b64encode(page[-1][0].encode()).decode().rstrip("=")
                parts.append(element("NextContinuationToken", token))
        else:
            parts.append(element("Marker", enc(after)))
            if truncated:
                parts.append(element("NextMarker", enc(page[-1][0])))
        owner = f"<Owner>{element('ID', 'hfdav')}{element('DisplayName', 'hfdav')}</Owner>"
        with_owner = not v2 or q.get("fetch-owner") == "true"
        for key, node in page:
            if node is None:
                parts.append(f"<CommonPrefixes>{element('Prefix', enc(key))}</CommonPrefixes>")
                continue
            etag = self._listed_etag(node, props_by_parent)
            parts.append(
                "<Contents>"
                + element("Key", enc(key))
                + element("LastModified", iso_time(node.modified_at))
                + element("ETag", f'"{etag}"')
                + element("Size", 0 if node.is_dir else node.size)
                + (owner if with_owner else "")
                + element("StorageClass", "STANDARD")
                + "</Contents>"
            )
        root = "ListBucketResult"
        return 200, [("Content-Type", "application/xml")], document(root, "".join(parts))

    def _listed_etag(self, node: Node, cache: dict[int, dict[int, dict[str, str]]]) -> str:
        """The ETag of a listed node; the dead properties of its folder are read (once per
        folder) only for nodes that may have a multipart ETag (no MD5 kept with the version)."""
        if node.is_dir:
            return EMPTY_MD5
        if node.checksums.md5:
            return node.checksums.md5
        folder = node.parent_id
        assert folder is not None  # a listed node is never the root
        if folder not in cache:
            cache[folder] = self.repo.get_properties_of_children(folder)
        return self.etag_of(node, cache[folder].get(node.id, {}))

    # -- objects: reading -----------------------------------------------------------------------
    def _stat_object(self, req: _Request) -> tuple[Node, list, str]:
        self._bucket(req)
        path = self._object_path(req.bucket, req.key)
        found = self.files.stat_for_read(path)
        if found is None:
            raise S3Error("NoSuchKey", "The specified key does not exist.", key=req.key)
        node, extents = found
        if node.is_dir != req.key.endswith("/"):
            raise S3Error("NoSuchKey", "The specified key does not exist.", key=req.key)
        return node, extents, path

    def get_object(self, req: _Request):
        node, extents, _ = self._stat_object(req)
        props = self.repo.get_properties(node.id) if not node.is_dir else {}
        etag = self.etag_of(node, props) if not node.is_dir else EMPTY_MD5
        size = 0 if node.is_dir else node.size
        headers = [
            ("ETag", f'"{etag}"'),
            ("Last-Modified", http_time(node.modified_at)),
            ("Accept-Ranges", "bytes"),
            ("Content-Type", node.content_type or mimetypes.guess_type(node.name)[0] or "binary/octet-stream"),
        ]
        if not node.is_dir:
            headers += [(f"x-amz-meta-{k}", v) for k, v in self._meta(node, props).items()]
        not_modified = self._conditions(req, etag, node.modified_at)
        if not_modified:
            return 304, [h for h in headers if h[0] in ("ETag", "Last-Modified")], b""
        start, end = 0, size - 1
        status = 200
        rng = req.header("range")
        if rng and "partNumber" not in req.query:
            parsed = _parse_range(rng, size)
            if parsed is not None:
                start, end = parsed
                status = 206
                headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        elif "partNumber" in req.query and req.query["partNumber"] != "1":
            raise S3Error("InvalidPart", "this object has one part")
        for name, header in _OVERRIDES.items():
            if name in req.query:
                if req.signed is None:
                    raise S3Error("InvalidRequest", "response-* overrides need a signed request")
                headers = [h for h in headers if h[0].lower() != header.lower()] + [(header, req.query[name])]
        length = max(0, end - start + 1)
        headers.append(("Content-Length", str(length)))
        if req.method == "HEAD" or length == 0:
            return status, headers, b""
        return status, headers, self._stream(node, extents, start, length)

    def _stream(self, node: Node, extents, start: int, length: int) -> Iterable[bytes]:
        reader = self.files.open_read(node, extents)
        reader.seek(start)
        left = length

        def body():
            nonlocal left
            try:
                while left > 0:
                    data = reader.read(min(BLOCK, left))
                    if not data:
                        raise StoreError("the stored content ended early")
                    left -= len(data)
                    yield data
            finally:
                reader.close()

        return body()

    def _conditions(self, req: _Request, etag: str, mtime: float) -> bool:
        """True: answer 304 Not Modified; raises 412 for a failed precondition."""
        match = req.header("if-match")
        if match is not None and not _etag_in(match, etag):
            raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold",
                          condition="If-Match")  # fmt: skip
        since = _http_date(req.header("if-unmodified-since"))
        if match is None and since is not None and int(mtime) > since:
            raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold",
                          condition="If-Unmodified-Since")  # fmt: skip
        none_match = req.header("if-none-match")
        if none_match is not None:
            return _etag_in(none_match, etag)
        modified = _http_date(req.header("if-modified-since"))
        return modified is not None and int(mtime) <= modified

    # -- objects: writing -------------------------------------------------------------------------
    def _body(self, req: _Request):
        """(reader, decoded length, check at the end) for the request body."""
        environ = req.environ
        signed = req.signed
        raw = environ["wsgi.input"]
        length_text = environ.get("CONTENT_LENGTH") or ""
        encoded = int(length_text) if length_text.isdigit() else None
        if signed is not None and signed.streaming:
            decoded = req.header("x-amz-decoded-content-length")
            if decoded is None or not decoded.isdigit():
                raise S3Error("MissingContentLength", "aws-chunked bodies need x-amz-decoded-content-length")
            reader = sigv4.AwsChunkedReader(_Bounded(raw, encoded), signed, block=BLOCK)
            return reader, int(decoded), None
        if encoded is None and "chunked" not in (environ.get("HTTP_TRANSFER_ENCODING") or "").lower():
            raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP header.")
        check = None
        if signed is not None and signed.payload not in (sigv4.UNSIGNED,):
            check = sigv4.PayloadHash(signed.payload, self.files.digest_pool)
        return _Bounded(raw, encoded), encoded, check

    def _read_small_body(self, req: _Request, limit: int = MAX_XML_BODY) -> bytes:
        reader, length, check = self._body(req)
        if length is not None and length > limit:
            raise S3Error("EntityTooLarge", f"the request body may have at most {limit} bytes")
        chunks, got = [], 0
        while True:
            data = reader.read(BLOCK)
            if not data:
                break
            got += len(data)
            if got > limit:
                raise S3Error("EntityTooLarge", f"the request body may have at most {limit} bytes")
            chunks.append(data)
        body = b"".join(chunks)
        if check is not None:
            check.update(body)
            check.check()
        if length is not None and got != length:
            raise S3Error("IncompleteBody", "You did not provide the number of bytes specified by the "
                          "Content-Length HTTP header")  # fmt: skip
        _check_content_md5(req, body)
        return body

    def _announced_md5(self, req: _Request) -> str | None:
        value = req.header("content-md5")
        if value is None:
            return None
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 16:
            raise S3Error("InvalidDigest", "The Content-MD5 you specified was invalid.")
        return raw.hex()

    def _write(self, req: _Request, path: str, *, content_type: str | None, mtime: float | None):
        """Stream the request body into a new version of ``path``; returns (node, MD5 hex)."""
        reader, length, check = self._body(req)
        if length is not None and length > MAX_PUT:
            raise S3Error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed object size.")
        if length is not None:
            self.files.check_space(length)
        announced = self._announced_md5(req)
        session = self.files.open_write(path, expected_length=length, content_type=content_type, mtime=mtime,
                                        announced=Checksums(md5=announced) if announced else None)  # fmt: skip
        own_md5 = None if self.files.checksums else hashlib.md5(usedforsecurity=False)
        extra = BodyChecksum(req.header)
        try:
            while True:
                data = reader.read(BLOCK)
                if not data:
                    break
                if check is not None:
                    check.update(data)
                if own_md5 is not None:
                    own_md5.update(data)
                extra.update(data)
                session.write(data)
            if check is not None:
                check.check()
            extra.check(getattr(reader, "trailers", None))
            if own_md5 is not None and announced and own_md5.hexdigest() != announced:
                raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.")
            if length is not None and session.written != length:
                raise S3Error("IncompleteBody", "You did not provide the number of bytes specified by the "
                              "Content-Length HTTP header")  # fmt: skip
        except BaseException:
            session.abort()
            raise
        node = session.commit()
        if session.checksums and session.checksums.md5:
            md5 = session.checksums.md5
        else:
            assert own_md5 is not None  # checksums are off: the MD5 was computed here
            md5 = own_md5.hexdigest()
        return node, md5

    def _request_meta(self, req: _Request) -> dict[str, str]:
        meta = {}
        for name, value in req.environ.items():
            if name.startswith("HTTP_X_AMZ_META_"):
                meta[name[len("HTTP_X_AMZ_META_") :].lower().replace("_", "-")] = value
        if sum(len(k) + len(v) for k, v in meta.items()) > 2048:
            raise S3Error("MetadataTooLarge", "Your metadata headers exceed the maximum allowed metadata size.")
        return meta

    def _content_type(self, req: _Request) -> str | None:
        ct = req.header("content-type")
        if ct in (None, "", "application/octet-stream", "binary/octet-stream", "application/x-www-form-urlencoded"):
            return None
        return ct

    def put_object(self, req: _Request):
        self._need_write(req)
        self._bucket(req)
        path = self._object_path(req.bucket, req.key)
        self.files.check_writable(path)
        meta = self._request_meta(req)
        if req.key.endswith("/"):
            self._read_small_body(req, limit=0)  # a folder has no content
            self._ensure_folders(path + "/x")
            node = self.repo.get(path)
            if node is None:
                with contextlib.suppress(AlreadyExists):
                    self.files.mkdir(path)
            elif not node.is_dir:
                raise S3Error("InvalidRequest", "an object of that name (without the /) exists")
            return 200, [("ETag", f'"{EMPTY_MD5}"')], b""
        existing = self.repo.get(path)
        if existing is not None and existing.is_dir:
            raise S3Error("InvalidRequest", "a folder of that name exists (its key ends in /)")
        self._ensure_folders(path)
        node, md5 = self._write(req, path, content_type=self._content_type(req), mtime=_mtime(meta))
        self._store_props(node, etag=md5, meta=_stored_meta(meta))
        return 200, [("ETag", f'"{md5}"')], b""

    def delete_object(self, req: _Request):
        self._need_write(req)
        self._bucket(req)
        path = self._object_path(req.bucket, req.key)
        self._delete_key(path, req.key)
        return 204, [], b""

    def _delete_key(self, path: str, key: str) -> None:
        """Delete the object at ``path``, then the folders above it that it leaves empty (a
        prefix ends with its last key in S3; the bucket stays)."""
        node = self.repo.get(path)
        if node is None or path.count("/") < 2:
            return  # S3: deleting a missing key succeeds
        if node.is_dir != key.endswith("/"):
            return  # no such object: the key names a folder without its / (or the reverse)
        try:
            if node.is_dir:
                self.repo.delete(path, empty_only=True)  # nothing in it to keep in the trash
            else:
                self.files.delete(path)
        except (NotFound, Conflict):
            return
        parent = path.rpartition("/")[0]
        while parent.count("/") >= 2:
            try:
                self.repo.delete(parent, empty_only=True)
            except (NotFound, Conflict):
                return
            parent = parent.rpartition("/")[0]

    def delete_objects(self, req: _Request):
        self._need_write(req)
        self._bucket(req)
        body = self._read_small_body(req)
        keys, quiet = parse_delete(body)
        out = []
        for key in keys:
            try:
                self._delete_key(self._object_path(req.bucket, key), key)
            except (S3Error, HfdavError) as exc:
                err = exc if isinstance(exc, S3Error) else _translate(exc, key)
                out.append(f"<Error>{element('Key', key)}{element('Code', err.code)}"
                           f"{element('Message', err.message)}</Error>")  # fmt: skip
                continue
            if not quiet:
                out.append(f"<Deleted>{element('Key', key)}</Deleted>")
        return 200, [("Content-Type", "application/xml")], document("DeleteResult", "".join(out))

    def _copy_source(self, req: _Request) -> tuple[str, str]:
        source = unquote(req.header("x-amz-copy-source") or "")
        source = source.split("?versionId=", 1)[0].lstrip("/")
        bucket, _, key = source.partition("/")
        if not bucket or not key:
            raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and key: bucket/key")
        if bucket in HIDDEN or self.repo.get(_path(bucket)) is None:
            raise S3Error("NoSuchBucket", "The specified bucket does not exist", bucket_name=bucket)
        return bucket, key

    def copy_object(self, req: _Request):
        self._need_write(req)
        self._bucket(req)
        src_bucket, src_key = self._copy_source(req)
        src = self._object_path(src_bucket, src_key)
        dst = self._object_path(req.bucket, req.key)
        node = self.repo.get(src)
        if node is None or node.is_dir:
            raise S3Error("NoSuchKey", "The specified key does not exist.", key=src_key)
        props = self.repo.get_properties(node.id)
        etag = self.etag_of(node, props)
        if self._conditions_copy(req, etag, node.modified_at):
            raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
        replace = (req.header("x-amz-metadata-directive") or "COPY").upper() == "REPLACE"
        if src == dst and not replace:
            raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an object to "
                          "itself without changing the object's metadata.")  # fmt: skip
        meta = self._request_meta(req) if replace else self._meta(node, props)
        if src != dst:
            self._ensure_folders(dst)
            self.files.check_writable(dst)
            existing = self.repo.get(dst)
            if existing is not None and existing.is_dir:
                raise S3Error("InvalidRequest", "a folder of that name exists")
            self.files.copy(src, dst, recursive=False, overwrite=True)
        new = self.repo.get(dst)
        if new is None:
            raise S3Error("NoSuchKey", "The specified key does not exist.")
        mtime = _mtime(meta)
        if mtime is not None and abs(mtime - new.modified_at) > 1e-6:
            self.files.set_mtime(dst, mtime)
        if replace and self._content_type(req):
            pass  # the content type is the file's; a replaced type is not kept separately
        new = self.repo.get(dst)
        if new is None:
            raise S3Error("NoSuchKey", "The specified key does not exist.")
        self._store_props(new, etag=etag, meta=_stored_meta(meta))
        inner = element("LastModified", iso_time(new.modified_at)) + element("ETag", f'"{etag}"')
        return 200, [("Content-Type", "application/xml")], document("CopyObjectResult", inner)

    def _conditions_copy(self, req: _Request, etag: str, mtime: float) -> bool:
        match = req.header("x-amz-copy-source-if-match")
        if match is not None and not _etag_in(match, etag):
            return True
        none_match = req.header("x-amz-copy-source-if-none-match")
        return none_match is not None and _etag_in(none_match, etag)

    # -- multipart --------------------------------------------------------------------------------
    def create_upload(self, req: _Request):
        self._need_write(req)
        self._bucket(req)
        path = self._object_path(req.bucket, req.key)
        self.files.check_writable(path)
        if req.key.endswith("/"):
            raise S3Error("InvalidObjectName", "a key ending in / is a folder")
        meta = self._request_meta(req)
        upload_id = self.uploads.create(req.bucket, req.key, req.user or "", self._content_type(req), meta)
        inner = element("Bucket", req.bucket) + element("Key", req.key) + element("UploadId", upload_id)
        return 200, [("Content-Type", "application/xml")], document("InitiateMultipartUploadResult", inner)

    def _part_number(self, req: _Request) -> int:
        try:
            return int(req.query.get("partNumber", ""))
        except ValueError:
            raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000") from None

    def upload_part(self, req: _Request):
        self._need_write(req)
        self._bucket(req)
        upload = self.uploads.get(req.query.get("uploadId", ""), req.bucket, req.key)
        path = self.uploads.part_path(upload, self._part_number(req))
        try:
            node, md5 = self._write(req, path, content_type=None, mtime=None)
        except Conflict:
            self.uploads.get(upload.upload_id, req.bucket, req.key)  # NoSuchUpload: aborted meanwhile
            raise
        self._store_props(node, etag=md5)
        return 200, [("ETag", f'"{md5}"')], b""

    def upload_part_copy(self, req: _Request):
        self._need_write(req)
        self._bucket(req)
        upload = self.uploads.get(req.query.get("uploadId", ""), req.bucket, req.key)
        path = self.uploads.part_path(upload, self._part_number(req))
        src_bucket, src_key = self._copy_source(req)
        found = self.files.stat_for_read(self._object_path(src_bucket, src_key))
        if found is None or found[0].is_dir:
            raise S3Error("NoSuchKey", "The specified key does not exist.", key=src_key)
        node, _ = found
        start, end = 0, node.size - 1
        rng = req.header("x-amz-copy-source-range")
        if rng:
            m = _RANGE_RE.match(rng.strip())
            if not m or not m.group(1) or not m.group(2) or int(m.group(2)) >= node.size \
                    or int(m.group(1)) > int(m.group(2)):  # fmt: skip
                raise S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the form "
                              "bytes=first-last where first and last are the zero-based offsets of the first "
                              "and last bytes to copy")  # fmt: skip
            start, end = int(m.group(1)), int(m.group(2))
        part = self._copy_range(node, start, end - start + 1, path)
        md5 = self.etag_of(part)
        inner = element("LastModified", iso_time(part.modified_at)) + element("ETag", f'"{md5}"')
        return 200, [("Content-Type", "application/xml")], document("CopyPartResult", inner)

    def _copy_range(self, node: Node, start: int, length: int, path: str) -> Node:
        """A part made of ``length`` bytes of ``node`` from ``start``: the source's extents, cut
        to the range (no byte copied); its MD5 is computed by reading the range."""
        from gateway.meta.records import Extent

        self.files.check_quota(length)
        parts, offset = [], 0
        for e in self.repo.extents(node.version_id, physical=False) if node.version_id is not None else []:
            lo, hi = max(start, e.file_offset), min(start + length, e.file_offset + e.length)
            if lo >= hi:
                continue
            parts.append(Extent(offset, e.object_id, e.object_offset + lo - e.file_offset, hi - lo))
            offset += hi - lo
        md5 = hashlib.md5(usedforsecurity=False)
        sha1 = hashlib.sha1(usedforsecurity=False)
        with self.files.open_read(node) as reader:
            reader.seek(start)
            left = length
            while left > 0:
                data = reader.read(min(BLOCK, left))
                if not data:
                    raise StoreError("the source ended early")
                md5.update(data)
                sha1.update(data)
                left -= len(data)
        with self.files._gc_lock.reading():
            return self.repo.put_version(path, parts, checksums=Checksums(md5.hexdigest(), sha1.hexdigest()))

    def complete_upload(self, req: _Request):
        self._need_write(req)
        self._bucket(req)
        upload = self.uploads.get(req.query.get("uploadId", ""), req.bucket, req.key)
        wanted = parse_complete(self._read_small_body(req))
        path = self._object_path(req.bucket, req.key)
        self.files.check_writable(path)
        existing = self.repo.get(path)
        if existing is not None and existing.is_dir:
            raise S3Error("InvalidRequest", "a folder of that name exists (its key ends in /)")
        self._ensure_folders(path)
        node, etag = self.uploads.complete(upload, wanted, path, self.etag_of)
        self._store_props(node, etag=etag, meta=_stored_meta(upload.meta))
        location = f"{req.environ.get('wsgi.url_scheme', 'http')}://{req.header('host') or ''}{self.prefix}/" \
                   f"{quote(req.bucket)}/{quote(req.key)}"  # fmt: skip
        inner = (element("Location", location) + element("Bucket", req.bucket) + element("Key", req.key)
                 + element("ETag", f'"{etag}"'))  # fmt: skip
        return 200, [("Content-Type", "application/xml")], document("CompleteMultipartUploadResult", inner)

    def abort_upload(self, req: _Request):
        self._need_write(req)
        self._bucket(req)
        upload = self.uploads.get(req.query.get("uploadId", ""), req.bucket, req.key)
        self.uploads.abort(upload)
        return 204, [], b""

    def list_parts(self, req: _Request):
        self._bucket(req)
        upload = self.uploads.get(req.query.get("uploadId", ""), req.bucket, req.key)
        try:
            marker = int(req.query.get("part-number-marker") or 0)
            max_parts = min(1000, int(req.query.get("max-parts") or 1000))
        except ValueError:
            raise S3Error("InvalidArgument", "part-number-marker and max-parts must be integers") from None
        parts = [(n, node) for n, node in self.uploads.parts(upload) if n > marker]
        page, truncated = parts[:max_parts], len(parts) > max_parts
        inner = [element("Bucket", req.bucket), element("Key", req.key), element("UploadId", upload.upload_id),
                 element("PartNumberMarker", marker),
                 element("NextPartNumberMarker", page[-1][0] if page else marker),
                 element("MaxParts", max_parts), element("IsTruncated", "true" if truncated else "false"),
                 f"<Initiator>{element('ID', upload.owner)}</Initiator><Owner>{element('ID', upload.owner)}</Owner>",
                 element("StorageClass", "STANDARD")]  # fmt: skip
        for n, node in page:
            inner.append(f"<Part>{element('PartNumber', n)}{element('LastModified', iso_time(node.modified_at))}"
                         f"{element('ETag', chr(34) + self.etag_of(node) + chr(34))}"
                         f"{element('Size', node.size)}</Part>")  # fmt: skip
        return 200, [("Content-Type", "application/xml")], document("ListPartsResult", "".join(inner))

    def list_uploads(self, req: _Request):
        self._bucket(req)
        prefix = req.query.get("prefix", "")
        uploads = [u for u in self.uploads.list(req.bucket) if u.key.startswith(prefix)]
        key_marker = req.query.get("key-marker", "")
        if key_marker:
            uploads = [u for u in uploads if u.key > key_marker]
        page = uploads[:1000]
        inner = [element("Bucket", req.bucket), element("KeyMarker", key_marker), element("UploadIdMarker", ""),
                 element("Prefix", prefix), element("MaxUploads", 1000),
                 element("IsTruncated", "true" if len(uploads) > 1000 else "false")]  # fmt: skip
        for u in page:
            inner.append(f"<Upload>{element('Key', u.key)}{element('UploadId', u.upload_id)}"
                         f"<Initiator>{element('ID', u.owner)}</Initiator><Owner>{element('ID', u.owner)}</Owner>"
                         f"{element('StorageClass', 'STANDARD')}{element('Initiated', iso_time(u.initiated))}"
                         "</Upload>")  # fmt: skip
        return 200, [("Content-Type", "application/xml")], document("ListMultipartUploadsResult", "".join(inner))

    # -- CORS -------------------------------------------------------------------------------------
    def _cors_rules(self, bucket: str) -> list[dict] | None:
        if not bucket or bucket in HIDDEN or "/" in bucket:
            return None
        node = self.repo.get(_path(bucket))
        if node is None or not node.is_dir:
            return None
        data = prop_data(self.repo.get_properties(node.id).get(CORS_PROP))
        return data.get("rules") if data else None

    def get_cors(self, req: _Request):
        self._bucket(req)
        rules = self._cors_rules(req.bucket)
        if not rules:
            raise S3Error("NoSuchCORSConfiguration", "The CORS configuration does not exist", bucket_name=req.bucket)
        return 200, [("Content-Type", "application/xml")], cors_document(rules)

    def put_cors(self, req: _Request):
        self._need_write(req)
        node = self._bucket(req)
        rules = parse_cors(self._read_small_body(req, limit=64 << 10))
        self.repo.set_property(node.id, CORS_PROP, prop_value("cors", {"rules": rules}))
        return 200, [], b""

    def delete_cors(self, req: _Request):
        self._need_write(req)
        node = self._bucket(req)
        self.repo.remove_property(node.id, CORS_PROP)
        return 204, [], b""

    def _cors_headers(self, req: _Request) -> list[tuple[str, str]]:
        """The CORS headers of an actual (not preflight) request from a browser."""
        origin = req.header("origin")
        if not origin:
            return []
        rule = _match_rule(self._cors_rules(req.bucket) or [], origin, req.method, [])
        if rule is None:
            return []
        return _cors_answer(rule, origin, [])

    def _preflight(self, req: _Request, start_response):
        origin = req.header("origin")
        method = req.header("access-control-request-method")
        if not origin or not method:
            raise S3Error("InvalidRequest", "Insufficient information. Origin request header needed.")
        asked_text = req.header("access-control-request-headers") or ""
        asked = [h.strip().lower() for h in asked_text.split(",") if h.strip()]
        rule = _match_rule(self._cors_rules(req.bucket) or [], origin, method, asked)
        if rule is None:
            raise S3Error("AccessDenied", "CORSResponse: This CORS request is not allowed. This is usually because "
                          "the evalution of Origin, request method / Access-Control-Request-Method or "
                          "Access-Control-Request-Headers are not whitelisted by the resource's CORS "
                          "spec.")  # fmt: skip
        headers = _cors_answer(rule, origin, asked)
        headers += [("Content-Length", "0"), ("x-amz-request-id", req.id)]
        start_response("200 OK", headers)
        return []


# -- helpers ---------------------------------------------------------------------------------------


class _Bounded:
    """``read(n)`` of at most ``length`` bytes of ``raw`` (all of it when None: chunked framing)."""

    def __init__(self, raw, length: int | None):
        self._raw = raw
        self._left = length

    def read(self, n: int = -1) -> bytes:
        if self._left is not None and self._left <= 0:
            return b""
        if self._left is not None:
            n = self._left if n is None or n < 0 else min(n, self._left)
        try:
            data = self._raw.read(n)
        except (OSError, ValueError) as exc:  # the client went away, or broke the chunked framing
            raise S3Error("IncompleteBody", f"the request body could not be read to its end: {exc}") from exc
        if self._left is not None:
            self._left -= len(data)
        return data


def _path(bucket: str) -> str:
    return "/" + bucket


def _is_preflight(environ) -> bool:
    return (
        environ.get("REQUEST_METHOD") == "OPTIONS"
        and bool(environ.get("HTTP_ORIGIN"))
        and bool(environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD"))
    )


def _match_rule(rules: list[dict], origin: str, method: str, asked: list[str]) -> dict | None:
    for rule in rules:
        if method not in rule["methods"]:
            continue
        if not any(fnmatch.fnmatchcase(origin, o) for o in rule["origins"]):
            continue
        allowed = [h.lower() for h in rule["headers"]]
        if all(any(fnmatch.fnmatchcase(h, a) for a in allowed) for h in asked):
            return rule
    return None


def _cors_answer(rule: dict, origin: str, asked: list[str]) -> list[tuple[str, str]]:
    star = "*" in rule["origins"]
    headers = [
        ("Access-Control-Allow-Origin", "*" if star else origin),
        ("Access-Control-Allow-Methods", ", ".join(rule["methods"])),
        ("Vary", "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"),
    ]
    if not star:
        headers.append(("Access-Control-Allow-Credentials", "true"))
    if asked:
        headers.append(("Access-Control-Allow-Headers", ", ".join(asked)))
    expose = list(dict.fromkeys([*rule["expose"], *_EXPOSE]))
    headers.append(("Access-Control-Expose-Headers", ", ".join(expose)))
    if rule["max_age"] is not None:
        headers.append(("Access-Control-Max-Age", str(rule["max_age"])))
    return headers


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) of a ``bytes=`` range; None to send the whole object (a form S3 ignores);
    InvalidRange when it cannot be satisfied."""
    m = _RANGE_RE.match(header.strip())
    if not m:
        return None
    first, last = m.group(1), m.group(2)
    invalid = S3Error("InvalidRange", "The requested range is not satisfiable", range_requested=header,
                      actual_object_size=size, headers=[("Content-Range", f"bytes */{size}")])  # fmt: skip
    if first == "" and last == "":
        return None
    if first == "":
        n = int(last)
        if n == 0 or size == 0:
            raise invalid
        return max(0, size - n), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        raise invalid
    return start, end


def _etag_in(header: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/").strip('"') for t in header.split(",")]
    return "*" in tags or etag in tags


def _http_date(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError):
        return None


def _mtime(meta: dict) -> float | None:
    try:
        value = float(meta["mtime"]) if "mtime" in meta else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and 0 <= value < 1e11 else None


def _stored_meta(meta: dict) -> dict:
    return dict(meta)


def _check_content_md5(req: _Request, body: bytes) -> None:
    value = req.header("content-md5")
    if value is None:
        return
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise S3Error("InvalidDigest", "The Content-MD5 you specified was invalid.")
    if hashlib.md5(body, usedforsecurity=False).digest() != raw:
        raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.")


def _translate(exc: HfdavError, resource: str) -> S3Error:
    message = str(exc)
    if isinstance(exc, ChecksumMismatch):
        return S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.", resource=resource)
    if isinstance(exc, IncompleteUpload):
        return S3Error("IncompleteBody", message, resource=resource)
    if isinstance(exc, NotFound):
        return S3Error("NoSuchKey", "The specified key does not exist.", resource=resource)
    if isinstance(exc, (Reserved, ReadOnly)):
        return S3Error("AccessDenied", message, resource=resource)
    if isinstance(exc, QuotaExceeded):
        return S3Error("QuotaExceeded", message, resource=resource)
    if isinstance(exc, InsufficientStorage):
        return S3Error("XInsufficientStorage", message, resource=resource)
    if isinstance(exc, InvalidPath):
        return S3Error("InvalidObjectName", message, resource=resource)
    if isinstance(exc, (Conflict, AlreadyExists)):
        return S3Error("InvalidRequest", message or "the key conflicts with the folders of the drive",
                       resource=resource)  # fmt: skip
    if isinstance(exc, StoreError) and exc.transient:
        return S3Error("ServiceUnavailable", "the store is unavailable; retry", resource=resource)
    log.warning("S3 request failed: %s", exc, exc_info=exc)
    return S3Error("InternalError", "We encountered an internal error. Please try again.", resource=resource)
