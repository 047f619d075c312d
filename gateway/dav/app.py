"""Build the WsgiDAV application (configuration in one place), behind the request front
(:mod:`gateway.dav.front`) and wrapped in :class:`gateway.web.WebFront`."""

from __future__ import annotations

import logging

from wsgidav.error_printer import ErrorPrinter
from wsgidav.mw.cors import Cors
from wsgidav.wsgidav_app import WsgiDAVApp

from gateway.admin_api import AdminApi
from gateway.config import Settings
from gateway.dav.auth import Authenticator, AuthGate
from gateway.dav.browser import DirBrowser
from gateway.dav.digest import load_key
from gateway.dav.front import QuietBrokenBodies, RequestFront
from gateway.dav.locks import DbLockStorage
from gateway.dav.propfind import QuietStreamedAnswers
from gateway.dav.props import DbPropertyManager
from gateway.dav.provider import HfdavProvider
from gateway.dav.server import RequestResolver
from gateway.dav.syncprops import RESPONSE_HEADERS_KEY
from gateway.files import FileService
from gateway.progress import upload_reporter
from gateway.web import WebFront, committer_check, database_check, store_check
from gateway.webui import WebUI

log = logging.getLogger(__name__)

#: WsgiDAV reads PUT bodies and writes GET bodies in pieces of this size. The 8 KiB default
#: costs 3–7× in throughput (WEBDAV_NOTES §3); 1 MiB keeps memory per request small.
IO_BLOCK_SIZE = 1 << 20

_QUIET_BROKEN_BODIES = QuietBrokenBodies()
_QUIET_STREAMED = QuietStreamedAnswers()


class _ResourceHeaders:
    """Adds the headers resources asked for (``environ[RESPONSE_HEADERS_KEY]``, e.g.
    ``X-OC-Mtime: accepted``) to the responses WsgiDAV builds itself."""

    def __init__(self, app):
        self._app = app

    def __call__(self, environ, start_response):
        def start(status, headers, exc_info=None):
            extra = environ.pop(RESPONSE_HEADERS_KEY, None)
            if extra:
                headers = [*headers, *extra]
            return start_response(status, headers, exc_info)

        return self._app(environ, start)


def make_wsgi_app(settings: Settings, files: FileService):
    provider = HfdavProvider(
        files,
        upload_progress=upload_reporter(),  # bytes, rate and ETA every ~10 s or tenth
        max_xml_body=settings.max_xml_body,
        max_propfind_infinity=settings.max_propfind_infinity,
        max_copy_members=settings.max_copy_members,
    )
    repo = files.repo
    config = {
        "provider_mapping": {settings.prefix: provider},
        # WsgiDAV's stack, with our resolver last: it serves GET ranges and COPY/MOVE itself.
        # Authentication happens in front of WsgiDAV, in gateway.dav.auth (one layer for WebDAV,
        # the admin API, /metrics and /healthz: throttling, checked Digest nonces, logs), so
        # WsgiDAV's own HTTPAuthenticator is left out.
        "middleware_stack": [Cors, ErrorPrinter, DirBrowser, RequestResolver],
        "lock_storage": DbLockStorage(repo, share_path=lambda: provider.share_path),
        "property_manager": DbPropertyManager(repo, lambda: provider.share_path),
        "mutable_live_props": ["{DAV:}getlastmodified"],
        # X-OC-Mtime is read by the resource, so the time is committed with the version (WsgiDAV's
        # own handling would set it in a second transaction, after the answer's ETag was built)
        "honor_mtime_header": False,
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
    dav = _ResourceHeaders(WsgiDAVApp(config))
    # WsgiDAV detaches its logger when imported (NullHandler, propagate False), which hides the
    # tracebacks it logs for internal errors: a 500 would leave no trace in our log.
    wsgidav_log = logging.getLogger("wsgidav")
    wsgidav_log.propagate = True
    wsgidav_log.setLevel(logging.WARNING)
    logging.getLogger("wsgidav.request_server").addFilter(_QUIET_BROKEN_BODIES)
    logging.getLogger("wsgidav.wsgidav_app").addFilter(_QUIET_STREAMED)
    checks = {"database": database_check(repo), "store": store_check(files.store), "committer": committer_check(files)}
    auth = Authenticator.from_settings(settings, load_key(settings.data_dir) if settings.digest else None)
    admin = AdminApi(RequestFront(AuthGate(dav, auth)), repo, auth)  # /.hfdav-admin/: maintenance
    ui = WebUI(admin, files=files, auth=auth, prefix=settings.prefix, data_dir=settings.data_dir)  # <prefix>/.hfdav-ui/
    s3 = None
    if settings.s3_prefix:
        from gateway.s3.app import S3App

        s3 = S3App.from_settings(settings, files, auth)
    front = WebFront(ui, prefix=settings.prefix, auth=auth, trusted_proxies=settings.trusted_proxies, checks=checks,
                     s3=s3)  # fmt: skip
    ui.health = front.health
    front.admin = admin  # the composition root attaches the gateway to it
    return front
