"""Administrators list and break locks: ``hfdav locks`` next to a running server, and the admin
API (read-write users only)."""

from __future__ import annotations

import os
import subprocess
import sys

import requests

from tests.hostile import test_locks as hostile
from tests.hostile.test_locks import ADMIN, BOB, dav, lock

server = hostile.server  # the same in-process server (users admin, bob read-write, reader read-only)

READER = ("reader", "rpw")
API = "/.hfdav-admin/locks"


def hfdav(data_dir, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, HFDAV_LOG_LEVEL="WARNING")
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "locks", *args, "--data-dir", str(data_dir)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_cli_lists_and_breaks_locks_while_the_server_runs(server):
    base, gw = server
    data_dir = gw.settings.data_dir
    assert dav("MKCOL", base + "/proj").status_code == 201
    assert dav("PUT", base + "/proj/a b.txt", data=b"x").status_code == 201
    r = lock(base + "/proj/", auth=BOB)  # depth infinity, Timeout: Infinite
    assert r.status_code == 200
    token = r.headers["Lock-Token"].strip("<>")
    assert dav("PUT", base + "/proj/a b.txt", data=b"y").status_code == 423

    out = hfdav(data_dir, "list")
    assert out.returncode == 0, out.stderr
    assert token in out.stdout and "/proj" in out.stdout and "user=bob" in out.stdout

    assert hfdav(data_dir, "break", token).returncode == 0
    assert hfdav(data_dir, "break", token).returncode == 1  # gone already
    assert dav("PUT", base + "/proj/a b.txt", data=b"y").status_code == 204  # the server sees it at once

    # break-path: the locks on a path, or with --all also below it (paths decoded or encoded)
    t1 = lock(base + "/proj/a%20b.txt", auth=BOB, depth="0").headers["Lock-Token"].strip("<>")
    t2 = lock(base + "/proj/", auth=BOB, depth="0").headers["Lock-Token"].strip("<>")
    out = hfdav(data_dir, "break-path", "/proj")
    assert out.returncode == 0 and t2 in out.stdout and t1 not in out.stdout
    out = hfdav(data_dir, "break-path", "/proj", "--all")
    assert out.returncode == 0 and t1 in out.stdout, out
    assert gw.repo.all_locks() == []
    assert hfdav(data_dir, "break").returncode == 2


def test_admin_api_lists_and_breaks_locks(server):
    base, gw = server
    assert dav("PUT", base + "/doc.txt", data=b"x").status_code == 201
    token = lock(base + "/doc.txt", auth=BOB, depth="0").headers["Lock-Token"].strip("<>")

    assert requests.get(base + API, timeout=10).status_code == 401
    assert requests.get(base + API, auth=("bob", "wrong"), timeout=10).status_code == 401
    assert requests.get(base + API, auth=READER, timeout=10).status_code == 403
    assert requests.delete(f"{base}{API}/{token}", auth=READER, timeout=10).status_code == 403

    r = requests.get(base + API, auth=ADMIN, timeout=10)
    assert r.status_code == 200
    (info,) = r.json()["locks"]
    assert info["token"] == token and info["path"] == "/doc.txt" and info["user"] == "bob"
    assert 0 < info["expires_in"] <= 3600

    assert requests.delete(f"{base}{API}/{token}", auth=ADMIN, timeout=10).status_code == 204
    assert requests.delete(f"{base}{API}/{token}", auth=ADMIN, timeout=10).status_code == 404
    assert dav("PUT", base + "/doc.txt", data=b"y").status_code == 204

    token = lock(base + "/doc.txt", auth=BOB, depth="0").headers["Lock-Token"].strip("<>")
    r = requests.delete(base + API, params={"path": "/doc.txt"}, auth=BOB, timeout=10)
    assert r.status_code == 200 and r.json() == {"broken": [token]}
    assert requests.delete(base + API, auth=BOB, timeout=10).status_code == 400
    assert requests.get(base + API, auth=BOB, timeout=10).json() == {"locks": []}
