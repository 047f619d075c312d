"""Build the WsgiDAV application (configuration in one place) and the thin WSGI wrapper around it."""

from __future__ import annotations

import logging
import time

from wsgidav.wsgidav_app import WsgiDAVApp

from gateway.config import Settings
from gateway.dav.auth import HfdavDomainController, user_table
from gateway.dav.locks import DbLockStorage
from gateway.dav.props import DbPropertyManager
from gateway.dav.provider import HfdavProvider
from gateway.files import FileService

log = logging.getLogger(__name__)
access_log = logging.getLogger("hfdav.access")

#: WsgiDAV reads PUT bodies and writes GET bodies in pieces of this size. The 8 KiB default
#: costs 3–7× in throughput (WEBDAV_NOTES §3); 1 MiB keeps memory per request small.
IO_BLOCK_SIZE = 1 << 20


def _progress(path: str, done: int, total: int | None) -> None:
    log.info("stored chunk %d/%s of %s", done, total if total is not None else "?", path)


def make_wsgi_app(settings: Settings, files: FileService):
    provider = HfdavProvider(files, upload_progress=_progress)
    repo = files.repo
    config = {
        "provider_mapping": {settings.prefix: provider},
        "http_authenticator": {
            "domain_controller": HfdavDomainController,
            "accept_basic": True,
            "accept_digest": True,
            "default_to_digest": True,
        },
        "hfdav_dc": {"users": user_table(settings), "anonymous": settings.anonymous},
        "lock_storage": DbLockStorage(repo),
        "property_manager": DbPropertyManager(repo, lambda: provider.share_path),
        "mutable_live_props": ["{DAV:}getlastmodified"],
        "hotfixes": {
            "emulate_win32_lastmod": True,
            "re_encode_path_info": True,
            "unquote_path_info": False,
        },
        "dir_browser": {"enable": True, "response_trailer": False, "davmount": True},
        "block_size": IO_BLOCK_SIZE,
        "suppress_version_info": True,
        "verbose": 1,
        "logging": {"enable": False},
    }
    dav = WsgiDAVApp(config)
    return AccessLog(dav)


class AccessLog:
    """One log line per request: method, path, status, bytes in/out, seconds, user."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        started = time.monotonic()
        status_holder = {}

        def _start(status, headers, exc_info=None):
            status_holder["status"] = status.split(" ", 1)[0]
            return start_response(status, headers, exc_info)

        sent = 0
        body = self.app(environ, _start)
        try:
            for piece in body:
                sent += len(piece)
                yield piece
        finally:
            if hasattr(body, "close"):
                body.close()
            access_log.info(
                '%s %s %s in=%s out=%d %.3fs user=%s',
                environ.get("REQUEST_METHOD"),
                environ.get("PATH_INFO"),
                status_holder.get("status", "-"),
                environ.get("CONTENT_LENGTH") or "-",
                sent,
                time.monotonic() - started,
                environ.get("wsgidav.auth.user_name") or "-",
            )
