"""Requests and clients as users of other tools send them, against the real server on cheroot
and on gunicorn: PROPFIND ``<propname/>`` and ``<allprop/>`` with ``<include/>`` (RFC 4918
§9.1), Windows and macOS Finder request sequences, and Python WebDAV client libraries from
PyPI (skipped, with the reason, where they are not installed)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from email.utils import parsedate_to_datetime

import pytest
import requests

from tests.e2e.support import BOTH_KINDS, SERVER_KINDS, Rclone, propfind

pytestmark = pytest.mark.e2e
#: Tests on the module's shared server, under cheroot and under gunicorn.
ON_BOTH = pytest.mark.parametrize("module_server", SERVER_KINDS, indirect=True)

D = "{DAV:}"


@pytest.fixture
def srv(module_server):
    return module_server


def _put(srv, path: str, data: bytes, **headers) -> int:
    return requests.put(srv.url_for(path), data=data, auth=srv.auth, headers=headers, timeout=30).status_code


def _propfind(srv, path: str, body: str, depth: str = "0") -> dict[str, ET.Element]:
    """PROPFIND with ``body``: the ``<D:response>`` elements by their href."""
    r = requests.request("PROPFIND", srv.url_for(path), data=body.encode(), auth=srv.auth, timeout=30,
                         headers={"Depth": depth, "Content-Type": "application/xml"})  # fmt: skip
    assert r.status_code == 207, r.text
    return {resp.findtext(f"{D}href"): resp for resp in ET.fromstring(r.content).iter(f"{D}response")}


def _props(response: ET.Element, status: str = "200") -> dict[str, ET.Element]:
    """The properties of one ``<D:response>`` under propstats whose status has ``status``."""
    found = {}
    for propstat in response.iter(f"{D}propstat"):
        if status in (propstat.findtext(f"{D}status") or ""):
            found.update({p.tag: p for p in propstat.find(f"{D}prop")})
    return found


@ON_BOTH
def test_propfind_propname_lists_names_without_values(srv):
    requests.request("MKCOL", srv.url_for("propname"), auth=srv.auth, timeout=30)
    assert _put(srv, "propname/f.txt", b"hello") in (201, 204)
    body = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>'
    responses = _propfind(srv, "propname", body, depth="1")
    assert set(responses) == {"/propname/", "/propname/f.txt"}
    names = _props(responses["/propname/f.txt"])
    for tag in ("getcontentlength", "getlastmodified", "getetag", "resourcetype", "displayname"):
        assert f"{D}{tag}" in names, tag
        assert not names[f"{D}{tag}"].text and not len(names[f"{D}{tag}"]), f"{tag} has a value"
    assert f"{D}resourcetype" in _props(responses["/propname/"])


@ON_BOTH
def test_propfind_allprop_with_include_adds_the_included(srv):
    """macOS and Windows ask for quota properties this way; allprop alone omits them."""
    body = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/><D:include>'
            "<D:quota-used-bytes/><D:quota-available-bytes/></D:include></D:propfind>")  # fmt: skip
    root = _propfind(srv, "", body)["/"]
    props = {**_props(root), **_props(root, "404")}
    assert f"{D}quota-used-bytes" in props and f"{D}quota-available-bytes" in props
    assert f"{D}resourcetype" in props and f"{D}getlastmodified" in props  # still allprop


@ON_BOTH
def test_quota_properties_are_numbers_or_absent(srv):
    """RFC 4331 §3, §4: without a quota (and on a file) the properties are 404, never an empty
    value, which Windows and Finder read as "0 bytes free" and refuse every copy."""
    assert _put(srv, "quota.txt", b"12345") in (201, 204)
    body = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
            "<D:quota-available-bytes/><D:quota-used-bytes/></D:prop></D:propfind>")  # fmt: skip
    for href, response in {**_propfind(srv, "", body), **_propfind(srv, "quota.txt", body)}.items():
        for tag, el in _props(response).items():
            assert (el.text or "").isdigit(), f"{href}: {tag} is {el.text!r} with 200"
        assert f"{D}quota-available-bytes" in _props(response, "404"), href  # no HFDAV_QUOTA set
    assert _props(_propfind(srv, "", body)["/"])[f"{D}quota-used-bytes"].text.isdigit()


@pytest.mark.slow  # a server of its own: about 6 s with gunicorn's shutdown
@BOTH_KINDS
def test_quota_available_bytes_with_a_quota(server_factory, kind):
    srv = server_factory.start(kind, env={"HFDAV_QUOTA": "10MiB"})
    assert _put(srv, "q.bin", b"x" * 1000) == 201
    body = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:quota-available-bytes/></D:prop></D:propfind>'
    assert _props(_propfind(srv, "", body)["/"])[f"{D}quota-available-bytes"].text == str(10 * (1 << 20) - 1000)


# -- client programs and libraries -----------------------------------------------------------

#: Awkward names every client below round-trips
NAMES = ["100% done.txt", "a#b.txt", "q?x.txt", "a+b&c=d.txt", "two  spaces .txt", "semi;colon.txt", "it's.txt",
         "中文 文件.txt", "emoji 😀.txt"]  # fmt: skip
#: A time a sync must keep (whole seconds: what an HTTP date carries)
OLD_MTIME = 1_262_304_000  # 2010-01-01T00:00:00Z


def _tree(root, tag: str) -> dict[str, bytes]:
    """Write NAMES at the top and in a sub-folder with an awkward name; the files by relative path."""
    files = {}
    for folder in ("", "sub #1 100%/"):
        for i, name in enumerate(NAMES):
            files[folder + name] = f"{tag} {folder}{name} {i}\n".encode() * (100 + i)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


@ON_BOTH
@pytest.mark.requires_tool("lftp")
def test_lftp_mirror_round_trip_keeps_names_bytes_and_times(srv, tmp_path):
    up, down = tmp_path / "up", tmp_path / "down"
    files = _tree(up, "lftp")
    os.utime(up / NAMES[1], (OLD_MTIME, OLD_MTIME))
    script = f"set cmd:fail-exit yes; set xfer:log no; mkdir -p lftp-{srv.kind}; " \
             f"mirror -R --no-perms {up} lftp-{srv.kind}; mirror --no-perms lftp-{srv.kind} {down}; bye"  # fmt: skip
    proc = subprocess.run(["lftp", "-u", f"{srv.user},{srv.password}", "-e", script, srv.url],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = {str(p.relative_to(down)): p.read_bytes() for p in down.rglob("*") if p.is_file()}
    assert got == files
    listing = propfind(srv, f"lftp-{srv.kind}")
    assert parsedate_to_datetime(listing[f"lftp-{srv.kind}/{NAMES[1]}"]["getlastmodified"]).timestamp() == OLD_MTIME
    assert (down / NAMES[1]).stat().st_mtime == OLD_MTIME


@ON_BOTH
def test_webdav4_round_trip(srv):
    webdav4 = pytest.importorskip("webdav4.client", reason="webdav4 not installed: pip install -e '.[test]'")
    client = webdav4.Client(srv.url, auth=srv.auth)
    base = f"webdav4-{srv.kind} 1"
    client.mkdir(base)
    # httpx, under webdav4, refuses '#' and '?' in a path it is given: the client's limit
    names = [n for n in NAMES if "#" not in n and "?" not in n]
    for name in names:
        client.upload_fileobj(io.BytesIO(name.encode() * 300), f"{base}/{name}")
    assert sorted(e["name"] for e in client.ls(base)) == sorted(f"{base}/{n}" for n in names)
    for name in names:
        buf = io.BytesIO()
        client.download_fileobj(f"{base}/{name}", buf)
        assert buf.getvalue() == name.encode() * 300, name
        assert client.info(f"{base}/{name}")["content_length"] == len(name.encode()) * 300
    client.copy(f"{base}/{names[0]}", f"{base}/copy {names[-1]}")
    client.move(f"{base}/{names[1]}", f"{base}/moved {names[-2]}")
    assert client.exists(f"{base}/copy {names[-1]}") and not client.exists(f"{base}/{names[1]}")
    buf = io.BytesIO()
    client.download_fileobj(f"{base}/moved {names[-2]}", buf)
    assert buf.getvalue() == names[1].encode() * 300


@ON_BOTH
def test_webdavclient3_round_trip(srv):
    webdav3 = pytest.importorskip("webdav3.client", reason="webdavclient3 not installed: pip install -e '.[test]'")
    client = webdav3.Client({"webdav_hostname": srv.url, "webdav_login": srv.user, "webdav_password": srv.password})
    base = f"webdav3-{srv.kind}"  # its list() cuts its own folder's href at '#' or '?' (client-side)
    client.mkdir(base)
    for name in NAMES:
        client.upload_to(name.encode() * 300, f"{base}/{name}")
    assert sorted(client.list(base)) == sorted(NAMES)
    for name in NAMES:
        buf = io.BytesIO()
        client.download_from(buf, f"{base}/{name}")
        assert buf.getvalue() == name.encode() * 300, name
        assert client.info(f"{base}/{name}")["size"] == str(len(name.encode()) * 300)
    client.copy(f"{base}/{NAMES[1]}", f"{base}/copy {NAMES[2]}")
    client.move(f"{base}/{NAMES[2]}", f"{base}/moved {NAMES[1]}")
    assert sorted(client.list(base)) == sorted({*NAMES, f"copy {NAMES[2]}", f"moved {NAMES[1]}"} - {NAMES[2]})


@ON_BOTH
@pytest.mark.requires_tool("cadaver")
def test_cadaver_propnames_lists_dead_and_live_properties(srv, tmp_path):
    """cadaver's ``propnames`` is a PROPFIND ``<propname/>``: it listed nothing before."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text(f"machine {srv.host}\nlogin {srv.user}\npassword {srv.password}\n")
    (home / ".netrc").chmod(0o600)
    name = "it's [1] 100%.txt"
    assert _put(srv, name, b"cadaver") in (201, 204)
    script = f'propset "{name}" myprop "plain value"\npropnames "{name}"\nquit\n'
    proc = subprocess.run(["cadaver", srv.url], input=script, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(home)})  # fmt: skip
    listed = proc.stdout.split("propnames", 1)[-1]
    assert "DAV: getcontentlength" in listed and "DAV: getetag" in listed, proc.stdout
    assert "http://webdav.org/cadaver/custom-properties/ myprop" in listed, proc.stdout


