"""The one table from hfdav errors to WebDAV statuses."""

from __future__ import annotations

import pytest

from gateway import errors
from gateway.dav.errors import to_dav_error
from gateway.meta.db import DatabaseBusy


@pytest.mark.allow_error_log
def test_a_database_that_stays_busy_is_503_with_retry_after():
    # retries exhausted (deadlocks, a writer holding the lock) is a 503 the client may retry,
    # not a 500
    err = to_dav_error(DatabaseBusy("kept losing races"))
    assert err.value == 503
    assert ("Retry-After", str(DatabaseBusy.retry_after)) in err.add_headers


def test_other_errors_carry_no_retry_after():
    err = to_dav_error(errors.NotFound("/x"))
    assert err.value == 404 and not err.add_headers
