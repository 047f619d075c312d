"""rclone (webdav backend, vendor=other): copy up, ``check --download`` (a real byte comparison:
this vendor has no hashes), copy back down, on cheroot and on gunicorn."""

from __future__ import annotations

import os

import pytest
import requests

from tests.e2e.support import BOTH_SERVERS, MiB, Rclone

pytestmark = [pytest.mark.e2e, pytest.mark.requires_tool("rclone")]


def _make_tree(root) -> dict[str, bytes]:
    files = {
        "big.bin": os.urandom(12 * MiB + 123),  # 13 chunks, the last one partial
        "exactly-two-chunks.bin": os.urandom(2 * MiB),
        "empty.txt": b"",
        "small.txt": b"hello rclone\n",
        "sub/deeper/nested.bin": os.urandom(MiB + 1),
        "sub/note.md": b"# note\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


@BOTH_SERVERS
def test_rclone_copy_check_and_back(server, tmp_path):
    rclone = Rclone(server, tmp_path / "rclone")
    up, down = tmp_path / "up", tmp_path / "down"
    files = _make_tree(up)
    remote = Rclone.REMOTE + "backup"

    rclone.run("copy", str(up), remote)
    rclone.run("check", str(up), remote, "--download")
    listed = set(rclone.run("lsf", "-R", "--files-only", remote).stdout.split())
    assert listed == set(files)

    # the server returns the same bytes to a plain HTTP client
    for rel, data in files.items():
        r = requests.get(server.url_for(f"backup/{rel}"), auth=server.auth, timeout=60)
        assert r.status_code == 200 and r.content == data, rel

    rclone.run("copy", remote, str(down))
    for rel, data in files.items():
        assert (down / rel).read_bytes() == data, rel

    # sync deletes on the server what is gone locally
    (up / "small.txt").unlink()
    rclone.run("sync", str(up), remote)
    rclone.run("check", str(up), remote, "--download")
    assert requests.get(server.url_for("backup/small.txt"), auth=server.auth, timeout=60).status_code == 404

    # the check compares bytes: a change on the server side must be reported
    changed = bytearray(files["big.bin"])
    changed[7 * MiB] ^= 0xFF
    assert requests.put(server.url_for("backup/big.bin"), data=bytes(changed), auth=server.auth, timeout=60).ok
    proc = rclone.run("check", str(up), remote, "--download", "--combined", "-", check=False)
    differing = [line[2:] for line in proc.stdout.splitlines() if line.startswith("* ")]
    assert proc.returncode != 0 and differing == ["big.bin"], proc.stdout + proc.stderr
