"""A davfs2 mount writes 100 MB and reads it back (after a remount with an empty cache, so the
bytes really come from the server), on cheroot and on gunicorn.

davfs2 uploads a file after it is closed, from its local cache; ``umount`` waits until the
pending uploads are done. Needs root (mount) and the ``davfs2`` group (davfs2's package
creates it).
"""

from __future__ import annotations

import grp
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import requests

from tests.e2e.support import BOTH_SERVERS, MiB, require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.requires_tool("mount.davfs")]

SIZE = 100 * 1000 * 1000  # 100 MB: about 96 chunks of 1 MiB
#: davfs2 config. ``buf_size 64``: with the default (16 KiB) every readdir fails with EINVAL
#: on Linux >= 6.16 (alisarctl/davfs2#22). ``use_locks 1``: LOCK/PUT/UNLOCK like most clients.
DAVFS2_CONF = """\
cache_dir      {cache}
secrets        {secrets}
ask_auth       0
use_locks      1
delay_upload   0
cache_size     400
buf_size       64
"""
MOUNT_TIMEOUT_S = 60
#: umount waits for davfs2 to upload what is still pending (100 MB).
UMOUNT_TIMEOUT_S = 300


def _require_davfs2() -> None:
    require_tool("mount.davfs")
    if os.geteuid() != 0:
        pytest.skip("davfs2 not usable: mounting needs root (run scripts/test.sh as root)")
    try:
        grp.getgrnam("davfs2")
    except KeyError:
        pytest.skip("davfs2 not installed properly: group davfs2 missing (apt-get install davfs2)")
    if not Path("/dev/fuse").exists() and "coda" not in Path("/proc/filesystems").read_text():
        pytest.skip("davfs2 not usable: neither /dev/fuse nor coda is available in this kernel")


class Davfs2Mount:
    def __init__(self, server, workdir: Path):
        self.server = server
        self.cache = workdir / "cache"
        self.mountpoint = workdir / "mnt"
        self.conf = workdir / "davfs2.conf"
        secrets = workdir / "secrets"
        for d in (self.cache, self.mountpoint):
            d.mkdir(parents=True, exist_ok=True)
        # mount.davfs runs as user davfs2: the cache must be writable by its group
        shutil.chown(self.cache, group="davfs2")
        self.cache.chmod(0o775)
        secrets.write_text(f'"{server.url}" {server.user} "{server.password}"\n')
        secrets.chmod(0o600)
        self.conf.write_text(DAVFS2_CONF.format(cache=self.cache, secrets=secrets))
        self.conf.chmod(0o600)
        self.mounted = False

    def mount(self) -> None:
        proc = subprocess.run(
            ["mount", "-t", "davfs", "-o", f"conf={self.conf},uid=0,gid=0", self.server.url, str(self.mountpoint)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=MOUNT_TIMEOUT_S,
        )  # fmt: skip
        assert proc.returncode == 0, f"mount.davfs failed: {proc.stdout}{proc.stderr}"
        self.mounted = True

    def umount(self) -> None:
        proc = subprocess.run(["umount", str(self.mountpoint)], capture_output=True, text=True,
                              timeout=UMOUNT_TIMEOUT_S)  # fmt: skip
        assert proc.returncode == 0, f"umount failed: {proc.stdout}{proc.stderr}"
        self.mounted = False

    def empty_cache(self) -> None:
        for child in self.cache.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def force_umount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True, timeout=60)
            self.mounted = False


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MiB):
            h.update(block)
    return h.hexdigest()


@pytest.fixture
def davfs2_dir():
    """A directory for the mount, cache and config; checked before any server starts."""
    _require_davfs2()
    # mount.davfs runs as user davfs2 and must reach its cache: pytest's tmp dirs are private
    # to root (mode 700), so the mount lives in a directory of its own that others may traverse
    workdir = Path(tempfile.mkdtemp(prefix="hfdav-e2e-davfs2-"))
    workdir.chmod(0o755)
    yield workdir
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def davfs2(davfs2_dir, server):
    """Unmounted before the server stops (fixtures are torn down in reverse order)."""
    m = Davfs2Mount(server, davfs2_dir)
    yield m
    m.force_umount()


@BOTH_SERVERS
def test_davfs2_writes_and_reads_back_100mb(davfs2_dir, server, davfs2, tmp_path):
    source = tmp_path / "big.bin"
    with open(source, "wb") as f:
        for _ in range(SIZE // (10 * 1000 * 1000)):
            f.write(os.urandom(10 * 1000 * 1000))
    expected = _sha256_file(source)

    davfs2.mount()
    mnt = davfs2.mountpoint
    (mnt / "dir").mkdir()
    shutil.copyfile(source, mnt / "dir" / "big.bin")
    (mnt / "dir" / "small.txt").write_text("davfs2 was here\n")
    assert sorted(p.name for p in (mnt / "dir").iterdir()) == ["big.bin", "small.txt"]
    davfs2.umount()  # waits for the uploads

    # the server has the bytes, seen by a plain HTTP client
    h = hashlib.sha256()
    with requests.get(server.url_for("dir/big.bin"), auth=server.auth, stream=True, timeout=300) as r:
        assert r.status_code == 200
        for block in r.iter_content(4 * MiB):
            h.update(block)
    assert h.hexdigest() == expected
    assert requests.get(server.url_for("dir/small.txt"), auth=server.auth, timeout=60).text == "davfs2 was here\n"

    # remount with an empty cache: reading must GET the file from the server
    davfs2.empty_cache()
    mark = server.log_mark()
    davfs2.mount()
    assert (mnt / "dir" / "big.bin").stat().st_size == SIZE
    assert _sha256_file(mnt / "dir" / "big.bin") == expected
    assert (mnt / "dir" / "small.txt").read_text() == "davfs2 was here\n"
    server.wait_for_log(rf"GET /dir/big\.bin 200 in=\S+ out={SIZE} ", since=mark)
    davfs2.umount()
