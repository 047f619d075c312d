"""Multipart uploads: parts kept in a hidden staging folder until CompleteMultipartUpload.

Each upload is a folder ``/.hfdav-s3-uploads/<upload id>`` whose dead property
``{urn:hfdav:s3}upload`` records the bucket, key, owner, start time, content type and metadata;
each part is an ordinary file of the drive in it, named by its part number (``00001``) and
written through the file service like any PUT (quota, encryption, the Hub's write-back all
apply). WebDAV never lists the folder (it is hidden from the root listing, like the trash) and
S3 never shows it as a bucket.

CompleteMultipartUpload makes the parts' extents, in order, the extents of the target file in one
metadata transaction (:meth:`Uploads.complete`): no byte is copied and nothing is visible at the
key before that transaction. The staging folder is then deleted for good (not into the trash):
the target's extents hold the chunks. Uploads nobody completed or aborted expire after
:data:`EXPIRE_S`, and are purged by :meth:`Uploads.expire` (run at most hourly, when an upload is
created or listed).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import logging
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape

from gateway.errors import AlreadyExists, Conflict, NotFound
from gateway.files import FileService
from gateway.meta.records import NO_CHECKSUMS, Extent, Node
from gateway.paths import S3_STAGING_NAME
from gateway.s3.xml import S3Error

log = logging.getLogger(__name__)

STAGING_NAME = S3_STAGING_NAME
STAGING_PATH = "/" + STAGING_NAME
S3_NS = "urn:hfdav:s3"
UPLOAD_PROP = "{urn:hfdav:s3}upload"
#: Uploads older than this are purged (S3 leaves them until a lifecycle rule does: a week here).
EXPIRE_S = 7 * 24 * 3600
EXPIRE_EVERY_S = 3600
MAX_PART_NUMBER = 10_000
#: Every part but the last must be at least this big (S3's own rule).
MIN_PART_SIZE = 5 << 20


def prop_value(local: str, data: dict) -> str:
    """A dead property value (an XML element, as WebDAV stores them) holding ``data`` as JSON."""
    return f'<s3:{local} xmlns:s3="{S3_NS}">{escape(json.dumps(data, separators=(",", ":")))}</s3:{local}>'


def prop_data(value: str | None) -> dict | None:
    if not value:
        return None
    try:
        return json.loads(ET.fromstring(value).text or "null")
    except (ET.ParseError, ValueError):
        return None


def multipart_etag(md5s: list[str]) -> str:
    h = hashlib.md5(usedforsecurity=False)
    for m in md5s:
        h.update(bytes.fromhex(m))
    return f"{h.hexdigest()}-{len(md5s)}"


@dataclass(frozen=True)
class Upload:
    upload_id: str
    bucket: str
    key: str
    owner: str
    initiated: float
    content_type: str | None
    meta: dict
    node: Node


def part_name(number: int) -> str:
    return f"{number:05d}"


class Uploads:
    def __init__(self, files: FileService, *, clock=time.time, min_part_size: int = MIN_PART_SIZE):
        self.files = files
        self.repo = files.repo
        self._clock = clock
        self.min_part_size = min_part_size
        self._last_expiry = 0.0
        self._lock = threading.Lock()

    # -- the staging area -------------------------------------------------------------------
    def _staging(self) -> Node:
        node = self.repo.get(STAGING_PATH)
        if node is None:
            try:
                node = self.repo.mkdir(STAGING_PATH)
            except AlreadyExists:
                node = self.repo.get(STAGING_PATH)
        if node is None or not node.is_dir:
            raise S3Error("InternalError", f"{STAGING_PATH} is not a folder")
        return node

    def create(self, bucket: str, key: str, owner: str, content_type: str | None, meta: dict) -> str:
        self.expire_now_and_then()
        self._staging()
        upload_id = secrets.token_hex(16)
        node = self.repo.mkdir(f"{STAGING_PATH}/{upload_id}")
        info = {"bucket": bucket, "key": key, "owner": owner, "initiated": self._clock(),
                "content_type": content_type, "meta": meta}  # fmt: skip
        self.repo.set_property(node.id, UPLOAD_PROP, prop_value("upload", info))
        return upload_id

    def _upload(self, node: Node, props: dict[str, str]) -> Upload | None:
        info = prop_data(props.get(UPLOAD_PROP))
        if not info:
            return None
        return Upload(node.name, info["bucket"], info["key"], info.get("owner", ""), info.get("initiated", 0.0),
                      info.get("content_type"), info.get("meta") or {}, node)  # fmt: skip

    def get(self, upload_id: str, bucket: str, key: str) -> Upload:
        if not upload_id or not all(c in "0123456789abcdef" for c in upload_id):
            raise S3Error("NoSuchUpload", "The specified upload does not exist.")
        node = self.repo.get(f"{STAGING_PATH}/{upload_id}")
        upload = self._upload(node, self.repo.get_properties(node.id)) if node is not None else None
        if upload is None or upload.bucket != bucket or upload.key != key:
            raise S3Error("NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, "
                          "or the upload may have been aborted or completed.")  # fmt: skip
        return upload

    def part_path(self, upload: Upload, number: int) -> str:
        if not 1 <= number <= MAX_PART_NUMBER:
            raise S3Error("InvalidArgument", f"Part number must be an integer between 1 and {MAX_PART_NUMBER}")
        return f"{STAGING_PATH}/{upload.upload_id}/{part_name(number)}"

    def parts(self, upload: Upload) -> list[tuple[int, Node]]:
        out = []
        for n in self.repo.children(upload.node.id):
            if not n.is_dir and n.name.isdigit():
                out.append((int(n.name), n))
        return sorted(out, key=lambda p: p[0])

    def list(self, bucket: str) -> list[Upload]:
        self.expire_now_and_then()
        staging = self.repo.get(STAGING_PATH)
        if staging is None:
            return []
        props = self.repo.get_properties_of_children(staging.id)
        out = []
        for node in self.repo.children(staging.id):
            upload = self._upload(node, props.get(node.id, {}))
            if upload is not None and upload.bucket == bucket:
                out.append(upload)
        return sorted(out, key=lambda u: (u.key, u.initiated))

    # -- outcome ----------------------------------------------------------------------------
    def complete(
        self, upload: Upload, wanted: builtins.list[tuple[int, str]], target: str, part_etag
    ) -> tuple[Node, str]:
        """Make the listed parts the content of ``target``; returns the node and its ETag.
        ``part_etag(node)``: the ETag of a part file (its MD5)."""
        have = dict(self.parts(upload))
        previous = 0
        chosen: list[Node] = []
        md5s = []
        for number, etag in wanted:
            if number <= previous:
                raise S3Error("InvalidPartOrder", "The list of parts was not in ascending order. "
                              "The parts list must be specified in order by part number.")  # fmt: skip
            previous = number
            node = have.get(number)
            if node is None or (etag and etag != part_etag(node)):
                raise S3Error("InvalidPart", "One or more of the specified parts could not be found. The part may "
                              "not have been uploaded, or the specified entity tag may not match the part's entity "
                              "tag.", part_number=number)  # fmt: skip
            chosen.append(node)
            md5s.append(part_etag(node))
        for node in chosen[:-1]:
            if node.size < self.min_part_size:
                raise S3Error("EntityTooSmall", "Your proposed upload is smaller than the minimum allowed object size.",
                              proposed_size=node.size, min_size_allowed=self.min_part_size)  # fmt: skip
        extents: list[Extent] = []
        offset = 0
        for node in chosen:
            for e in self.repo.extents(node.version_id, physical=False) if node.version_id is not None else []:
                extents.append(Extent(offset, e.object_id, e.object_offset, e.length))
                offset += e.length
            if sum(e.length for e in extents) != offset or offset < 0:
                raise Conflict("a part changed while the upload was completed; retry")
        # the parts' versions hold references to every chunk until the staging folder goes
        # below, so the collector cannot take them meanwhile
        with self.files._gc_lock.reading():
            node = self.repo.put_version(
                target,
                extents,
                content_type=upload.content_type,
                mtime=_mtime(upload.meta),
                checksums=NO_CHECKSUMS,
            )
        self._drop(upload)
        if self.files.write_back is not None:
            self.files.write_back.version_committed()
        return node, multipart_etag(md5s)

    def abort(self, upload: Upload) -> None:
        self._drop(upload)

    def _drop(self, upload: Upload) -> None:
        with contextlib.suppress(NotFound):
            self.repo.delete(upload.node.path)

    def expire_now_and_then(self) -> None:
        now = self._clock()
        with self._lock:
            if now - self._last_expiry < EXPIRE_EVERY_S:
                return
            self._last_expiry = now
        try:
            self.expire(now - EXPIRE_S)
        except Exception:  # purging is housekeeping: never fail the request for it
            log.warning("purging expired multipart uploads failed", exc_info=True)

    def expire(self, older_than: float) -> int:
        """Delete uploads started before ``older_than`` (epoch seconds); returns how many."""
        staging = self.repo.get(STAGING_PATH)
        if staging is None:
            return 0
        props = self.repo.get_properties_of_children(staging.id)
        n = 0
        for node in self.repo.children(staging.id):
            upload = self._upload(node, props.get(node.id, {}))
            started = upload.initiated if upload is not None else node.created_at
            if started < older_than:
                self.repo.delete(node.path)
                n += 1
        if n:
            log.info("purged %d multipart uploads older than %d days", n, EXPIRE_S // 86400)
        return n


def _mtime(meta: dict) -> float | None:
    try:
        return float(meta["mtime"]) if "mtime" in meta else None
    except (TypeError, ValueError):
        return None
