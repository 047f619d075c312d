"""What a request costs the metadata database: statements and transactions per small PUT, GET
and PROPFIND, counted on the engine while the whole WSGI stack answers in-process."""

from __future__ import annotations

import base64
import io
import sys

import pytest
from sqlalchemy import event

from gateway.app import build_gateway
from gateway.config import load_settings
from gateway.dav import propfind

AUTH = "Basic " + base64.b64encode(b"admin:pw").decode()


class Counter:
    def __init__(self, engine):
        self.statements: list[str] = []
        self.transactions = 0
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "begin", self._begin)

    def _statement(self, conn, cursor, statement, params, context, executemany):
        if not statement.startswith("BEGIN"):
            self.statements.append(statement)

    def _begin(self, conn):
        self.transactions += 1

    def reset(self) -> None:
        self.statements.clear()
        self.transactions = 0


@pytest.fixture
def gateway(tmp_path):
    gw = build_gateway(load_settings({"HFDAV_DATA_DIR": str(tmp_path / "data"), "SYS_TOKEN": "pw"}))
    try:
        yield gw, Counter(gw.files.repo.engine)
    finally:
        gw.close()


def call(gw, method: str, path: str, body: bytes = b"", **headers) -> tuple[str, bytes]:
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "localhost", "HTTP_AUTHORIZATION": AUTH,
        "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
        "CONTENT_LENGTH": str(len(body)),
    }  # fmt: skip
    for key, value in headers.items():
        environ["HTTP_" + key.upper()] = value
    status = []
    answer = gw.wsgi_app(environ, lambda s, h, exc=None: status.append(s))
    try:
        data = b"".join(answer)
    finally:
        getattr(answer, "close", lambda: None)()
    return status[0], data


def test_new_file_put_reads_each_entry_once(gateway):
    gw, count = gateway
    assert call(gw, "MKCOL", "/d")[0].startswith("201")
    count.reset()
    assert call(gw, "PUT", "/d/new.bin", b"x" * 4096)[0].startswith("201")
    node_reads = [s for s in count.statements if s.startswith("SELECT nodes.")]
    # the target with its parent before WsgiDAV's checks, then again inside the write
    # transaction (which must see the current state); no read-back after the write
    assert len(node_reads) == 2, node_reads
    assert len(count.statements) <= 13, count.statements
    assert count.transactions <= 4
    assert call(gw, "GET", "/d/new.bin")[1] == b"x" * 4096


def test_overwrite_put_and_get(gateway):
    gw, count = gateway
    call(gw, "PUT", "/f.bin", b"a" * 100)
    count.reset()
    assert call(gw, "PUT", "/f.bin", b"b" * 100)[0].startswith("204")
    assert count.transactions <= 4
    count.reset()
    status, body = call(gw, "GET", "/f.bin")
    assert status.startswith("200") and body == b"b" * 100
    assert len(count.statements) == 1 and count.transactions == 1  # node and extents together


@pytest.mark.parametrize("page_size", [1000, 7])
def test_propfind_depth1_costs_do_not_grow_with_the_folder(gateway, monkeypatch, page_size):
    gw, count = gateway
    monkeypatch.setattr(propfind, "PAGE_SIZE", page_size)
    call(gw, "MKCOL", "/big")
    costs = {}
    made = 0
    for n in (20, 40):
        for i in range(made, n):
            assert call(gw, "PUT", f"/big/f{i:03d}.txt", b"x")[0].startswith("201")
        made = n
        call(gw, "PROPPATCH", "/big/f001.txt",
             b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop>'
             b"<Z:p>v</Z:p></D:prop></D:set></D:propertyupdate>")  # fmt: skip
        count.reset()
        status, body = call(gw, "PROPFIND", "/big", Depth="1")
        assert status.startswith("207") and body.count(b"<D:response") == n + 1
        costs[n] = len(count.statements)
    pages = {n: -(-n // page_size) for n in costs}
    # a fixed number of statements, plus two per page (members, their dead properties)
    assert costs[40] - costs[20] == 2 * (pages[40] - pages[20]), costs
    assert costs[20] <= 8 + 2 * pages[20], costs
