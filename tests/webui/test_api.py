"""The browser file manager's HTTP API (gateway/webui): sign-in, CSRF, read-only refusal, share
links, the resumable upload protocol, downloads with ranges, zip, trash."""

from __future__ import annotations

import io
import os
import zipfile

import pytest
import requests

from tests.inprocess import served_gateway

UI = "/.hfdav-ui"


@pytest.fixture
def served(tmp_path):
    env = {
        "HFDAV_DATA_DIR": str(tmp_path / "data"),
        "SYS_TOKEN": "admin-password-long",
        "HFDAV_USERS": "alice:alice-password-long:rw,bob:bob-password-long:ro",
        "HFDAV_CHUNK_SIZE": "1MiB",
        "HFDAV_TRASH_DAYS": "7",
    }
    with served_gateway(env, threads=8) as (base, gw):
        yield base, gw


def login(base, user, password):
    s = requests.Session()
    r = s.post(base + UI + "/api/login", json={"user": user, "password": password})
    assert r.status_code == 200, r.text
    s.headers["X-CSRF-Token"] = r.json()["csrf"]
    return s


def test_sign_in_sets_a_strict_http_only_cookie_and_wrong_password_is_refused(served):
    base, _ = served
    r = requests.post(base + UI + "/api/login", json={"user": "alice", "password": "nope"})
    assert r.status_code == 401 and "set-cookie" not in r.headers
    assert "WWW-Authenticate" not in r.headers  # no browser password prompt
    r = requests.post(base + UI + "/api/login", json={"user": "alice", "password": "alice-password-long"})
    assert r.status_code == 200
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    r = requests.post(
        base + UI + "/api/login",
        json={"user": "alice", "password": "alice-password-long"},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert "Secure" in r.headers["Set-Cookie"]
    assert requests.get(base + UI + "/api/list").status_code == 401
    # a forged cookie is no session
    forged = r.cookies.get("hfdav_ui")[:-2] + "00"
    assert requests.get(base + UI + "/api/list", cookies={"hfdav_ui": forged}).status_code == 401
    # login needs JSON (a cross-site form post cannot send it without a preflight)
    r = requests.post(base + UI + "/api/login", data={"user": "alice", "password": "alice-password-long"})
    assert r.status_code == 415


def test_every_change_needs_the_csrf_token(served):
    base, gw = served
    s = login(base, "alice", "alice-password-long")
    token = s.headers.pop("X-CSRF-Token")
    assert s.post(base + UI + "/api/mkdir", json={"path": "/x"}).status_code == 403
    assert s.post(base + UI + "/api/mkdir", json={"path": "/x"}, headers={"X-CSRF-Token": "0" * 64}).status_code == 403
    assert gw.files.stat("/x") is None
    assert s.post(base + UI + "/api/mkdir", json={"path": "/x"}, headers={"X-CSRF-Token": token}).status_code == 201
    assert gw.files.stat("/x").is_dir
    # another session's token does not fit this session
    other = login(base, "alice", "alice-password-long")
    assert s.post(base + UI + "/api/mkdir", json={"path": "/y"},
                  headers={"X-CSRF-Token": other.headers["X-CSRF-Token"]}).status_code == 403  # fmt: skip


def test_read_only_user_can_read_but_every_change_is_refused(served):
    base, gw = served
    gw.files.write_bytes("/doc.txt", b"hello")
    s = login(base, "bob", "bob-password-long")
    me = s.get(base + UI + "/api/me").json()
    assert me["user"] == "bob" and me["can_write"] is False
    assert [e["name"] for e in s.get(base + UI + "/api/list", params={"path": "/"}).json()["entries"]] == ["doc.txt"]
    assert s.get(base + UI + "/api/file", params={"path": "/doc.txt"}).content == b"hello"
    calls = [
        ("/api/mkdir", {"path": "/new"}),
        ("/api/rename", {"path": "/doc.txt", "name": "x.txt"}),
        ("/api/move", {"paths": ["/doc.txt"], "dest": "/"}),
        ("/api/copy", {"paths": ["/doc.txt"], "dest": "/"}),
        ("/api/delete", {"paths": ["/doc.txt"]}),
        ("/api/uploads", {"path": "/up.bin", "size": 3}),
        ("/api/shares", {"path": "/doc.txt"}),
        ("/api/trash/purge", {"trash_path": "/.hfdav-trash/x"}),
    ]
    for path, body in calls:
        r = s.post(base + UI + path, json=body)
        assert r.status_code == 403 and "read-only" in r.json()["error"], path
    assert [n.path for n in gw.files.repo.walk("")] == ["", "/doc.txt"]


def test_browse_sort_filter_and_pages(served):
    base, gw = served
    gw.files.mkdir("/big")
    for i in range(250):
        gw.files.write_bytes(f"/big/f{i:03d}.txt", b"x" * i)
    gw.files.mkdir("/big/zdir")
    s = login(base, "alice", "alice-password-long")
    page = s.get(base + UI + "/api/list", params={"path": "/big", "limit": 100}).json()
    assert page["total"] == 251 and len(page["entries"]) == 100
    assert page["entries"][0]["name"] == "zdir" and page["entries"][1]["name"] == "f000.txt"  # folders first
    last = s.get(base + UI + "/api/list", params={"path": "/big", "limit": 100, "offset": 200}).json()
    assert [e["name"] for e in last["entries"]][-1] == "f249.txt"
    by_size = s.get(base + UI + "/api/list", params={"path": "/big", "sort": "size", "order": "desc"}).json()
    assert by_size["entries"][1]["name"] == "f249.txt"
    found = s.get(base + UI + "/api/list", params={"path": "/big", "q": "F24"}).json()
    assert sorted(e["name"] for e in found["entries"]) == [f"f24{i}.txt" for i in range(10)]
    # the trash folder is not listed at the root
    gw.files.delete("/big/f000.txt")
    root = s.get(base + UI + "/api/list", params={"path": "/"}).json()
    assert [e["name"] for e in root["entries"]] == ["big"]
    assert s.get(base + UI + "/api/list", params={"path": "/.hfdav-trash"}).status_code == 403


def test_download_with_range_and_folder_zip(served):
    base, gw = served
    data = os.urandom(3 * 1024 * 1024 + 17)
    gw.files.mkdir("/d")
    gw.files.mkdir("/d/sub")
    gw.files.write_bytes("/d/movie.mp4", data)
    gw.files.write_bytes("/d/sub/note.txt", b"note")
    s = login(base, "alice", "alice-password-long")
    r = s.get(base + UI + "/api/file", params={"path": "/d/movie.mp4"}, headers={"Range": "bytes=1048570-2097160"})
    assert r.status_code == 206 and r.content == data[1048570:2097161]
    assert r.headers["Content-Range"] == f"bytes 1048570-2097160/{len(data)}"
    r = s.get(base + UI + "/api/file", params={"path": "/d/movie.mp4"}, headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416
    r = s.get(base + UI + "/api/file", params={"path": "/d/movie.mp4", "dl": "1"})
    assert r.content == data and r.headers["Content-Disposition"].startswith("attachment")
    r = s.get(base + UI + "/api/zip", params={"path": "/d"})
    assert r.status_code == 200 and "Content-Length" not in r.headers  # streamed
    z = zipfile.ZipFile(io.BytesIO(r.content))
    assert z.read("movie.mp4") == data and z.read("sub/note.txt") == b"note"


def test_rename_move_delete_restore_purge(served):
    base, gw = served
    gw.files.write_bytes("/a.txt", b"A")
    gw.files.write_bytes("/b.txt", b"B")
    gw.files.mkdir("/dir")
    s = login(base, "alice", "alice-password-long")
    assert s.post(base + UI + "/api/rename", json={"path": "/a.txt", "name": "c.txt"}).status_code == 200
    assert s.post(base + UI + "/api/rename", json={"path": "/c.txt", "name": "b.txt"}).status_code == 409
    assert s.post(base + UI + "/api/move", json={"paths": ["/c.txt"], "dest": "/dir"}).status_code == 200
    assert gw.files.read_bytes("/dir/c.txt") == b"A"
    assert s.post(base + UI + "/api/move", json={"paths": ["/dir"], "dest": "/dir"}).status_code == 409
    assert s.post(base + UI + "/api/delete", json={"paths": ["/dir/c.txt", "/b.txt"]}).status_code == 200
    assert gw.files.stat("/dir/c.txt") is None
    trash = s.get(base + UI + "/api/trash").json()["entries"]
    assert sorted(e["path"] for e in trash) == ["/b.txt", "/dir/c.txt"]
    entry = next(e for e in trash if e["path"] == "/dir/c.txt")
    assert s.post(base + UI + "/api/trash/restore", json={"trash_path": entry["trash_path"]}).status_code == 200
    assert gw.files.read_bytes("/dir/c.txt") == b"A"
    other = next(e for e in trash if e["path"] == "/b.txt")
    assert s.post(base + UI + "/api/trash/purge", json={"trash_path": other["trash_path"]}).status_code == 200
    assert s.get(base + UI + "/api/trash").json()["entries"] == []


def test_resumable_upload_protocol(served):
    base, gw = served
    data = os.urandom(5 * 1024 * 1024 + 3)
    s = login(base, "alice", "alice-password-long")
    r = s.post(base + UI + "/api/uploads", json={"path": "/in/up.bin", "size": len(data), "mtime": 1_600_000_000})
    assert r.status_code == 201
    up = r.json()["id"]
    url = base + UI + "/api/uploads/" + up
    assert s.patch(url, data=data[:2_000_000], headers={"Upload-Offset": "0"}).json()["offset"] == 2_000_000
    # a wrong offset is refused with the right one
    r = s.patch(url, data=data[:10], headers={"Upload-Offset": "0"})
    assert r.status_code == 409 and r.json()["offset"] == 2_000_000
    # nothing is visible before finish, not even over WebDAV
    assert gw.files.stat("/in/up.bin") is None and gw.files.stat("/in") is None
    dav = requests.request("PROPFIND", base + "/", auth=("alice", "alice-password-long"), headers={"Depth": "infinity"})
    assert b"up.bin" not in dav.content
    assert s.post(url + "/finish").status_code == 409
    # another session of the same user (a reload) asks where it stopped and goes on
    again = login(base, "alice", "alice-password-long")
    assert again.get(url).json()["offset"] == 2_000_000
    assert again.patch(url, data=data[2_000_000:], headers={"Upload-Offset": "2000000"}).json()["offset"] == len(data)
    # bytes beyond the size are refused
    assert again.patch(url, data=b"x", headers={"Upload-Offset": str(len(data))}).status_code == 413
    r = again.post(url + "/finish")
    assert r.status_code == 200, r.text
    assert gw.files.read_bytes("/in/up.bin") == data
    assert gw.files.stat("/in/up.bin").modified_at == 1_600_000_000
    assert requests.get(base + "/in/up.bin", auth=("alice", "alice-password-long")).content == data
    assert again.get(url).status_code == 404  # the staging copy is gone
    # another user cannot see or touch someone's upload
    r = s.post(base + UI + "/api/uploads", json={"path": "/x.bin", "size": 4})
    admin = login(base, "admin", "admin-password-long")
    assert admin.get(base + UI + "/api/uploads/" + r.json()["id"]).status_code == 404


def test_upload_over_quota_is_refused_at_creation(tmp_path):
    env = {"HFDAV_DATA_DIR": str(tmp_path / "q"), "HFDAV_USERS": "alice:alice-password-long:rw",
           "HFDAV_QUOTA": "1MiB", "HFDAV_CHUNK_SIZE": "1MiB"}  # fmt: skip
    with served_gateway(env) as (base, _gw):
        s = login(base, "alice", "alice-password-long")
        r = s.post(base + UI + "/api/uploads", json={"path": "/big.bin", "size": 2 << 20})
        assert r.status_code == 507
        status = s.get(base + UI + "/api/status").json()
        assert status["quota"] == 1 << 20 and status["used"] == 0 and status["healthy"] is True
        assert status["sync"]["remote"] is False


def test_share_links_expire_are_revocable_and_may_need_a_password(served):
    base, gw = served
    gw.files.mkdir("/pub")
    gw.files.mkdir("/pub/sub")
    gw.files.write_bytes("/pub/a.txt", b"shared A")
    gw.files.write_bytes("/pub/sub/b.txt", b"shared B")
    gw.files.write_bytes("/secret.txt", b"not shared")
    s = login(base, "alice", "alice-password-long")
    folder = s.post(base + UI + "/api/shares", json={"path": "/pub"}).json()
    token = folder["token"]
    assert len(token) >= 32 and "alice" not in token
    anon = requests.Session()
    api = base + UI + "/api/public/" + token
    assert anon.get(api).json()["dir"] is True
    names = [e["name"] for e in anon.get(api + "/list", params={"path": "/"}).json()["entries"]]
    assert names == ["sub", "a.txt"]
    assert anon.get(api + "/file", params={"path": "/sub/b.txt"}).content == b"shared B"
    # nothing outside the shared folder
    assert anon.get(api + "/file", params={"path": "/../secret.txt"}).status_code in (400, 404)
    assert zipfile.ZipFile(io.BytesIO(anon.get(api + "/zip").content)).read("sub/b.txt") == b"shared B"
    # read-only
    assert anon.post(api + "/list", json={}).status_code == 405
    assert anon.get(base + UI + "/s/" + token).status_code == 200  # the public page
    listed = s.get(base + UI + "/api/shares").json()["shares"]
    assert [x["token"] for x in listed] == [token] and listed[0]["live"]
    # revoked: gone at once
    assert s.post(base + UI + f"/api/shares/{token}/revoke").status_code == 200
    assert anon.get(api + "/file", params={"path": "/a.txt"}).status_code == 404
    assert anon.get(api).status_code == 404
    # expired
    short = s.post(base + UI + "/api/shares", json={"path": "/pub/a.txt", "expires_in": 60}).json()
    api2 = base + UI + "/api/public/" + short["token"]
    assert anon.get(api2 + "/file").content == b"shared A"
    from sqlalchemy import update

    from gateway.meta.schema import web_shares

    with gw.repo.engine.begin() as c:
        c.execute(update(web_shares).where(web_shares.c.token == short["token"]).values(expires_at=1.0))
    assert anon.get(api2 + "/file").status_code == 404
    # with a password
    locked = s.post(base + UI + "/api/shares", json={"path": "/pub/a.txt", "password": "open sesame"}).json()
    api3 = base + UI + "/api/public/" + locked["token"]
    assert anon.get(api3).json()["locked"] is True
    assert anon.get(api3 + "/file").status_code == 403
    assert anon.post(api3 + "/unlock", json={"password": "wrong"}).status_code == 403
    assert anon.post(api3 + "/unlock", json={"password": "open sesame"}).status_code == 200
    assert anon.get(api3 + "/file").content == b"shared A"
    # another user cannot revoke alice's link
    bob = login(base, "bob", "bob-password-long")
    assert bob.post(base + UI + f"/api/shares/{locked['token']}/revoke").status_code == 403
    assert requests.get(base + UI + "/api/public/" + "x" * 32).status_code == 404


def test_browsers_get_the_file_manager_for_folders(served):
    base, _ = served
    r = requests.get(base + "/docs/", headers={"Accept": "text/html,application/xhtml+xml"}, allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == UI + "/#/docs"
    r = requests.get(base + "/caf%C3%A9%20bar/", headers={"Accept": "text/html"}, allow_redirects=False)
    assert r.headers["Location"] == UI + "/#/caf%C3%A9%20bar"
    # other clients (and ?dav) keep the WebDAV listing
    r = requests.get(base + "/", auth=("alice", "alice-password-long"), allow_redirects=False)
    assert r.status_code == 200 and "text/html" in r.headers["Content-Type"]
    r = requests.get(
        base + "/?dav", auth=("alice", "alice-password-long"), headers={"Accept": "text/html"}, allow_redirects=False
    )
    assert r.status_code == 200
    page = requests.get(base + UI + "/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert requests.get(base + UI + "/static/app.js").status_code == 200


def test_stored_pages_are_not_run_as_the_site(served):
    base, gw = served
    gw.files.write_bytes("/evil.html", b"<script>alert(1)</script>")
    s = login(base, "alice", "alice-password-long")
    r = s.get(base + UI + "/api/file", params={"path": "/evil.html"})
    assert r.headers["Content-Disposition"].startswith("attachment")
    assert r.headers["Content-Security-Policy"] == "sandbox"
    r = s.get(base + UI + "/api/file", params={"path": "/evil.html", "text": "1"})
    assert r.headers["Content-Type"].startswith("text/plain")


def test_under_a_share_prefix_the_file_manager_lives_inside_it(tmp_path):
    env = {"HFDAV_DATA_DIR": str(tmp_path / "p"), "HFDAV_USERS": "alice:alice-password-long:rw", "HFDAV_PREFIX": "/dav"}
    with served_gateway(env) as (base, gw):
        gw.files.mkdir("/docs")
        r = requests.get(base + "/dav/docs/", headers={"Accept": "text/html"}, allow_redirects=False)
        assert r.status_code == 303 and r.headers["Location"] == "/dav/.hfdav-ui/#/docs"
        r = requests.get(base + "/dav", headers={"Accept": "text/html"}, allow_redirects=False)
        assert r.status_code == 303 and r.headers["Location"] == "/dav/.hfdav-ui/#/"
        # not for WebDAV clients
        assert requests.get(base + "/dav", allow_redirects=False).status_code == 401
        page = requests.get(base + "/dav/.hfdav-ui/").text
        assert 'src="/dav/.hfdav-ui/static/app.js"' in page
        r = requests.post(base + "/dav/.hfdav-ui/api/login", json={"user": "alice", "password": "alice-password-long"})
        assert "Path=/dav/.hfdav-ui/" in r.headers["Set-Cookie"]
        s = requests.Session()
        s.cookies.update(r.cookies)
        s.headers["X-CSRF-Token"] = r.json()["csrf"]
        assert [e["name"] for e in s.get(base + "/dav/.hfdav-ui/api/list").json()["entries"]] == ["docs"]
        link = s.post(base + "/dav/.hfdav-ui/api/shares", json={"path": "/docs"}).json()["url"]
        assert link.startswith("/dav/.hfdav-ui/s/")
        # outside the prefix there is no page (the WebDAV front answers, asking for credentials)
        assert "app.js" not in requests.get(base + "/.hfdav-ui/").text
        assert requests.get(base + "/.hfdav-ui/").status_code in (401, 404)


def test_failed_sign_ins_are_throttled_like_webdav_logins(tmp_path):
    env = {"HFDAV_DATA_DIR": str(tmp_path / "t"), "HFDAV_USERS": "alice:alice-password-long:rw",
           "HFDAV_LOGIN_FAILURES": "2"}  # fmt: skip
    with served_gateway(env) as (base, _gw):
        codes = [requests.post(base + UI + "/api/login", json={"user": "alice", "password": f"guess{i}"}).status_code
                 for i in range(4)]  # fmt: skip
        assert codes[0] == 401 and codes[-1] == 429
        r = requests.post(base + UI + "/api/login", json={"user": "alice", "password": "alice-password-long"})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0  # blocked even with the right one
        # the block is the WebDAV one: the same client is refused there too
        assert requests.get(base + "/", auth=("alice", "alice-password-long")).status_code == 429


def test_finish_over_quota_is_refused_and_the_upload_kept(tmp_path):
    env = {"HFDAV_DATA_DIR": str(tmp_path / "q"), "HFDAV_USERS": "alice:alice-password-long:rw",
           "HFDAV_QUOTA": "1MiB", "HFDAV_CHUNK_SIZE": "1MiB"}  # fmt: skip
    with served_gateway(env) as (base, gw):
        s = login(base, "alice", "alice-password-long")
        up = s.post(base + UI + "/api/uploads", json={"path": "/a.bin", "size": 600_000}).json()["id"]
        url = base + UI + "/api/uploads/" + up
        assert s.patch(url, data=b"a" * 600_000, headers={"Upload-Offset": "0"}).json()["offset"] == 600_000
        gw.files.write_bytes("/other.bin", b"o" * 600_000)  # the room went meanwhile
        r = s.post(url + "/finish")
        assert r.status_code == 507
        assert gw.files.stat("/a.bin") is None and s.get(url).json()["offset"] == 600_000
        gw.files.repo.delete("/other.bin")  # for good (the trash would keep counting it)
        assert s.post(url + "/finish").status_code == 200 and gw.files.read_bytes("/a.bin") == b"a" * 600_000


def test_a_shared_drive_root_does_not_share_the_trash(served):
    base, gw = served
    gw.files.write_bytes("/gone.txt", b"deleted")
    gw.files.delete("/gone.txt")
    trash_path = gw.files.trash.entries()[0].trash_path
    s = login(base, "alice", "alice-password-long")
    token = s.post(base + UI + "/api/shares", json={"path": "/"}).json()["token"]
    api = base + UI + "/api/public/" + token
    assert requests.get(api + "/list", params={"path": "/"}).json()["entries"] == []
    assert requests.get(api + "/file", params={"path": trash_path}).status_code == 403
    assert requests.get(api + "/list", params={"path": "/.hfdav-trash"}).status_code == 403
    assert requests.get(api + "/zip", params={"path": "/.hfdav-trash"}).status_code == 403
    assert b"deleted" not in requests.get(api + "/zip").content


@pytest.mark.slow
def test_a_folder_of_10000_entries_is_served_in_pages(served):
    base, gw = served
    gw.files.mkdir("/many")
    for i in range(10_000):
        gw.files.create_empty(f"/many/file-{i:05d}.txt")
    s = login(base, "alice", "alice-password-long")
    names = []
    while True:
        page = s.get(base + UI + "/api/list", params={"path": "/many", "offset": len(names), "limit": 1000}).json()
        assert page["total"] == 10_000 and len(page["entries"]) <= 1000
        if not page["entries"]:
            break
        names += [e["name"] for e in page["entries"]]
    assert names == [f"file-{i:05d}.txt" for i in range(10_000)]
    newest = s.get(base + UI + "/api/list", params={"path": "/many", "sort": "mtime", "order": "desc", "limit": 1})
    assert newest.json()["entries"][0]["name"] == "file-09999.txt"


def test_a_busy_database_is_answered_503_with_retry_after(served, monkeypatch):
    from gateway.meta.db import DatabaseBusy

    base, gw = served
    s = login(base, "alice", "alice-password-long")

    def busy(node):
        raise DatabaseBusy("the database stayed busy")

    monkeypatch.setattr(gw.files, "list", busy)
    r = s.get(base + UI + "/api/list", params={"path": "/"})
    assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0 and "busy" in r.json()["error"]


def test_head_of_a_folder_from_a_browser_is_redirected_like_get(served):
    base, _ = served
    r = requests.head(base + "/docs/", headers={"Accept": "text/html"}, allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == UI + "/#/docs"


def test_a_piece_while_another_request_writes_the_upload_is_refused_with_the_offset(served, tmp_path):
    import fcntl

    base, _ = served
    s = login(base, "alice", "alice-password-long")
    up = s.post(base + UI + "/api/uploads", json={"path": "/busy.bin", "size": 10}).json()["id"]
    url = base + UI + "/api/uploads/" + up
    assert s.patch(url, data=b"12345", headers={"Upload-Offset": "0"}).json()["offset"] == 5
    data_file = tmp_path / "data" / "webui-uploads" / up / "data"
    with open(data_file, "ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # as a request still streaming into it would
        r = s.patch(url, data=b"67890", headers={"Upload-Offset": "5"})
        assert r.status_code == 409 and r.json()["offset"] == 5
        assert s.post(url + "/finish").status_code == 409
    assert s.patch(url, data=b"67890", headers={"Upload-Offset": "5"}).json()["offset"] == 10
    assert s.post(url + "/finish").status_code == 200
