"""More real clients against the real server on cheroot and on gunicorn: multi-connection
downloaders (aria2c, axel), wget (resume, recursive download of the folder pages), ffprobe and
ffmpeg seeking in a video, GNOME's gvfs through ``gio``, git and sqlite3 inside a davfs2 mount,
a password manager's save (PUT of a temporary file, MOVE over the old one) and curl's resumed
upload. Each test skips, with the reason, where its tool is missing."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from tests.e2e.support import SERVER_KINDS, Davfs2Mount, MiB, curl, require_davfs2

pytestmark = pytest.mark.e2e
#: Tests on the module's shared server, under cheroot and under gunicorn.
ON_BOTH = pytest.mark.parametrize("module_server", SERVER_KINDS, indirect=True)


@pytest.fixture
def srv(module_server):
    return module_server


def _mkcol(srv, path: str) -> None:
    r = requests.request("MKCOL", srv.url_for(path), auth=srv.auth, timeout=30)
    assert r.status_code in (201, 405), r.text


def _put(srv, path: str, data: bytes, **headers) -> requests.Response:
    r = requests.put(srv.url_for(path), data=data, auth=srv.auth, headers=headers, timeout=120)
    return r


def _get(srv, path: str, **headers) -> requests.Response:
    return requests.get(srv.url_for(path), auth=srv.auth, headers=headers, timeout=120)


def _run(argv: list[str], *, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


# -- HTTP preconditions as caches send them ---------------------------------------------------


@ON_BOTH
def test_revalidation_with_matching_etag_and_a_later_date_is_304(srv):
    """davfs2 revalidates a cached file with If-None-Match and If-Modified-Since (its own, later,
    time). The entity tag matching means "not modified" (RFC 9110 §13.2.2, If-Modified-Since is
    then ignored); the server answered 412, and davfs2 failed the read with EINVAL."""
    _mkcol(srv, "cond")
    assert _put(srv, "cond/a.txt", b"cached bytes").status_code in (201, 204)
    head = requests.head(srv.url_for("cond/a.txt"), auth=srv.auth, timeout=30)
    etag, modified = head.headers["ETag"], head.headers["Last-Modified"]
    later = "Fri, 01 Jan 2100 00:00:00 GMT"
    for method in ("GET", "HEAD"):
        r = requests.request(method, srv.url_for("cond/a.txt"), auth=srv.auth, timeout=30,
                             headers={"If-None-Match": etag, "If-Modified-Since": later})  # fmt: skip
        assert r.status_code == 304, (method, r.status_code, r.text)
        assert r.headers.get("ETag") == etag
    # a different tag: the whole file, whatever the date says
    r = _get(srv, "cond/a.txt", **{"If-None-Match": '"other"', "If-Modified-Since": later})
    assert r.status_code == 200 and r.content == b"cached bytes"
    # a later date alone: not modified; an earlier one: the file
    assert _get(srv, "cond/a.txt", **{"If-Modified-Since": later}).status_code == 304
    r = _get(srv, "cond/a.txt", **{"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert r.status_code == 200 and r.content == b"cached bytes"
    # If-Match decides before If-Unmodified-Since; a mismatch is 412 and writes nothing
    assert _put(srv, "cond/a.txt", b"lost", **{"If-Match": '"other"'}).status_code == 412
    r = _put(srv, "cond/a.txt", b"kept", **{"If-Match": etag, "If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert r.status_code == 204, r.text
    assert _put(srv, "cond/a.txt", b"lost", **{"If-None-Match": "*"}).status_code == 412
    old_date = {"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}
    assert _put(srv, "cond/a.txt", b"lost", **old_date).status_code == 412
    assert _get(srv, "cond/a.txt").content == b"kept"
    assert modified  # sent with every file


@ON_BOTH
def test_put_if_match_to_a_deleted_file_is_412_and_creates_nothing(srv):
    """A sync client updates the version it knows with If-Match; when another client deleted
    the file meanwhile, the condition is false (RFC 9110 §13.1.1, "*" included) and the file
    must not come back. The server created it."""
    _mkcol(srv, "cond")
    assert _put(srv, "cond/gone.txt", b"v1").status_code in (201, 204)
    etag = requests.head(srv.url_for("cond/gone.txt"), auth=srv.auth, timeout=30).headers["ETag"]
    assert requests.delete(srv.url_for("cond/gone.txt"), auth=srv.auth, timeout=30).status_code == 204
    for tag in ("*", etag):
        assert _put(srv, "cond/gone.txt", b"v2", **{"If-Match": tag}).status_code == 412
        assert _get(srv, "cond/gone.txt").status_code == 404


# -- git and sqlite3 inside a davfs2 mount ----------------------------------------------------


@pytest.fixture
def davfs2_ready():
    require_davfs2()


@pytest.fixture
def davfs2(davfs2_ready, srv):
    m = Davfs2Mount(srv)
    yield m
    m.close()


def _git(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    who = {"GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@example.org", "GIT_COMMITTER_NAME": "a",
           "GIT_COMMITTER_EMAIL": "a@example.org"}  # fmt: skip
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd), **who}
    return _run(["git", *args], cwd=cwd, env=env)


@pytest.mark.slow
@pytest.mark.requires_tool("mount.davfs", "git", "sqlite3")
@ON_BOTH
def test_git_and_sqlite3_inside_a_davfs2_mount(davfs2, srv, tmp_path: Path):
    """``git clone``, ``commit``, ``gc`` and ``fsck`` and a sqlite3 database in a davfs2 mount,
    then again from an empty cache. Reading back the objects git had just written failed for
    some of them (those whose revalidation date fell in a later second than the server's time):
    davfs2's revalidation got 412 (see the test above) and git reported corrupt objects."""
    src = tmp_path / "src"
    src.mkdir()
    _git("init", "-q", cwd=src)
    for i in range(30):
        (src / f"f{i}.txt").write_text(f"line {i}\n")
    (src / "blob.bin").write_bytes(os.urandom(3 * MiB))
    _git("add", "-A", cwd=src)
    _git("commit", "-qm", "one", cwd=src)
    folder = f"git-{srv.kind}"
    _mkcol(srv, folder)

    davfs2.mount()
    repo = davfs2.mountpoint / folder / "repo"
    _git("clone", "-q", "--no-hardlinks", str(src), str(repo), cwd=tmp_path)
    (repo / "f1.txt").write_text("changed\n")
    _git("commit", "-qam", "two", cwd=repo)
    _git("gc", "-q", cwd=repo)
    _git("fsck", "--full", cwd=repo)
    db = davfs2.mountpoint / folder / "t.sqlite"
    inserts = "".join("insert into t values(randomblob(500));" for _ in range(2000))
    out = _run(["sqlite3", str(db), f"create table t(x); begin; {inserts} commit; pragma integrity_check; "
                "select count(*) from t;"]).stdout.split()  # fmt: skip
    assert out == ["ok", "2000"]
    davfs2.umount()

    davfs2.clear_cache()
    davfs2.mount()
    repo = davfs2.mountpoint / folder / "repo"
    _git("fsck", "--full", cwd=repo)
    log = _git("log", "--format=%s", cwd=repo).stdout.split()
    assert log == ["two", "one"]
    assert (repo / "blob.bin").read_bytes() == (src / "blob.bin").read_bytes()
    db = davfs2.mountpoint / folder / "t.sqlite"
    out = _run(["sqlite3", str(db), "pragma integrity_check; select count(*) from t;"])
    assert out.stdout.split() == ["ok", "2000"]


# -- multi-connection and resumed downloads ---------------------------------------------------

#: 7 MiB and a bit: eight chunks of the test servers' 1 MiB, so ranges cross chunk boundaries.
BIG = 7 * MiB + 12345


@pytest.fixture(scope="module")
def big_file(module_server) -> tuple[str, bytes]:
    data = os.urandom(BIG)
    _mkcol(module_server, "dl")
    assert _put(module_server, "dl/big file #1.bin", data).status_code in (201, 204)
    return "dl/big file #1.bin", data


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.requires_tool("aria2c")
@ON_BOTH
def test_aria2c_sixteen_connections_and_resume(srv, big_file, tmp_path: Path):
    """aria2c splits the file into 16 ranged GETs of 256 KiB pieces on parallel connections;
    then, with ``-c``, resumes a download cut after its first 3 MB."""
    path, data = big_file
    auth = ["--http-user", srv.user, "--http-passwd", srv.password]
    common = ["aria2c", "-q", "--allow-overwrite=true", "--auto-file-renaming=false", *auth, "-d", str(tmp_path)]
    _run([*common, "-x", "16", "-s", "16", "-k", "1M", "--min-split-size", "1M", "-o", "whole.bin", srv.url_for(path)])
    assert _sha((tmp_path / "whole.bin").read_bytes()) == _sha(data)

    (tmp_path / "part.bin").write_bytes(data[: 3_000_000])
    _run([*common, "-c", "-x", "4", "-s", "4", "-o", "part.bin", srv.url_for(path)])
    assert _sha((tmp_path / "part.bin").read_bytes()) == _sha(data)


@pytest.mark.requires_tool("axel")
@ON_BOTH
def test_axel_sixteen_connections(srv, big_file, tmp_path: Path):
    path, data = big_file
    url = srv.url_for(path).replace("http://", f"http://{srv.user}:{srv.password}@")
    _run(["axel", "-q", "-n", "16", "-o", str(tmp_path / "axel.bin"), url])
    assert _sha((tmp_path / "axel.bin").read_bytes()) == _sha(data)


@pytest.mark.requires_tool("wget")
@ON_BOTH
def test_wget_resume_and_recursive_download_of_the_folder_pages(srv, big_file, tmp_path: Path):
    """``wget -c`` finishes a partial file with one ranged GET; ``wget -r -np`` follows the
    links of the folder pages and fetches every file, names with spaces, ``#``, ``&`` and CJK
    included, byte-identical."""
    path, data = big_file
    auth = ["--user", srv.user, "--password", srv.password]
    part = tmp_path / "resumed.bin"
    part.write_bytes(data[:3_000_000])
    _run(["wget", "-q", "-c", *auth, "-O", str(part), srv.url_for(path)])
    assert _sha(part.read_bytes()) == _sha(data)

    tree = {"wr/a&b.txt": b"amp\n", "wr/sub dir/\u4e2d\u6587 #1.txt": b"cjk\n" * 100,
            "wr/sub dir/deeper/x.bin": os.urandom(2 * MiB + 1)}  # fmt: skip
    for folder in ("wr", "wr/sub dir", "wr/sub dir/deeper"):
        _mkcol(srv, folder)
    for name, body in tree.items():
        assert _put(srv, name, body).status_code in (201, 204)
    out = tmp_path / "mirror"
    _run(["wget", "-q", "-r", "-np", "-nH", "-e", "robots=off", "-R", "index.html*", *auth, "-P", str(out),
          srv.url_for("wr/")])  # fmt: skip
    got = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got == tree


# -- video players' reads ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.requires_tool("ffmpeg", "ffprobe")
@ON_BOTH
def test_ffprobe_and_ffmpeg_seek_in_a_video_over_http(srv, tmp_path: Path):
    """A player's reads: ffprobe's probe of an MP4 whose index (moov) is at the end, so it
    seeks there first; then ffmpeg decodes one frame at 15 s. The frame's checksum must equal
    the one decoded from the local file."""
    video = tmp_path / "v.mp4"
    _run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=duration=20:size=640x480:rate=25",
          "-c:v", "mpeg4", "-q:v", "2", str(video)])  # fmt: skip
    assert video.stat().st_size > 1 * MiB  # spans chunks
    _mkcol(srv, "video")
    assert _put(srv, "video/clip one.mp4", video.read_bytes()).status_code in (201, 204)
    url = srv.url_for("video/clip one.mp4").replace("http://", f"http://{srv.user}:{srv.password}@")
    probe = _run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", url]).stdout
    assert float(probe) == pytest.approx(20.0, abs=0.1)

    def frame_at_15s(source: str) -> str:
        out = _run(["ffmpeg", "-v", "error", "-ss", "15", "-i", source, "-frames:v", "1", "-f", "framemd5", "-"]).stdout
        return [line for line in out.splitlines() if not line.startswith("#")][-1]

    assert frame_at_15s(url) == frame_at_15s(str(video))


