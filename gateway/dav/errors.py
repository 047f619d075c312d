"""The one table from hfdav errors to WebDAV responses."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_CONFLICT,
    HTTP_FORBIDDEN,
    HTTP_INTERNAL_ERROR,
    HTTP_NOT_FOUND,
    HTTP_PRECONDITION_FAILED,
    DAVError,
)

from gateway import errors
from gateway.meta.db import DatabaseBusy

log = logging.getLogger(__name__)

HTTP_LENGTH_REQUIRED = 411
HTTP_INSUFFICIENT_STORAGE = 507
HTTP_BAD_GATEWAY = 502
HTTP_SERVICE_UNAVAILABLE = 503

_STATUS: list[tuple[type[errors.HfdavError], int]] = [
    (errors.NotFound, HTTP_NOT_FOUND),
    (errors.AlreadyExists, HTTP_PRECONDITION_FAILED),
    (errors.Conflict, HTTP_CONFLICT),
    (errors.InvalidPath, HTTP_BAD_REQUEST),
    (errors.IncompleteUpload, HTTP_BAD_REQUEST),
    (errors.LengthRequired, HTTP_LENGTH_REQUIRED),
    (errors.QuotaExceeded, HTTP_INSUFFICIENT_STORAGE),
    (errors.InsufficientStorage, HTTP_INSUFFICIENT_STORAGE),
    (errors.Reserved, HTTP_FORBIDDEN),
    (errors.ReadOnly, HTTP_FORBIDDEN),
    (errors.ObjectMissing, HTTP_BAD_GATEWAY),
    (errors.IntegrityError, HTTP_BAD_GATEWAY),
    (errors.StoreError, HTTP_SERVICE_UNAVAILABLE),
    (DatabaseBusy, HTTP_SERVICE_UNAVAILABLE),
]


def to_dav_error(exc: errors.HfdavError) -> DAVError:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            if status >= 500:
                log.error("%s: %s", type(exc).__name__, exc)
            retry_after = getattr(exc, "retry_after", None)
            headers = [("Retry-After", str(int(retry_after)))] if retry_after else None
            return DAVError(status, context_info=str(exc), add_headers=headers)
    return DAVError(HTTP_INTERNAL_ERROR, context_info=str(exc))


F = TypeVar("F", bound=Callable)


def translated(fn: F) -> F:
    """Decorator: hfdav errors raised inside become the matching DAVError."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except errors.HfdavError as exc:
            raise to_dav_error(exc) from exc

    return wrapper  # type: ignore[return-value]
