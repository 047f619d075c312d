"""Slowloris on the request *body*: clients that send a complete request head, then trickle
its body a byte a second. The head gate (cheroot and gunicorn) keeps slow heads away from the
request threads, but a body is read in a request thread, also when it is only read to be thrown
away before an error answer (a 401 to a client without credentials). Such a drain must be
bounded in time, or a few dozen clients without any password hold every thread.
"""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
import requests

from tests.e2e.support import BOTH_KINDS, require_tool
from tests.hostile.support import OTHER_CLIENT, closed_by_peer, connect

pytestmark = pytest.mark.e2e

#: More trickling clients than the 16 request threads of the test servers.
SLOW_BODIES = 40
#: A normal client is answered within this while they trickle (generous: the drains of the
#: first ones end after a few seconds at most, then the threads are free for good).
ANSWER_WITHIN_S = 10.0


def _trickling(host: str, port: int, path: str):
    """SLOW_BODIES unauthenticated PUTs under ``path`` that send a byte a second (from another
    address than the normal client); returns the sockets and the event that stops them."""
    socks = []
    stop = threading.Event()

    def trickle():
        while not stop.wait(1.0):
            for s in socks:
                with contextlib.suppress(OSError):
                    s.send(b"x")

    for i in range(SLOW_BODIES):
        s = connect(host, port, source=OTHER_CLIENT)
        s.sendall(f"PUT {path}slow{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode())
        socks.append(s)
    threading.Thread(target=trickle, daemon=True).start()
    time.sleep(2)  # every thread that took one of them is draining by now
    return socks, stop


def _answered_in_time(url: str, auth) -> None:
    started = time.monotonic()
    r = requests.get(url, auth=auth, timeout=ANSWER_WITHIN_S + 5)
    assert r.status_code == 200
    assert time.monotonic() - started < ANSWER_WITHIN_S


@pytest.mark.slow
@BOTH_KINDS
def test_trickled_bodies_without_credentials_do_not_hold_the_threads(server_factory, kind):
    """40 unauthenticated PUTs announcing 1,000 bytes (small enough to be drained before the
    401) that send one byte a second: a normal GET is answered, and the trickling connections
    are closed by the server instead of being read for as long as they trickle."""
    srv = server_factory.start(kind, env={"HFDAV_MAX_CONNECTIONS_PER_CLIENT": "0"})
    requests.put(srv.url_for("f.txt"), data=b"hello", auth=srv.auth, timeout=30).raise_for_status()
    socks, stop = _trickling(srv.host, srv.port, "/")
    try:
        _answered_in_time(srv.url_for("f.txt"), srv.auth)
        deadline = time.monotonic() + 30  # bounded; they would trickle for 1,000 s
        while sum(closed_by_peer(s) for s in socks) < SLOW_BODIES and time.monotonic() < deadline:
            time.sleep(0.5)
        assert sum(closed_by_peer(s) for s in socks) == SLOW_BODIES, "trickling bodies were read on and on"
    finally:
        stop.set()
        for s in socks:
            s.close()


@pytest.mark.slow
def test_trickled_bodies_through_nginx_do_not_hold_the_threads(tmp_path):
    """The container's path: nginx streams the trickle on to gunicorn, whose threads drained
    it (all of them held by 40 such clients before)."""
    require_tool("nginx")
    from tests.container.support import start_boot

    booted = start_boot(tmp_path)
    try:
        requests.put(booted.url_for("f.txt"), data=b"hello", auth=booted.auth, timeout=30).raise_for_status()
        socks, stop = _trickling(booted.host, booted.port, "/dav/")
        try:
            _answered_in_time(booted.url_for("f.txt"), booted.auth)
        finally:
            stop.set()
            for s in socks:
                s.close()
    finally:
        assert booted.shutdown() == 0
