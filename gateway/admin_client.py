"""``hfdav``'s side of the admin API: find the server that serves a data dir, and call it.

The server notes its URL in ``<data dir>/server.json`` (:func:`gateway.admin_api.write_server_record`:
``hfdav serve`` after it bound its port, the gunicorn worker after start-up). A record whose
process is gone or whose port does not answer is stale: the commands then work on the data dir
themselves.

Credentials: the CLI runs with the same settings as the server, and logs in as the first
read-write user with a clear-text password: ``admin`` (``SYS_TOKEN``, or the password the
server generated into ``<data dir>/admin-password``), else the first ``rw`` user of
``HFDAV_USERS``. Users of ``HFDAV_USERS_FILE`` have hashes only and cannot be used for this.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from gateway.admin_api import ADMIN_PREFIX, read_server_record
from gateway.errors import HfdavError

#: Seconds a maintenance call may take (a full verify of a large repo takes long).
CALL_TIMEOUT_S = 24 * 3600


class ServerRefused(HfdavError):
    """The server answered the call with an error: ``status`` and its message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServerClient:
    url: str
    user: str
    password: str

    def call(self, method: str, endpoint: str, params: dict | None = None) -> dict:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        url = self.url + ADMIN_PREFIX + endpoint + (f"?{urlencode(query)}" if query else "")
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request = urllib.request.Request(url, method=method, headers={"Authorization": f"Basic {token}"})
        try:
            with urllib.request.urlopen(request, timeout=CALL_TIMEOUT_S) as answer:
                return json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error") or exc.reason
            except ValueError:
                message = exc.reason
            raise ServerRefused(exc.code, f"the server at {self.url} answered {exc.code}: {message}") from None
        except OSError as exc:
            raise HfdavError(f"the server at {self.url} did not answer: {exc}") from None


def credentials(settings) -> tuple[str, str] | None:
    """(user, password) of the first read-write user with a clear-text password."""
    password = settings.admin_password
    if not password:
        try:
            password = (settings.data_dir / "admin-password").read_text().strip() or None
        except OSError:
            password = None
    if password:
        return "admin", password
    for user in settings.users:
        if user.can_write and user.password:
            return user.name, user.password
    return None


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # unknown: let the port decide
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=3):
            return True
    except OSError:
        return False


def find_server(settings) -> ServerClient | None:
    """A client of the server that serves ``settings.data_dir``, or None if none runs.
    Raises HfdavError when one runs but no credentials to call it are configured."""
    record = read_server_record(settings.data_dir)
    if record is None or not _alive(record.get("pid")) or not _answers(record["url"]):
        return None
    login = credentials(settings)
    if login is None:
        raise HfdavError(
            f"a server serves {settings.data_dir} at {record['url']}, but no read-write user with a clear-text "
            "password is configured to call it: run with the server's SYS_TOKEN or HFDAV_USERS"
        )
    return ServerClient(record["url"], *login)
