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
    assert _put(srv, "cond/a.txt", b"lost", **{"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 412
    assert _get(srv, "cond/a.txt").content == b"kept"
    assert modified  # sent with every file


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
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd), "GIT_AUTHOR_NAME": "a",
           "GIT_AUTHOR_EMAIL": "a@example.org", "GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@example.org"}  # fmt: skip
    return _run(["git", *args], cwd=cwd, env=env)


@pytest.mark.slow
@pytest.mark.requires_tool("mount.davfs", "git", "sqlite3")
@ON_BOTH
def test_git_and_sqlite3_inside_a_davfs2_mount(davfs2, srv, tmp_path: Path):
    """``git clone``, ``commit``, ``gc`` and ``fsck`` and a sqlite3 database in a davfs2 mount,
    then again from an empty cache. Reading back the objects git had just written failed:
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
    out = _run(["sqlite3", str(davfs2.mountpoint / folder / "t.sqlite"), "pragma integrity_check; select count(*) from t;"])
    assert out.stdout.split() == ["ok", "2000"]
