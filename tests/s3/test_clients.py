"""Real S3 clients against the API: rclone's S3 backend and the AWS CLI (each skipped, saying
why, when the tool is not installed)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from tests.s3.conftest import WRITER

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MiB = 1 << 20
BASE_TIME = 1_577_836_800  # 2020-01-01


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (rclone: apt-get install rclone; aws: pip install awscli)")
    return path


def clean_env(**extra) -> dict[str, str]:
    """The caller's environment without AWS_* settings (a CA bundle or profile would apply)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(extra)
    return env


def make_tree(root) -> dict[str, bytes]:
    rnd = random.Random(5)
    files = {}
    for i in range(40):
        rel = f"d{i % 4}/s{i % 3}/file {i:02d}.bin"
        files[rel] = rnd.randbytes(0 if i % 13 == 0 else rnd.randrange(1, 20000))
    files["big/multi.bin"] = rnd.randbytes(12 * MiB + 7)  # beyond the upload cutoffs below: multipart
    for n, (rel, data) in enumerate(files.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (BASE_TIME + n * 1001, BASE_TIME + n * 1001))
    return files


def test_rclone_copy_check_sync_twice(served, tmp_path):
    rclone = tool("rclone")
    base, _gw = served
    src = tmp_path / "src"
    files = make_tree(src)
    env = clean_env(RCLONE_CONFIG_HF_TYPE="s3", RCLONE_CONFIG_HF_PROVIDER="Other",
                    RCLONE_CONFIG_HF_ENDPOINT=base + "/s3", RCLONE_CONFIG_HF_ACCESS_KEY_ID=WRITER[0],
                    RCLONE_CONFIG_HF_SECRET_ACCESS_KEY=WRITER[1], RCLONE_CONFIG_HF_FORCE_PATH_STYLE="true",
                    RCLONE_CONFIG_HF_REGION="us-east-1", RCLONE_CONFIG_HF_UPLOAD_CUTOFF="5M",
                    RCLONE_CONFIG_HF_CHUNK_SIZE="5M", RCLONE_CONFIG=str(tmp_path / "none.conf"))  # fmt: skip

    def run(*args):
        p = subprocess.run([rclone, *args, "-v"], env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        return p

    run("mkdir", "hf:rc")
    first = run("copy", str(src), "hf:rc/tree")
    assert len(re.findall(r": Copied \(new\)", first.stderr)) == len(files)
    run("check", str(src), "hf:rc/tree")  # sizes and MD5s (the multipart one's from its metadata)
    for _ in range(2):
        again = run("sync", str(src), "hf:rc/tree")
        assert "Copied" not in again.stderr and "Updated modification time" not in again.stderr, again.stderr
    listed = run("lsl", "hf:rc/tree").stdout.splitlines()
    assert len(listed) == len(files)
    for line in listed:
        size, _day, _time, rel = line.strip().split(None, 3)
        assert int(size) == len(files[rel])
    # the same bytes over WebDAV
    r = requests.get(base + "/rc/tree/big/multi.bin", auth=WRITER)
    assert hashlib.md5(r.content).hexdigest() == hashlib.md5(files["big/multi.bin"]).hexdigest()
    # a changed file is the only one sent again; a removed one is deleted
    (src / "d1/s1/file 01.bin").write_bytes(b"changed")
    (src / "d2/s2/file 02.bin").unlink()
    third = run("sync", str(src), "hf:rc/tree")
    assert re.findall(r"INFO  : (.+): Copied", third.stderr) == ["d1/s1/file 01.bin"]
    assert "d2/s2/file 02.bin: Deleted" in third.stderr
    run("check", str(src), "hf:rc/tree")


def test_aws_cli_cp_sync_and_s3api(served, tmp_path):
    aws = tool("aws")
    base, _gw = served
    src = tmp_path / "src"
    files = make_tree(src)
    none = str(tmp_path / "none")
    env = clean_env(AWS_ACCESS_KEY_ID=WRITER[0], AWS_SECRET_ACCESS_KEY=WRITER[1], AWS_DEFAULT_REGION="us-east-1",
                    AWS_CONFIG_FILE=none, AWS_SHARED_CREDENTIALS_FILE=none)  # fmt: skip

    def run(*args, ok=(0,)):
        p = subprocess.run([aws, "--endpoint-url", base + "/s3", *args], env=env, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
        assert p.returncode in ok, (p.stdout[-2000:], p.stderr[-3000:])
        return p

    run("s3", "mb", "s3://cli")
    run("s3", "cp", str(src / "big/multi.bin"), "s3://cli/one/multi.bin")  # multipart (8 MiB threshold)
    head = run("s3api", "head-object", "--bucket", "cli", "--key", "one/multi.bin").stdout
    assert f'"ContentLength": {len(files["big/multi.bin"])}' in head and '-2\\""' in head
    run("s3", "cp", "s3://cli/one/multi.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == files["big/multi.bin"]
    first = run("s3", "sync", str(src), "s3://cli/tree")
    assert first.stdout.count("upload:") == len(files)
    second = run("s3", "sync", str(src), "s3://cli/tree")
    assert "upload:" not in second.stdout, second.stdout
    listed = run("s3", "ls", "--recursive", "s3://cli/tree/").stdout.splitlines()
    assert len(listed) == len(files)
    down = tmp_path / "down"
    run("s3", "sync", "s3://cli/tree", str(down))
    for rel, data in files.items():
        assert (down / rel).read_bytes() == data, rel
    run("s3", "rm", "--recursive", "s3://cli/tree")
    # nothing left, not even the folders (aws answers 1 for an empty listing)
    assert run("s3", "ls", "--recursive", "s3://cli/tree/", ok=(0, 1)).stdout.strip() == ""


NODE_DIR = Path(__file__).parent / "node"


def test_aws_sdk_for_javascript(served):
    """The AWS SDK for JavaScript v3 (its own SigV4, aws-chunked streams with checksum trailers,
    multipart, copy, batch delete), pinned by tests/s3/node/package-lock.json."""
    node = tool("node")
    if not (NODE_DIR / "node_modules" / "@aws-sdk" / "client-s3").exists():
        npm = tool("npm")
        proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        if proc.returncode != 0:
            pytest.skip(f"npm ci in {NODE_DIR} failed (registry unreachable?): {proc.stderr.strip()[-500:]}")
    base, _gw = served
    env = clean_env(ENDPOINT=base + "/s3", KEY=WRITER[0], SECRET=WRITER[1])
    proc = subprocess.run([node, str(NODE_DIR / "driver.mjs")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["putEtag"] == f'"{out["smallMd5"]}"'
    assert out["bigHead"] == {"etag": f'"{out["bigMd5"]}"', "length": 6 * MiB + 11}
    assert out["rangeOk"] and out["multipartOk"] and out["copyOk"]
    assert out["prefixes"] == ["a/"]
    assert out["multipartEtag"].endswith('-2"')
    assert out["keys"] == ["a/big.bin", "a/hello.txt", "c/copy.txt", "m/joined.bin"]
    assert out["deleted"] == 4 and out["bucketDeleted"]
