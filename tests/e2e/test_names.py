"""Names in Chinese and with ``%``, ``#``, spaces, ``+`` and ``&``: stored, listed, copied, moved
and read back exactly, through curl and through rclone, on cheroot and on gunicorn."""

from __future__ import annotations

import pytest
import requests

from tests.e2e.support import BOTH_SERVERS, Rclone, all_paths, curl, propfind

pytestmark = pytest.mark.e2e

NAMES = [
    "中文文件.txt",
    "100% done.txt",
    "literal %20 and %2F.txt",  # must not be decoded a second time
    "a#b.txt",
    "with  two spaces .txt",
    "a+b&c=d.txt",
    "mixed 数据 #1 100%+&.bin",
]
FOLDER = "目录 #1 100%"


def _body(name: str) -> bytes:
    return f"content of {name}\n".encode() * 1000


def _c(server, *args, **kw):
    return curl("--basic", "-u", f"{server.user}:{server.password}", *args, **kw)


@BOTH_SERVERS
def test_names_with_curl(server, tmp_path):
    assert _c(server, "-X", "MKCOL", server.url_for(FOLDER)).status == 201
    for i, name in enumerate(NAMES):
        f = tmp_path / f"body{i}"
        f.write_bytes(_body(name))
        assert _c(server, "-T", str(f), server.url_for(f"{FOLDER}/{name}")).status == 201, name
    listing = propfind(server, FOLDER)
    assert set(listing) == {FOLDER} | {f"{FOLDER}/{n}" for n in NAMES}
    for name in NAMES:
        got = _c(server, server.url_for(f"{FOLDER}/{name}"))
        assert got.status == 200 and got.body == _body(name), name
        assert listing[f"{FOLDER}/{name}"]["getcontentlength"] == str(len(_body(name)))
        assert listing[f"{FOLDER}/{name}"]["displayname"] == name

    # '+' and '&' are legal unencoded in a path and mean themselves (not a space)
    got = _c(server, server.url + requests.utils.quote(FOLDER) + "/a+b&c=d.txt")
    assert got.status == 200 and got.body == _body("a+b&c=d.txt")

    # COPY and MOVE with a percent-encoded Destination, then DELETE
    for i, name in enumerate(NAMES):
        src = server.url_for(f"{FOLDER}/{name}")
        copy, moved = server.url_for(f"copy {i} {name}"), server.url_for(f"{FOLDER}/moved {name}")
        assert _c(server, "-X", "COPY", "-H", f"Destination: {copy}", src).status == 201, name
        assert _c(server, "-X", "MOVE", "-H", f"Destination: {moved}", src).status == 201, name
        assert _c(server, copy).body == _body(name)
        assert _c(server, moved).body == _body(name)
        assert _c(server, src).status == 404
    paths = all_paths(server)
    for i, name in enumerate(NAMES):
        assert f"copy {i} {name}" in paths and f"{FOLDER}/moved {name}" in paths
        assert f"{FOLDER}/{name}" not in paths
        assert _c(server, "-X", "DELETE", server.url_for(f"copy {i} {name}")).status == 204
    assert not any(p.startswith("copy ") for p in all_paths(server))


@BOTH_SERVERS
@pytest.mark.requires_tool("rclone")
def test_names_with_rclone(server, tmp_path):
    rclone = Rclone(server, tmp_path / "rclone")
    up, down = tmp_path / "up", tmp_path / "down"
    (up / FOLDER).mkdir(parents=True)
    for name in NAMES:
        (up / FOLDER / name).write_bytes(_body(name))
        (up / name).write_bytes(_body(name) * 2)

    rclone.run("copy", str(up), Rclone.REMOTE + "names")
    rclone.run("check", str(up), Rclone.REMOTE + "names", "--download")
    listed = set(rclone.run("lsf", "-R", "--files-only", Rclone.REMOTE + "names").stdout.splitlines())
    assert listed == set(NAMES) | {f"{FOLDER}/{n}" for n in NAMES}

    # what rclone stored is what a plain HTTP client sees under the same names
    for name in NAMES:
        r = requests.get(server.url_for(f"names/{FOLDER}/{name}"), auth=server.auth, timeout=30)
        assert r.status_code == 200 and r.content == _body(name), name
        r = requests.get(server.url_for(f"names/{name}"), auth=server.auth, timeout=30)
        assert r.status_code == 200 and r.content == _body(name) * 2, name

    rclone.run("copy", Rclone.REMOTE + "names", str(down))
    for name in NAMES:
        assert (down / FOLDER / name).read_bytes() == _body(name)
        assert (down / name).read_bytes() == _body(name) * 2
