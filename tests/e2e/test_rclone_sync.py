"""rclone as a sync tool (webdav vendors ``owncloud`` and ``nextcloud``): a 1,000-file tree is
synced up, a second ``sync`` transfers nothing, ``lsl`` shows the source's modification times,
and ``check`` compares hashes without downloading (``oc:checksums``: MD5 for owncloud, SHA-1 for
nextcloud); on cheroot and on gunicorn.

rclone 1.60 sets times with ``X-OC-Mtime`` on PUT only (it cannot change the time of a stored
file: a file whose time alone changed is uploaded again, with its new time).
"""

from __future__ import annotations

import hashlib
import os
import random
import re

import pytest
import requests

from tests.e2e.support import BOTH_SERVERS, MiB, Rclone

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.requires_tool("rclone")]

N_FILES = 1000
#: 2020-01-01 00:00:00 UTC: the tree's times are spread over the year after it
BASE_TIME = 1_577_836_800
#: hash each vendor reads from oc:checksums, and the rclone command listing it
VENDOR_HASH = {"owncloud": ("md5", "md5sum"), "nextcloud": ("sha1", "sha1sum")}
COPIED = re.compile(r"INFO\s+: (.+): Copied \(")


def make_tree(root) -> dict[str, bytes]:
    """1,000 files in 20 folders: mostly small, a few spanning several chunks, some empty; each
    with its own whole-second time in 2020."""
    rnd = random.Random(9)
    files: dict[str, bytes] = {}
    for i in range(N_FILES):
        rel = f"dir{i % 20:02d}/sub{i % 3}/file {i:04d}.bin"
        size = 0 if i % 97 == 0 else (3 * MiB + i if i % 250 == 1 else rnd.randrange(1, 9000))
        files[rel] = rnd.randbytes(size)
    for n, (rel, data) in enumerate(files.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        stamp = BASE_TIME + n * 31_337
        os.utime(path, (stamp, stamp))
    return files


def copied(proc) -> list[str]:
    return COPIED.findall(proc.stderr)


def lsl(rclone: Rclone, where: str) -> list[str]:
    return sorted(rclone.run("lsl", where).stdout.splitlines())


@BOTH_SERVERS
@pytest.mark.parametrize("vendor", sorted(VENDOR_HASH))
def test_rclone_sync_keeps_times_and_checks_by_hash(server, vendor, tmp_path):
    rclone = Rclone(server, tmp_path / "rclone")
    rclone.env["RCLONE_CONFIG_HFDAV_VENDOR"] = vendor  # overrides the config file's vendor = other
    src = tmp_path / "src"
    files = make_tree(src)
    remote = Rclone.REMOTE + "tree"
    algo, hashsum = VENDOR_HASH[vendor]

    first = rclone.run("sync", str(src), remote, "--stats-one-line", "-v", "--transfers", "8")
    assert len(copied(first)) == N_FILES, first.stderr[-3000:]
    second = rclone.run("sync", str(src), remote, "--stats-one-line", "-v")
    assert copied(second) == [], second.stderr[-3000:]
    assert lsl(rclone, remote) == lsl(rclone, str(src))

    # hashes the server computed, as rclone reads them, for every file
    listed = dict(line.split("  ", 1)[::-1] for line in rclone.run(hashsum, remote).stdout.splitlines())
    assert listed == {rel: hashlib.new(algo, data).hexdigest() for rel, data in files.items()}
    proc = rclone.run("check", str(src), remote)
    assert f"{N_FILES} matching files" in proc.stderr and "could not be checked" not in proc.stderr, proc.stderr

    # the check compares content, not sizes or times: same size, same time, other bytes
    rel = "dir05/sub2/file 0005.bin"
    changed = bytearray(files[rel])
    changed[len(changed) // 2] ^= 0xFF
    stamp = str(int((src / rel).stat().st_mtime))
    r = requests.put(server.url_for(f"tree/{rel}"), data=bytes(changed), auth=server.auth,
                     headers={"X-OC-Mtime": stamp}, timeout=60)  # fmt: skip
    assert r.status_code == 204 and r.headers.get("X-OC-Mtime") == "accepted"
    proc = rclone.run("check", str(src), remote, "--combined", "-", check=False)
    differing = [line[2:] for line in proc.stdout.splitlines() if line.startswith("* ")]
    assert proc.returncode != 0 and differing == [rel], proc.stdout + proc.stderr
    # ... and sync repairs it (equal size and time, different hash: uploaded again)
    repaired = rclone.run("sync", str(src), remote, "--checksum", "-v")
    assert copied(repaired) == [rel], repaired.stderr[-3000:]

    # a time changed alone: that file, and only that one, goes up again with its new time
    touched = src / "dir07/sub1/file 0007.bin"
    os.utime(touched, (BASE_TIME - 86400, BASE_TIME - 86400))
    third = rclone.run("sync", str(src), remote, "-v")
    assert copied(third) == ["dir07/sub1/file 0007.bin"], third.stderr[-3000:]
    assert lsl(rclone, remote) == lsl(rclone, str(src))
    assert copied(rclone.run("sync", str(src), remote, "-v")) == []