# -- a password manager's save ----------------------------------------------------------------


@ON_BOTH
def test_password_manager_save_put_temporary_then_move_over(srv):
    """KeePass-style transactional save: PUT ``db.kdbx.tmp``, MOVE it over ``db.kdbx`` with
    Overwrite: T; with the old file locked, the MOVE needs the lock's token in If, and without
    it the old file stays whole."""
    _mkcol(srv, "kp")
    old, new = os.urandom(2 * MiB + 3), os.urandom(2 * MiB + 5)
    assert _put(srv, "kp/db.kdbx", old).status_code in (201, 204)
    assert _put(srv, "kp/db.kdbx.tmp", new).status_code == 201

    lockinfo = ('<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
                "<D:locktype><D:write/></D:locktype><D:owner>kp</D:owner></D:lockinfo>")  # fmt: skip
    r = requests.request("LOCK", srv.url_for("kp/db.kdbx"), data=lockinfo, auth=srv.auth, timeout=30,
                         headers={"Timeout": "Second-600", "Depth": "0"})  # fmt: skip
    assert r.status_code == 200, r.text
    token = r.headers["Lock-Token"]
    move = {"Destination": srv.url_for("kp/db.kdbx"), "Overwrite": "T"}
    r = requests.request("MOVE", srv.url_for("kp/db.kdbx.tmp"), auth=srv.auth, headers=move, timeout=30)
    assert r.status_code == 423
    assert _get(srv, "kp/db.kdbx").content == old
    r = requests.request("MOVE", srv.url_for("kp/db.kdbx.tmp"), auth=srv.auth, timeout=30,
                         headers={**move, "If": f"<{srv.url_for('kp/db.kdbx')}> ({token})"})  # fmt: skip
    assert r.status_code == 204, r.text
    assert _get(srv, "kp/db.kdbx").content == new
    assert _get(srv, "kp/db.kdbx.tmp").status_code == 404


