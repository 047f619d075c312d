"""Small files kept in the small-object database (gateway.store.inline) are there after the
server is killed (SIGKILL) right after answering their PUTs, byte for byte, next to a file
large enough to live in the object files; overwrites and deletes likewise."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from gateway.store.inline import INLINE_MAX
from tests.e2e.support import basic_header

pytestmark = pytest.mark.e2e


def _put_then_kill(server, bodies: dict[str, bytes]) -> None:
    """PUT every body on one keep-alive connection, each answer read; SIGKILL right after the
    last answer, before anything else happens."""
    sock = socket.create_connection((server.host, server.port), timeout=60)
    try:
        reader = sock.makefile("rb")
        for name, body in bodies.items():
            head = f"PUT /{name} HTTP/1.1\r\nHost: x\r\n{basic_header(server)}\r\nContent-Length: {len(body)}\r\n\r\n"
            sock.sendall(head.encode() + body)
            status = reader.readline()
            assert status.split()[1] in (b"201", b"204"), status
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            reader.read(length)
        server.proc.kill()
        server.proc.wait(30)
    finally:
        sock.close()


def test_small_puts_survive_sigkill_right_after_the_answer(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    first = server_factory.start("cheroot", data_dir=data_dir)
    bodies = {f"f{i}.bin": os.urandom(4096 + i) for i in range(40)}
    bodies["empty.txt"] = b""
    bodies["edge.bin"] = os.urandom(INLINE_MAX)
    bodies["large.bin"] = os.urandom(3 * INLINE_MAX + 1)
    _put_then_kill(first, bodies)

    second = server_factory.start("cheroot", data_dir=data_dir, password=first.password)
    with second.session() as s:
        for name, body in bodies.items():
            r = s.get(second.url_for(name), timeout=30)
            assert r.status_code == 200, name
            assert r.content == body, name
        # overwrite and delete, killed again right after
        changed = {"f0.bin": os.urandom(5000), "large.bin": os.urandom(6000)}
        assert s.delete(second.url_for("f1.bin"), timeout=30).status_code == 204
    _put_then_kill(second, changed)

    third = server_factory.start("cheroot", data_dir=data_dir, password=first.password)
    with third.session() as s:
        for name, body in {**bodies, **changed}.items():
            r = s.get(third.url_for(name), timeout=30)
            if name == "f1.bin":
                assert r.status_code == 404
                continue
            assert r.status_code == 200 and r.content == body, name
    assert (data_dir / "small-objects.sqlite").exists()


def test_fsck_finds_small_objects_clean(server_factory, tmp_path):
    """The consistency check sees the objects of the database as stored ones."""
    data_dir = tmp_path / "data"
    server = server_factory.start("cheroot", data_dir=data_dir)
    with server.session() as s:
        for i in range(5):
            assert s.put(server.url_for(f"s{i}.txt"), data=os.urandom(1000), timeout=30).status_code == 201
    assert server.stop() is None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HFDAV_", "HF_"))}
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "fsck", "--data-dir", str(data_dir)],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
