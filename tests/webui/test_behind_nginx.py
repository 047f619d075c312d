"""The file manager through the container's front: boot.py with nginx and gunicorn, the share at
/dav. Browsers' GETs of the share are sent to the page; sign-in, an upload in pieces through
nginx's streaming proxy, the listing, a ranged download and a folder zip work there."""

from __future__ import annotations

import io
import os
import zipfile

import pytest
import requests

from tests.container.support import start_boot
from tests.e2e.support import require_tool

pytestmark = pytest.mark.e2e


def test_file_manager_behind_nginx(tmp_path):
    require_tool("nginx")
    booted = start_boot(tmp_path)
    try:
        ui = booted.base + "/dav/.hfdav-ui"
        r = requests.get(booted.base + "/dav/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=10)
        assert r.status_code == 303 and r.headers["Location"] == "/dav/.hfdav-ui/#/"
        page = requests.get(ui + "/", timeout=10)
        assert page.status_code == 200 and 'src="/dav/.hfdav-ui/static/app.js"' in page.text
        assert requests.get(ui + "/static/app.js", timeout=10).status_code == 200
        # the home page at / still says what this is and links to the share (and so to the page)
        home = requests.get(booted.base + "/", timeout=10).text
        assert "hfdav" in home and 'href="/dav/"' in home

        s = requests.Session()
        r = s.post(ui + "/api/login", json={"user": "admin", "password": booted.password}, timeout=30)
        assert r.status_code == 200, r.text
        assert "Path=/dav/.hfdav-ui/" in r.headers["Set-Cookie"]
        s.headers["X-CSRF-Token"] = r.json()["csrf"]
        assert s.post(ui + "/api/mkdir", json={"path": "/web"}, timeout=30).status_code == 201

        data = os.urandom(9 * 1024 * 1024 + 5)
        up = s.post(ui + "/api/uploads", json={"path": "/web/blob.bin", "size": len(data)}, timeout=30).json()["id"]
        offset, piece = 0, 4 * 1024 * 1024
        while offset < len(data):
            r = s.patch(ui + "/api/uploads/" + up, data=data[offset : offset + piece],
                        headers={"Upload-Offset": str(offset)}, timeout=60)  # fmt: skip
            assert r.status_code == 200, r.text
            offset = r.json()["offset"]
        assert s.post(ui + f"/api/uploads/{up}/finish", timeout=120).status_code == 200
        dav = requests.get(booted.url + "web/blob.bin", auth=(booted.user, booted.password), timeout=60)
        assert dav.status_code == 200 and dav.content == data

        names = [e["name"] for e in s.get(ui + "/api/list", params={"path": "/web"}, timeout=30).json()["entries"]]
        assert names == ["blob.bin"]
        r = s.get(ui + "/api/file", params={"path": "/web/blob.bin"}, headers={"Range": "bytes=100-199"}, timeout=30)
        assert r.status_code == 206 and r.content == data[100:200]
        z = s.get(ui + "/api/zip", params={"path": "/web"}, timeout=120)
        assert zipfile.ZipFile(io.BytesIO(z.content)).read("blob.bin") == data
    finally:
        assert booted.shutdown() == 0, booted.log_text()[-3000:]
