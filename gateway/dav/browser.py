"""WsgiDAV's folder pages (the HTML listing a GET of a folder gets), with two corrections.

HEAD is answered as GET. WsgiDAV answered ``HEAD`` of a folder with a bare 200, even where ``GET`` redirects ``/dir``
to ``/dir/`` or sends a page of some length. RFC 9110 §9.3.2 wants GET's status and headers.
lftp, which finds folders by HEAD, took a 200 for ``/dir`` as a file: ``cd dir`` kept the old
directory and the uploads that followed went to the parent folder.

Links percent-encode ``'``. The hrefs WsgiDAV builds leave it as it is (RFC 3986 allows that),
and the page then holds ``href="it&#39;s.txt"``: valid HTML, but lftp, which lists folders from
this page, does not decode it and skipped such files; and the office "Edit" link put the name
into a ``'``-quoted attribute unescaped, which cut the attribute short.
"""

from __future__ import annotations

from wsgidav.dir_browser import WsgiDavDirBrowser


class DirBrowser(WsgiDavDirBrowser):
    """See the module docstring."""

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] != "HEAD" or not self._is_folder(environ):
            return super().__call__(environ, start_response)
        environ["REQUEST_METHOD"] = "GET"
        try:
            body = super().__call__(environ, start_response)
        finally:
            environ["REQUEST_METHOD"] = "HEAD"
        close = getattr(body, "close", None)
        if close is not None:
            close()
        return [b""]

    def _get_context(self, environ, dav_res):
        context = super()._get_context(environ, dav_res)
        for row in context["rows"]:
            href = row.get("href")
            if href and "'" in href:
                row["href"] = href.replace("'", "%27")
                if row.get("add_link_html"):  # holds ...|u|{href}'>
                    row["add_link_html"] = row["add_link_html"].replace(f"|{href}'", f"|{row['href']}'")
        return context

    @staticmethod
    def _is_folder(environ) -> bool:
        provider = environ["wsgidav.provider"]
        if provider is None:
            return False
        res = provider.get_resource_inst(environ["PATH_INFO"], environ)
        return res is not None and res.is_collection
