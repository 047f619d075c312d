"""Ranged reads of the Hub store over urllib3, against the Hub emulator: the environment's
proxy is used (and NO_PROXY skips it), the token never reaches the storage origin, transient
answers and dropped connections are retried, and a body cut short is an error, never a short
read."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import os
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gateway.errors import IntegrityError, ObjectMissing, StoreError
from gateway.store.hub import Add, HubClient, HubError, Upload
from tests.hub_emulator import HubEmulator
from tests.hub_fixtures import REPO, STORAGE_READS, TOKEN, emulator_fixture  # noqa: F401  (the emulator fixture)

pytestmark = pytest.mark.timeout(120)
MiB = 1 << 20


class _Proxy(http.server.ThreadingHTTPServer):
    """A forwarding HTTP proxy that records (method, absolute URL, had Authorization)."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.seen: list[tuple[str, str, bool]] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _forward(self):
        self.server.seen.append((self.command, self.path, "Authorization" in self.headers))
        target = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        conn.request(self.command, target.path + (f"?{target.query}" if target.query else ""), body, headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_POST = do_PUT = do_HEAD = _forward


@pytest.fixture
def stored(emulator: HubEmulator, tmp_path: Path) -> tuple[HubClient, str, str, bytes]:
    """A client and an LFS file in a commit: (client, path in repo, head, content)."""
    client = HubClient(REPO, token=TOKEN, endpoint=emulator.url)
    client.ensure_repo()
    data = os.urandom(3 * MiB + 5)
    src = tmp_path / "blob"
    src.write_bytes(data)
    done = client.upload([Upload("objects/blob.bin", src, hashlib.sha256(data).hexdigest())])[0]
    assert done.lfs
    head = client.commit([Add("objects/blob.bin", sha256=done.sha256, size=done.size)], [], message="m", parent=None)
    return client, "objects/blob.bin", head, data


def _read_range(client: HubClient, path: str, head: str, offset: int, length: int | None) -> bytes:
    with client.open_range(path, offset, length, revision=head) as stream:
        out = bytearray()
        while block := stream.read(1 << 20):
            out += block
        return bytes(out)


def test_reads_go_through_the_environment_proxy_and_drop_the_token_on_the_storage_hop(
    stored, emulator: HubEmulator, monkeypatch: pytest.MonkeyPatch
):
    client, path, head, data = stored
    proxy = _Proxy()
    try:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "")
        client.reader.close()  # forget pools made without the proxy
        assert _read_range(client, path, head, MiB, 1000) == data[MiB : MiB + 1000]
        gets = [(url, auth) for method, url, auth in proxy.seen if method == "GET"]
        resolve = [g for g in gets if "/resolve/" in g[0]]
        storage = [g for g in gets if "/resolve/" not in g[0]]
        assert resolve and all(auth for _, auth in resolve), gets  # the Hub gets the token
        assert storage and not any(auth for _, auth in storage), gets  # the storage origin does not

        proxy.seen.clear()
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert _read_range(client, path, head, 0, None) == data
        assert not [s for s in proxy.seen if s[0] == "GET"], proxy.seen
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_transient_answers_and_dropped_connections_are_retried(stored, emulator: HubEmulator, hub_transport: str):
    client, path, head, data = stored
    emulator.faults.add(method="GET", path=r"/resolve/", kind="status", status=503, times=1)
    emulator.faults.add(method="GET", path=STORAGE_READS[hub_transport], kind="drop_before", times=1)
    emulator.faults.add(method="GET", path=STORAGE_READS[hub_transport], kind="status", status=429, reset=1, times=1)
    assert _read_range(client, path, head, 0, None) == data
    assert not emulator.faults.rules, "every fault fired"


def test_a_lasting_failure_is_a_transient_hub_error(stored, emulator: HubEmulator, hub_transport: str):
    client, path, head, _ = stored
    emulator.faults.add(method="GET", path=STORAGE_READS[hub_transport], kind="status", status=500, times=None)
    with pytest.raises(HubError) as err:
        _read_range(client, path, head, 0, 10)
    assert err.value.status == 500 and err.value.transient


def test_missing_files_and_revisions(stored):
    client, _, head, _ = stored
    with pytest.raises(ObjectMissing):
        _read_range(client, "objects/nope.bin", head, 0, 10)
    with pytest.raises(HubError) as err:
        _read_range(client, "objects/blob.bin", "f" * 40, 0, 10)
    assert err.value.status == 404 and err.value.transient