# -- curl's resumed upload --------------------------------------------------------------------


@pytest.mark.requires_tool("curl")
@ON_BOTH
def test_curl_resumed_upload_is_refused_and_the_file_is_kept(srv, big_file, tmp_path: Path):
    """``curl -C OFFSET -T file`` sends the tail with ``Content-Range``; taken as a whole-file
    PUT it would replace the file with its tail. RFC 9110 §14.5: 400, and the file unchanged."""
    path, data = big_file
    local = tmp_path / "up.bin"
    local.write_bytes(data)
    target = "dl/resumed upload.bin"
    assert _put(srv, target, data[:3_000_000]).status_code in (201, 204)
    r = curl("-u", f"{srv.user}:{srv.password}", "-C", "3000000", "-T", str(local), srv.url_for(target))
    assert r.status == 400
    assert _get(srv, target).content == data[:3_000_000]


# -- GNOME's gvfs -----------------------------------------------------------------------------

GVFSD_DAV = Path("/usr/libexec/gvfsd-dav")

#: Run under ``dbus-run-session`` (gvfs needs a session bus); every step's exit code is printed
#: as ``name=code`` so the test can tell which failed.
GIO_SCRIPT = r"""
U="$1"; L="$2"
printf '%s\n' "$PW" | gio mount "$U" >/dev/null 2>&1; echo mount=$?
gio mkdir "${U}gvfs"; echo mkdir=$?
gio copy "$L/big.bin" "${U}gvfs/big.bin"; echo copy_in=$?
gio copy "${U}gvfs/big.bin" "$L/back.bin"; echo copy_out=$?
gio rename "${U}gvfs/big.bin" "renamed #1.bin"; echo rename=$?
gio copy "${U}gvfs/renamed%20%231.bin" "${U}gvfs/copy.bin"; echo server_copy=$?
gio move "${U}gvfs/copy.bin" "${U}gvfs/moved.bin"; echo move=$?
printf 'v1\n' | gio save "${U}gvfs/note.txt"; echo save=$?
printf 'v2\n' | gio save "${U}gvfs/note.txt"; echo save_again=$?
printf 'v3\n' | gio save -e '"stale"' "${U}gvfs/note.txt"; echo save_stale_etag=$?
gio remove "${U}gvfs/moved.bin"; echo remove=$?
gio list "${U}gvfs/" > "$L/list.txt"; echo list=$?
gio info -a time::modified,standard::size "${U}gvfs/note.txt" > "$L/info.txt"; echo info=$?
gio trash "${U}gvfs/note.txt" 2>/dev/null; echo trash=$?
gio mount -u "$U"; echo unmount=$?
"""


