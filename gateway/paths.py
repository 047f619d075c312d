"""Path rules: what a name may be, and the one normal form every layer below the DAV adapter uses.

Normal form: ``/a/b`` (segments joined by ``/``), no trailing slash, ``""`` for the root.
"""

from __future__ import annotations

import unicodedata

from gateway.errors import InvalidPath

#: Folders at the root of the drive that belong to the gateway: the trash, and the parts of S3
#: multipart uploads not completed yet. No listing shows them (WebDAV, S3, the file manager);
#: each is reachable by its own path.
TRASH_NAME = ".hfdav-trash"
S3_STAGING_NAME = ".hfdav-s3-uploads"
HIDDEN_ROOT_NAMES = frozenset({TRASH_NAME, S3_STAGING_NAME})

#: Longest name accepted, in UTF-8 bytes (the common file-system limit, so copies to disk work).
MAX_NAME_BYTES = 255
#: Longest path accepted, in UTF-8 bytes.
MAX_PATH_BYTES = 4096


def normalize(path: str) -> str:
    """Validate ``path`` and return its normal form. Raises :class:`InvalidPath`.

    Rejects ``.``/``..`` segments, NUL and other control characters, characters XML 1.0 cannot
    carry (U+FFFE, U+FFFF, lone surrogates: a listing holding such a name could not be written, so
    its whole folder would fail to list), over-long names and paths.
    Names are NFC-normalized so that macOS (NFD) and other clients agree on one spelling.
    """
    if "\x00" in path:
        raise InvalidPath("NUL in path")
    segments = [s for s in path.split("/") if s != ""]
    out = []
    for seg in segments:
        if seg in (".", ".."):
            raise InvalidPath(f"'{seg}' is not allowed in a path")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in seg):
            raise InvalidPath("control character in a name")
        if any(ch in "\ufffe\uffff" or "\ud800" <= ch <= "\udfff" for ch in seg):
            raise InvalidPath("a name may not hold U+FFFE, U+FFFF or surrogates (not XML characters)")
        seg = unicodedata.normalize("NFC", seg)
        if len(seg.encode("utf-8")) > MAX_NAME_BYTES:
            raise InvalidPath(f"name longer than {MAX_NAME_BYTES} bytes")
        out.append(seg)
    result = "/" + "/".join(out) if out else ""
    if len(result.encode("utf-8")) > MAX_PATH_BYTES:
        raise InvalidPath(f"path longer than {MAX_PATH_BYTES} bytes")
    return result


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def name_of(path: str) -> str:
    return path.rpartition("/")[2]