def test_a_body_cut_short_is_an_error(stored, emulator: HubEmulator, monkeypatch: pytest.MonkeyPatch):
    client, path, head, data = stored
    # the storage origin sends a correct Content-Length, then closes after part of the body
    from tests.hub_emulator import httpio

    real = httpio.file_response

    from tests.hub_emulator import xet

    real_xet = xet.file_bytes_response

    def cut(resp):
        if (resp.file is not None or resp.stream is not None) and resp.length > MiB:
            resp.length -= MiB // 2  # the part sent is short...
            resp.headers["Content-Length"] = str(resp.length + MiB // 2)  # ...of what was announced
            if resp.stream is not None:
                stream, length = resp.stream, resp.length

                def short():
                    left = length
                    for piece in stream():
                        if left <= 0:
                            break
                        yield piece[:left]
                        left -= len(piece[:left])

                resp.stream = short
        return resp

    def truncated(*args, **kwargs):
        return cut(real(*args, **kwargs))

    monkeypatch.setattr("tests.hub_emulator.lfs.file_response", truncated)
    monkeypatch.setattr("tests.hub_emulator.xet.file_bytes_response", lambda *a, **k: cut(real_xet(*a, **k)))
    with pytest.raises(StoreError) as err:
        _read_range(client, path, head, 0, None)
    assert isinstance(err.value, (HubError, IntegrityError))
    assert err.value.transient  # a retry may well succeed


# -- what the storage behind the redirect may answer --------------------------------------------
def _resolves(emulator: HubEmulator) -> int:
    return emulator.stats["resolve_gets"]


def test_an_expired_signed_url_is_resolved_again(stored, emulator: HubEmulator, hub_transport: str):
    client, path, head, data = stored
    emulator.faults.add(method="GET", path=STORAGE_READS[hub_transport], kind="status", status=403,
                        message="Request has expired", times=1)  # fmt: skip
    before = _resolves(emulator)
    assert _read_range(client, path, head, 1000, 5000) == data[1000:6000]
    assert not emulator.faults.rules and _resolves(emulator) - before == 2


def test_a_refusal_that_lasts_is_an_error_after_one_new_resolve(stored, emulator: HubEmulator, hub_transport: str):
    client, path, head, _ = stored
    emulator.faults.add(method="GET", path=STORAGE_READS[hub_transport], kind="status", status=403, times=None)
    before = _resolves(emulator)
    with pytest.raises(HubError) as err:
        _read_range(client, path, head, 0, 10)
    assert err.value.status == 403 and _resolves(emulator) - before == 2


def test_reading_to_the_end_from_the_end_is_empty(stored):
    """The storage answers 416 to ``bytes=<size>-``: there is nothing to read, not an error."""
    client, path, head, data = stored
    assert _read_range(client, path, head, len(data), None) == b""
    with pytest.raises(HubError) as err:  # a range that starts beyond the end is still refused
        _read_range(client, path, head, len(data) + 10, 5)
    assert err.value.status == 416


def _edit_range_answers(monkeypatch: pytest.MonkeyPatch, edit) -> None:
    """Let ``edit(headers)`` change the storage's ranged answers (LFS and Xet alike)."""
    from tests.hub_emulator import lfs, xet

    real_lfs, real_xet = lfs.file_response, xet.file_bytes_response

    def patched(real):
        def answer(*args, **kwargs):
            resp = real(*args, **kwargs)
            if resp.status == 206:
                edit(resp.headers)
            return resp

        return answer

    monkeypatch.setattr("tests.hub_emulator.lfs.file_response", patched(real_lfs))
    monkeypatch.setattr("tests.hub_emulator.xet.file_bytes_response", patched(real_xet))


def test_a_partial_answer_without_content_range_reads_to_its_end(stored, monkeypatch: pytest.MonkeyPatch):
    client, path, head, data = stored
    _edit_range_answers(monkeypatch, lambda headers: headers.pop("Content-Range", None))
    assert _read_range(client, path, head, 100, None) == data[100:]
    assert _read_range(client, path, head, 7, 1000) == data[7:1007]


def test_a_partial_answer_of_other_bytes_is_an_integrity_error(stored, monkeypatch: pytest.MonkeyPatch):
    client, path, head, data = stored

    def shift(headers):
        start_end, size = headers["Content-Range"].split(" ")[1].split("/")
        start, end = (int(x) for x in start_end.split("-"))
        headers["Content-Range"] = f"bytes {start + 1}-{end + 1}/{size}"

    _edit_range_answers(monkeypatch, shift)
    with pytest.raises(IntegrityError):
        _read_range(client, path, head, 100, 1000)
