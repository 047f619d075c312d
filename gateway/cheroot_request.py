"""cheroot's request parsing, with the path of an OPTIONS request percent-decoded like any other.

cheroot 11 decodes the path of every request except OPTIONS (its OPTIONS branch keeps the raw
path, meant for ``OPTIONS *`` and proxies). So ``OPTIONS /x%20y.txt`` reached the application
as ``/x%20y.txt``, a missing file, and below a folder whose name needs encoding as a 404.
Clients that ask OPTIONS of a resource before working on it (Haskell's DAV library, hence
hdav and git-annex) then gave up. :class:`Request` applies cheroot's own decoding (``%2F``
kept, as for the other methods) to those paths too; gunicorn needs nothing of the kind.
"""

from __future__ import annotations

import urllib.parse

from cheroot.server import QUOTED_SLASH, QUOTED_SLASH_REGEX, HTTPRequest


class Request(HTTPRequest):
    """cheroot's request, with OPTIONS paths decoded."""

    def read_request_line(self):
        ok = super().read_request_line()
        if ok and self.method == b"OPTIONS" and self.path.startswith(b"/") and b"%" in self.path:
            try:
                atoms = [urllib.parse.unquote_to_bytes(x) for x in QUOTED_SLASH_REGEX.split(self.path)]
            except ValueError as exc:
                self.simple_response("400 Bad Request", exc.args[0])
                return False
            self.path = QUOTED_SLASH.join(atoms)
        return ok


def with_request_fixes(connection_class: type) -> type:
    """``connection_class`` (a cheroot ``HTTPConnection``) reading requests as :class:`Request`."""
    return type(connection_class.__name__, (connection_class,), {"RequestHandlerClass": Request})