@pytest.mark.slow
@pytest.mark.requires_tool("gio", "dbus-run-session")
@ON_BOTH
def test_gvfs_gio_mount_copy_rename_move_save(srv, tmp_path: Path):
    """gvfs's dav backend (what Nautilus and GTK file dialogs use): mount, copy in and out,
    rename, server-side copy and move, save over a file, a save with a stale entity tag (gvfs
    sends If-Match and must be refused), delete, list. gvfs cannot trash or set times on WebDAV
    at all ("Operation not supported", whatever the server), so trash only must fail cleanly."""
    if not GVFSD_DAV.exists():
        pytest.skip(f"gvfs WebDAV backend not installed ({GVFSD_DAV}): apt-get install gvfs-backends gvfs-daemons")
    data = os.urandom(3 * MiB + 7)
    (tmp_path / "big.bin").write_bytes(data)
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PW": srv.password, "XDG_RUNTIME_DIR": str(home)}
    url = f"dav://{srv.user}@{srv.host}:{srv.port}/"
    proc = subprocess.run(["dbus-run-session", "--", "bash", "-c", GIO_SCRIPT, "gio-script", url, str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    codes = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    expected = {step: "0" for step in ("mount", "mkdir", "copy_in", "copy_out", "rename", "server_copy", "move",
                                        "save", "save_again", "remove", "list", "info", "unmount")}  # fmt: skip
    assert {k: codes.get(k) for k in expected} == expected, proc.stdout + proc.stderr
    assert codes.get("save_stale_etag") != "0" and codes.get("trash") != "0", proc.stdout
    assert (tmp_path / "back.bin").read_bytes() == data
    assert sorted((tmp_path / "list.txt").read_text().split("\n")) == ["", "note.txt", "renamed #1.bin"]
    assert "standard::size: 3" in (tmp_path / "info.txt").read_text()
    assert _get(srv, "gvfs/note.txt").content == b"v2\n"
    assert _get(srv, "gvfs/renamed #1.bin").content == data


# -- Joplin's WebDAV sync ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.requires_tool("joplin")
@ON_BOTH
def test_joplin_two_profiles_sync_a_notebook_both_ways(srv, tmp_path: Path):
    """The Joplin terminal app (sync target 6, WebDAV): profile one syncs a notebook with two
    notes; profile two fetches them, edits one, deletes one, adds a note with a 2.5 MB
    attachment and syncs; profile one syncs again and sees exactly that. Joplin keeps its own
    lock files, ``info.json``, ``.resource/`` and ``.sync/`` on the drive."""
    folder = f"joplin-{srv.kind}"
    _mkcol(srv, folder)
    home = tmp_path / "home"
    home.mkdir()

    def joplin(profile: str, *args: str) -> str:
        argv = ["joplin", "--profile", str(tmp_path / profile), *args]
        return _run(argv, env={**os.environ, "HOME": str(home)}, timeout=300).stdout

    for profile in ("p1", "p2"):
        for key, value in (("sync.target", "6"), ("sync.6.path", srv.url_for(folder)),
                           ("sync.6.username", srv.user), ("sync.6.password", srv.password)):  # fmt: skip
            joplin(profile, "config", key, value)
    joplin("p1", "mkbook", "notebook one")
    joplin("p1", "use", "notebook one")
    joplin("p1", "mknote", "first note")
    joplin("p1", "set", "first note", "body", "hello b\u00f6dy")
    joplin("p1", "mknote", "second note")
    joplin("p1", "sync")

    joplin("p2", "sync")
    joplin("p2", "use", "notebook one")
    assert sorted(n.strip() for n in joplin("p2", "ls").split("\n") if n.strip()) == ["first note", "second note"]
    assert "hello b\u00f6dy" in joplin("p2", "cat", "first note")
    joplin("p2", "set", "second note", "body", "edited in two")
    joplin("p2", "rmnote", "-f", "first note")
    joplin("p2", "mknote", "third note")
    attachment = tmp_path / "photo.bin"
    attachment.write_bytes(os.urandom(2_500_000))
    joplin("p2", "attach", "third note", str(attachment))
    joplin("p2", "sync")

    joplin("p1", "sync")
    joplin("p1", "use", "notebook one")
    assert sorted(n.strip() for n in joplin("p1", "ls").split("\n") if n.strip()) == ["second note", "third note"]
    assert "edited in two" in joplin("p1", "cat", "second note")
    resources = [p for p in (tmp_path / "p1" / "resources").iterdir() if p.is_file()]
    assert [p.read_bytes() for p in resources] == [attachment.read_bytes()]


# -- git over WebDAV (dumb HTTP clone, http-push) ---------------------------------------------


@pytest.mark.slow
@pytest.mark.requires_tool("git")
@ON_BOTH
def test_git_dumb_http_clone_and_webdav_push(srv, tmp_path: Path):
    """git's own WebDAV client: a bare repository uploaded to the drive is cloned over dumb
    HTTP, a commit is pushed with ``git http-push`` (PROPFIND, MKCOL, LOCK of the ref, PUT of
    each object, MOVE of the ref into place, UNLOCK), and a fresh clone has both commits."""
    if not Path("/usr/lib/git-core/git-http-push").exists() and shutil.which("git-http-push") is None:
        pytest.skip("git-http-push not installed (git built without WebDAV push)")
    src = tmp_path / "src"
    src.mkdir()
    _git("init", "-q", cwd=src)
    for i in range(20):
        (src / f"f{i}.txt").write_text(f"line {i}\n")
    (src / "blob.bin").write_bytes(os.urandom(2 * MiB + 3))
    _git("add", "-A", cwd=src)
    _git("commit", "-qm", "one", cwd=src)
    bare = tmp_path / "bare.git"
    _git("clone", "-q", "--bare", str(src), str(bare), cwd=tmp_path)
    _git("update-server-info", cwd=bare)
    remote = f"git-{srv.kind}/repo.git"
    _mkcol(srv, f"git-{srv.kind}")
    _mkcol(srv, remote)
    for p in sorted(bare.rglob("*")):
        rel = f"{remote}/{p.relative_to(bare)}"
        if p.is_dir():
            _mkcol(srv, rel)
        else:
            assert _put(srv, rel, p.read_bytes()).status_code in (201, 204), rel
    url = srv.url_for(remote).replace("http://", f"http://{srv.user}:{srv.password}@")

    _git("clone", "-q", url, str(tmp_path / "work"), cwd=tmp_path)
    work = tmp_path / "work"
    (work / "f1.txt").write_text("pushed\n")
    (work / "new.bin").write_bytes(os.urandom(1 * MiB + 9))
    _git("add", "-A", cwd=work)
    _git("commit", "-qm", "two", cwd=work)
    _git("push", "-q", "origin", "HEAD", cwd=work)

    _git("clone", "-q", url, str(tmp_path / "again"), cwd=tmp_path)
    again = tmp_path / "again"
    _git("fsck", "--full", cwd=again)
    assert _git("log", "--format=%s", cwd=again).stdout.split() == ["two", "one"]
    assert (again / "new.bin").read_bytes() == (work / "new.bin").read_bytes()