@ON_BOTH
def test_head_of_a_folder_answers_as_get(srv):
    """RFC 9110 §9.3.2: HEAD gets GET's status and headers. A folder named without its slash is
    redirected by GET; HEAD answered 200, and lftp took the folder for a file."""
    requests.request("MKCOL", srv.url_for("head dir #1"), auth=srv.auth, timeout=30)
    statuses = []
    for path in ("head dir #1", "head dir #1/"):
        get = requests.get(srv.url_for(path), auth=srv.auth, allow_redirects=False, timeout=30)
        head = requests.head(srv.url_for(path), auth=srv.auth, allow_redirects=False, timeout=30)
        assert (head.status_code, head.headers.get("Location")) == (get.status_code, get.headers.get("Location")), path
        assert head.headers.get("Content-Length") == get.headers.get("Content-Length"), path
        assert head.headers.get("Content-Type") == get.headers.get("Content-Type"), path
        assert head.content == b""
        statuses.append(head.status_code)
    assert statuses == [301, 200]


@ON_BOTH
@pytest.mark.requires_tool("lftp")
def test_lftp_cd_then_put_lands_in_the_folder(srv, tmp_path):
    (tmp_path / "f.txt").write_bytes(b"lftp cd")
    folder = f"lftp cd {srv.kind} #1"
    requests.request("MKCOL", srv.url_for(folder), auth=srv.auth, timeout=30)
    script = f'set cmd:fail-exit yes; cd "{folder}"; put {tmp_path / "f.txt"} -o f.txt; bye'
    proc = subprocess.run(["lftp", "-u", f"{srv.user},{srv.password}", "-e", script, srv.url],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert requests.get(srv.url_for(f"{folder}/f.txt"), auth=srv.auth, timeout=30).content == b"lftp cd"
    assert requests.head(srv.url_for("f.txt"), auth=srv.auth, timeout=30).status_code == 404


@pytest.mark.slow
@ON_BOTH
@pytest.mark.requires_tool("rclone", "fusermount3")
def test_rclone_mount_keeps_names_bytes_and_set_times(srv, tmp_path):
    """``rclone mount --vfs-cache-mode writes`` (vendor owncloud): files written and given an
    old time through the mount reach the server with both, and a new mount lists them so."""
    if not os.path.exists("/dev/fuse"):
        pytest.skip("rclone mount not usable: /dev/fuse is missing")
    rclone = Rclone(srv, tmp_path / "rclone")
    rclone.config.write_text(rclone.config.read_text().replace("vendor = other", "vendor = owncloud"))
    folder = f"mount {srv.kind} #1"
    requests.request("MKCOL", srv.url_for(folder), auth=srv.auth, timeout=30)
    files = {name: f"mounted {name}\n".encode() * 50 for name in NAMES}

    with _rclone_mount(rclone, folder, tmp_path / "mnt") as mnt:
        for name, data in files.items():
            (mnt / name).write_bytes(data)
            os.utime(mnt / name, (OLD_MTIME, OLD_MTIME))
        # uploads happen after the write-back delay; wait (bounded) until all arrived
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            listing = propfind(srv, folder)
            if all(listing.get(f"{folder}/{n}", {}).get("getcontentlength") == str(len(d)) for n, d in files.items()):
                break
            time.sleep(0.5)
    listing = propfind(srv, folder)
    for name, data in files.items():
        assert requests.get(srv.url_for(f"{folder}/{name}"), auth=srv.auth, timeout=30).content == data, name
        assert parsedate_to_datetime(listing[f"{folder}/{name}"]["getlastmodified"]).timestamp() == OLD_MTIME, name

    with _rclone_mount(rclone, folder, tmp_path / "mnt2") as mnt:
        assert sorted(p.name for p in mnt.iterdir()) == sorted(NAMES)
        for name, data in files.items():
            assert (mnt / name).stat().st_mtime == OLD_MTIME, name
            assert (mnt / name).read_bytes() == data, name


@contextlib.contextmanager
def _rclone_mount(rclone: Rclone, folder: str, mnt):
    """``rclone mount`` of ``folder`` at ``mnt`` for the block, unmounted at its end."""
    mnt.mkdir()
    argv = [rclone.exe, "--config", str(rclone.config), "--cache-dir", str(rclone.workdir / "cache"), "mount",
            f"{Rclone.REMOTE}{folder}", str(mnt), "--vfs-cache-mode", "writes", "--vfs-write-back", "1s",
            "--dir-cache-time", "1s"]  # fmt: skip
    proc = subprocess.Popen(argv, env=rclone.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.communicate(timeout=10)[0] if proc.poll() is not None else ""
                pytest.fail(f"rclone mount did not come up: {out}")
            time.sleep(0.2)
        yield mnt
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, timeout=60)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@ON_BOTH
def test_a_name_xml_cannot_carry_is_refused_and_the_folder_stays_listable(srv):
    """U+FFFE and U+FFFF are valid UTF-8 but not XML 1.0 characters: such a name was stored and
    every PROPFIND of its folder failed with 500 from then on."""
    requests.request("MKCOL", srv.url_for("xmlchars"), auth=srv.auth, timeout=30)
    assert _put(srv, "xmlchars/ok \u0085 \ufffd.txt", b"ok") == 201
    for bad in ("a\ufffeb.txt", "a\uffffb.txt"):
        assert _put(srv, f"xmlchars/{bad}", b"x") == 400, repr(bad)
        assert requests.request("MKCOL", srv.url_for(f"xmlchars/{bad}"), auth=srv.auth, timeout=30).status_code == 400
        dest = {"Destination": srv.url_for(f"xmlchars/{bad}")}
        moved = requests.request("MOVE", srv.url_for("xmlchars/ok \u0085 \ufffd.txt"), headers=dest, auth=srv.auth,
                                 timeout=30)  # fmt: skip
        assert moved.status_code == 400, repr(bad)
    assert set(propfind(srv, "xmlchars")) == {"xmlchars", "xmlchars/ok \u0085 \ufffd.txt"}


# -- desktop applications' request sequences (copied from what they send) ---------------------

LOCKINFO = ('<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
            "</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>{owner}</D:owner></D:lockinfo>")  # fmt: skip


def _dav(srv, method: str, path: str, body: bytes | str | None = None, **headers) -> requests.Response:
    data = body.encode() if isinstance(body, str) else body
    return requests.request(method, srv.url_for(path), data=data, headers=headers, auth=srv.auth, timeout=30)


def _timeout_of(r: requests.Response) -> int:
    text = ET.fromstring(r.content).findtext(f".//{D}timeout")
    assert text and text.startswith("Second-"), r.text
    return int(text.removeprefix("Second-"))


@ON_BOTH
def test_libreoffice_lock_refresh_cycle(srv):
    """LibreOffice locks a new document, saves under the lock and refreshes the lock with an
    ``If`` header (tagged with the document's URL) and ``Timeout: Second-180`` until it closes."""
    path = "office #1/report 100%.odt"
    _dav(srv, "MKCOL", "office #1")
    lock = _dav(srv, "LOCK", path, LOCKINFO.format(owner="LibreOffice - qa"), Timeout="Second-180")
    assert lock.status_code == 201, lock.text
    token = lock.headers["Lock-Token"].strip("<>")
    assert _put(srv, path, b"v1", If=f"(<{token}>)") == 204
    assert _put(srv, path, b"intruder") == 423
    for if_header in (f"(<{token}>)", f"<{srv.url_for(path)}> (<{token}>)"):
        refresh = _dav(srv, "LOCK", path, Timeout="Second-180", If=if_header)
        assert refresh.status_code == 200, refresh.text
        assert token in refresh.text and 170 <= _timeout_of(refresh) <= 180
    assert _dav(srv, "LOCK", path, Timeout="Second-180").status_code == 400  # a refresh names its lock
    assert _dav(srv, "LOCK", path, Timeout="Second-180", If="(<opaquelocktoken:other>)").status_code == 412
    assert _dav(srv, "UNLOCK", path, **{"Lock-Token": f"<{token}>"}).status_code == 204
    assert _put(srv, path, b"v2") == 204
    assert requests.get(srv.url_for(path), auth=srv.auth, timeout=30).content == b"v2"


@ON_BOTH
def test_windows_mini_redirector_upload_sequence(srv):
    """Explorer's copy to a mapped drive: PUT of 0 bytes, LOCK, PUT of the content, PROPPATCH of
    the Win32 times and attributes, UNLOCK; then a listing with allprop and ``Translate: f``."""
    hdr = {"User-Agent": "Microsoft-WebDAV-MiniRedir/10.0.19045", "Translate": "f"}
    path = "win #1/Q3 report (final) 100%.docx"
    _dav(srv, "MKCOL", "win #1", **hdr)
    assert _dav(srv, "OPTIONS", "", **hdr).headers.get("MS-Author-Via") == "DAV"
    assert _dav(srv, "PUT", path, b"", **hdr).status_code == 201
    lock = _dav(srv, "LOCK", path, LOCKINFO.format(owner="<D:href>WORKGROUP\\user</D:href>"),
                Timeout="Second-3600", **hdr)  # fmt: skip
    assert lock.status_code == 200, lock.text
    token = lock.headers["Lock-Token"].strip("<>")
    assert _dav(srv, "PUT", path, b"docx bytes", If=f"(<{token}>)", **hdr).status_code == 204
    win32 = ('<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:" '
             'xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop>'
             "<Z:Win32CreationTime>Wed, 01 Jan 2020 10:00:00 GMT</Z:Win32CreationTime>"
             "<Z:Win32LastAccessTime>Fri, 01 Jan 2010 00:00:00 GMT</Z:Win32LastAccessTime>"
             "<Z:Win32LastModifiedTime>Fri, 01 Jan 2010 00:00:00 GMT</Z:Win32LastModifiedTime>"
             "<Z:Win32FileAttributes>00000020</Z:Win32FileAttributes>"
             "</D:prop></D:set></D:propertyupdate>")  # fmt: skip
    patch = _dav(srv, "PROPPATCH", path, win32, If=f"(<{token}>)", **hdr)
    assert patch.status_code == 207
    assert {s.text for s in ET.fromstring(patch.content).iter(f"{D}status")} == {"HTTP/1.1 200 OK"}, patch.text
    assert _dav(srv, "UNLOCK", path, **{"Lock-Token": f"<{token}>"}, **hdr).status_code == 204
    listing = _dav(srv, "PROPFIND", "win #1", Depth="1", **hdr)
    assert listing.status_code == 207
    mine = {r.findtext(f"{D}href"): _props(r) for r in ET.fromstring(listing.content).iter(f"{D}response")}
    props = mine["/win%20%231/Q3%20report%20(final)%20100%25.docx"]
    assert props[f"{D}getcontentlength"].text == "10"
    assert parsedate_to_datetime(props[f"{D}getlastmodified"].text).timestamp() == OLD_MTIME
    assert requests.get(srv.url_for(path), headers=hdr, auth=srv.auth, timeout=30).content == b"docx bytes"


@ON_BOTH
def test_finder_copy_sequence(srv):
    """Finder: LOCK of a new URL, PUT of 0 bytes, chunked PUT with X-Expected-Entity-Length, the
    AppleDouble ``._`` file beside it, UNLOCK; it reads the quota of the share."""
    hdr = {"User-Agent": "WebDAVFS/3.0.0 (03008000) Darwin/21.6.0 (x86_64)"}
    path, data = "finder/Photo 1 é.jpg", os.urandom(300_000)
    _dav(srv, "MKCOL", "finder", **hdr)
    lock = _dav(srv, "LOCK", path, LOCKINFO.format(owner="<D:href>http://www.apple.com/webdav_fs/</D:href>"),
                Timeout="Second-600", **hdr)  # fmt: skip
    assert lock.status_code == 201, lock.text
    token = lock.headers["Lock-Token"].strip("<>")
    assert _dav(srv, "PUT", path, b"", If=f"(<{token}>)", **hdr).status_code == 204
    pieces = (data[i : i + 65536] for i in range(0, len(data), 65536))  # a generator: sent chunked
    put = _dav(srv, "PUT", path, pieces, If=f"(<{token}>)", **{"X-Expected-Entity-Length": str(len(data))}, **hdr)
    assert put.status_code == 204
    assert _dav(srv, "PUT", "finder/._Photo 1 é.jpg", b"\x00\x05\x16\x07appledouble", **hdr).status_code == 201
    assert _dav(srv, "UNLOCK", path, **{"Lock-Token": f"<{token}>"}, **hdr).status_code == 204
    assert requests.get(srv.url_for(path), auth=srv.auth, timeout=30).content == data
    quota = ('<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
             "<D:quota-available-bytes/><D:quota-used-bytes/></D:prop></D:propfind>")  # fmt: skip
    used = _props(_propfind(srv, "", quota)["/"])[f"{D}quota-used-bytes"]
    assert int(used.text) >= len(data)


@ON_BOTH
def test_stored_files_cannot_run_script_in_the_shares_origin(srv):
    """A file is served with the type its name (or its uploader) gave it, so an uploaded HTML or
    SVG page opened in a browser ran script in the share's origin, where the browser holds the
    reader's credentials (it could list, change or delete the drive as the reader). Every file
    is sent in a sandbox without content sniffing; WebDAV clients ignore both headers."""
    page = b"<html><script>fetch('/', {method: 'DELETE'})</script></html>"
    assert _put(srv, "page.html", page) in (201, 204)
    assert _put(srv, "image.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>1</script></svg>') in (201, 204)
    assert _put(srv, "note.txt", page, **{"Content-Type": "text/html"}) in (201, 204)
    for path in ("page.html", "image.svg", "note.txt"):
        for method in ("GET", "HEAD"):
            r = requests.request(method, srv.url_for(path), auth=srv.auth, timeout=30)
            assert r.status_code == 200, path
            assert r.headers.get("Content-Security-Policy") == "sandbox", (method, path)
            assert r.headers.get("X-Content-Type-Options") == "nosniff", (method, path)
    ranged = requests.get(srv.url_for("page.html"), headers={"Range": "bytes=0-5"}, auth=srv.auth, timeout=30)
    assert ranged.status_code == 206 and ranged.headers.get("Content-Security-Policy") == "sandbox"
    assert requests.get(srv.url_for("page.html"), auth=srv.auth, timeout=30).content == page


@ON_BOTH
def test_folder_page_links_carry_no_html_entities(srv):
    """The folder page linked ``it's.txt`` as ``href="it&#39;s.txt"``, which lftp (it lists
    folders from this page) does not decode: it asked for ``it&`` and skipped the file. The
    page's office-edit link put the name unescaped into a ``'``-quoted attribute."""
    _dav(srv, "MKCOL", "page")
    for name in ("it's.txt", "Bob's plan.docx"):
        assert _put(srv, f"page/{name}", b"x") in (201, 204)
    page = requests.get(srv.url_for("page/"), auth=srv.auth, timeout=30).text
    hrefs = re.findall(r"""href=["']([^"']*)""", page)
    assert "it%27s.txt" in hrefs and "Bob%27s%20plan.docx" in hrefs, hrefs
    assert not [h for h in hrefs if "&" in h], hrefs
    assert "vnd.libreoffice.command:ofv|u|Bob%27s%20plan.docx" in hrefs, hrefs


@ON_BOTH
def test_move_or_copy_onto_the_same_name_in_another_normal_form_loses_nothing(srv):
    """Names are stored NFC, so ``café`` spelled NFD (macOS) and NFC is one resource. A MOVE
    from one spelling to the other (what a client does that "fixes" NFD names) was taken for a
    move onto another, existing resource: the destination, i.e. the source, was deleted first,
    then the move failed with 409 and the file was gone."""
    nfc, nfd = "caf\u00e9 normal.txt", "cafe\u0301 normal.txt"
    folder_nfc, folder_nfd = "r\u00e9sum\u00e9s", "re\u0301sume\u0301s"
    assert _put(srv, nfc, b"keep me") == 201
    _dav(srv, "MKCOL", folder_nfc)
    assert _put(srv, f"{folder_nfc}/inner.txt", b"keep me too") == 201
    for method in ("MOVE", "COPY"):
        r = _dav(srv, method, nfd, Destination=srv.url_for(nfc))
        assert r.status_code == 403, (method, r.status_code)
        r = _dav(srv, method, folder_nfd, Destination=srv.url_for(f"{folder_nfc}/sub"))
        assert r.status_code == 403, (method, r.status_code)
    assert requests.get(srv.url_for(nfc), auth=srv.auth, timeout=30).content == b"keep me"
    assert requests.get(srv.url_for(f"{folder_nfc}/inner.txt"), auth=srv.auth, timeout=30).content == b"keep me too"


@ON_BOTH
def test_a_lock_holds_for_every_normal_form_of_the_name(srv):
    """A file locked as ``café`` in NFC could be overwritten and deleted without the token
    through its NFD spelling (macOS): the lock checks compared the raw request path."""
    nfc, nfd = "lock caf\u00e9.txt", "lock cafe\u0301.txt"
    assert _put(srv, nfc, b"locked") == 201
    lock = _dav(srv, "LOCK", nfc, LOCKINFO.format(owner="qa"), Timeout="Second-60")
    assert lock.status_code == 200, lock.text
    token = lock.headers["Lock-Token"]
    assert _put(srv, nfd, b"overwritten") == 423
    assert _dav(srv, "DELETE", nfd).status_code == 423
    assert _dav(srv, "MOVE", nfd, Destination=srv.url_for("lock elsewhere.txt")).status_code == 423
    assert requests.get(srv.url_for(nfc), auth=srv.auth, timeout=30).content == b"locked"
    assert _put(srv, nfd, b"with the token", If=f"({token})") == 204
    assert _put(srv, nfc, b"tagged", If=f"<{srv.url_for(nfd)}> ({token})") == 204
    assert _dav(srv, "UNLOCK", nfd, **{"Lock-Token": token}).status_code == 204
    assert _put(srv, nfc, b"free") == 204
