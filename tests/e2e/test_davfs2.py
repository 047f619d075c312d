"""A davfs2 mount writes 100 MB and reads it back (after a remount with an empty cache, so the
bytes really come from the server), on cheroot and on gunicorn.

davfs2 uploads a file after it is closed, from its local cache; ``umount`` waits until the
pending uploads are done. Needs root (mount) and the ``davfs2`` group (davfs2's package
creates it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import requests

from tests.e2e.support import BOTH_SERVERS, Davfs2Mount, MiB, require_davfs2

pytestmark = [pytest.mark.e2e, pytest.mark.requires_tool("mount.davfs")]

SIZE = 100 * 1000 * 1000  # 100 MB: about 96 chunks of 1 MiB


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MiB):
            h.update(block)
    return h.hexdigest()


@pytest.fixture
def davfs2_ready():
    """Checked before any server starts."""
    require_davfs2()


@pytest.fixture
def davfs2(davfs2_ready, server):
    """Unmounted before the server stops (fixtures are torn down in reverse order)."""
    m = Davfs2Mount(server)
    yield m
    m.close()


@BOTH_SERVERS
def test_davfs2_writes_and_reads_back_100mb(davfs2_ready, server, davfs2, tmp_path):
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
    davfs2.clear_cache()
    mark = server.log_mark()
    davfs2.mount()
    assert (mnt / "dir" / "big.bin").stat().st_size == SIZE
    assert _sha256_file(mnt / "dir" / "big.bin") == expected
    assert (mnt / "dir" / "small.txt").read_text() == "davfs2 was here\n"
    server.wait_for_log(rf"GET /dir/big\.bin 200 in=\S+ out={SIZE} ", since=mark)
    davfs2.umount()
