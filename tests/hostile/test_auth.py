"""Hostile and careless clients against the login, on real servers over loopback: password
guessing, replayed Digest headers and forged nonces, malformed Authorization headers, what
/healthz tells strangers, what the log tells fail2ban, forged X-Forwarded-For, the user
settings, and clients that only answer a Basic challenge.

Different client addresses are real: Linux routes all of 127.0.0.0/8 to loopback, so a socket
bound to 127.0.0.5 reaches a server on 127.0.0.1 from that address.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import requests
from requests.auth import HTTPDigestAuth

from tests.e2e.support import BOTH_KINDS, _hfdav_command, free_port

pytestmark = pytest.mark.e2e

DOCS = Path(__file__).resolve().parents[2] / "docs" / "AUTH.md"
PLACEHOLDER = "change-me-to-a-long-random-password"


def call(server, method: str, path: str = "/", headers: dict | None = None, body: bytes | None = None, *,
         source: str = "127.0.0.1", conn: http.client.HTTPConnection | None = None):  # fmt: skip
    """One request from ``source``; (status, headers, body). ``conn`` reuses a connection."""
    own = conn is None
    conn = conn or http.client.HTTPConnection(server.host, server.port, timeout=30, source_address=(source, 0))
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body or b"")
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        if own:
            conn.close()


def basic(user: str | bytes, password: str | bytes) -> str:
    raw = (user if isinstance(user, bytes) else user.encode()) + b":"
    raw += password if isinstance(password, bytes) else password.encode()
    return "Basic " + base64.b64encode(raw).decode()


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def digest(user, password, nonce, method, uri, nc="00000001", cnonce="0a1b2c3d") -> str:
    """The Authorization header a Digest client computes (RFC 7616, MD5, qop=auth)."""
    response = _md5(f"{_md5(f'{user}:hfdav:{password}')}:{nonce}:{nc}:{cnonce}:auth:{_md5(f'{method}:{uri}')}")
    return (f'Digest username="{user}", realm="hfdav", nonce="{nonce}", uri="{uri}", algorithm=MD5, '
            f'response="{response}", qop=auth, nc={nc}, cnonce="{cnonce}"')  # fmt: skip


def fresh_nonce(server) -> str:
    status, headers, _ = call(server, "GET", "/")
    assert status == 401
    challenge = next(v for v in headers.get_all("WWW-Authenticate") if v.startswith("Digest "))
    return re.search(r'nonce="([^"]+)"', challenge).group(1)


def log_lines(server, pattern: str) -> list[str]:
    return [line for line in server.log_text().splitlines() if re.search(pattern, line)]


# -- guessing ------------------------------------------------------------------------------------


@pytest.mark.slow
@BOTH_KINDS
def test_2000_wrong_passwords_get_429_after_a_few(server_factory, kind):
    server = server_factory.start(kind, env={"HFDAV_LOGIN_FAILURES": "6"})
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30, source_address=("127.0.0.3", 0))
    statuses: dict[int, int] = {}
    retry_after = set()
    for i in range(2000):
        status, headers, _ = call(server, "GET", "/", {"Authorization": basic("admin", f"guess-{i}")}, conn=conn)
        statuses[status] = statuses.get(status, 0) + 1
        if status == 429:
            retry_after.add(int(headers["Retry-After"]))
    conn.close()
    assert statuses.get(401, 0) == 6 and statuses.get(429, 0) == 1994, statuses
    assert min(retry_after) >= 1
    # blocked means not checked: the right password from that address is refused too
    assert call(server, "GET", "/", {"Authorization": basic("admin", server.password)}, source="127.0.0.3")[0] == 429
    # the user's own address, where admin logged in before, is not locked out by the guesser
    assert call(server, "GET", "/", {"Authorization": basic("admin", server.password)})[0] == 200
    assert len(log_lines(server, r"login failed: client=127\.0\.0\.3 user=admin scheme=basic")) == 6
    assert log_lines(server, r"login throttled: client=127\.0\.0\.3 user=admin retry_after=\d+s")


def test_rotating_names_and_addresses_are_both_throttled(server_factory):
    env = {"HFDAV_LOGIN_FAILURES": "4", "HFDAV_USERS": "reader:reader-pass-1:ro"}
    server = server_factory.start("cheroot", env=env)
    # one address, a new made-up name every time
    got = [call(server, "GET", "/", {"Authorization": basic(f"user{i}", "x")}, source="127.0.0.4")[0] for i in range(8)]
    assert got == [401] * 4 + [429] * 4, got
    # one user, a new address every time
    wrong = {"Authorization": basic("reader", "x")}
    got = [call(server, "GET", "/", wrong, source=f"127.0.1.{i}")[0] for i in range(8)]
    assert got == [401] * 4 + [429] * 4, got
    assert call(server, "GET", "/", {"Authorization": basic("reader", "reader-pass-1")}, source="127.0.2.1")[0] == 429
    # other users and addresses are not affected
    assert call(server, "GET", "/", {"Authorization": basic("admin", server.password)}, source="127.0.2.2")[0] == 200
    assert "user0" not in server.log_text() and "user7" not in server.log_text()


# -- Digest ----------------------------------------------------------------------------------------


@BOTH_KINDS
def test_captured_digest_header_does_not_replay(server_factory, kind):
    server = server_factory.start(kind)
    uri = "/doc.txt"
    header = digest("admin", server.password, fresh_nonce(server), "PUT", uri)
    assert call(server, "PUT", uri, {"Authorization": header}, b"original")[0] == 201
    for n in range(3):
        status, headers, _ = call(server, "PUT", uri, {"Authorization": header}, b"replayed %d" % n)
        assert status == 401, status
        assert "stale=true" in headers["WWW-Authenticate"]
    assert requests.get(server.url_for("doc.txt"), auth=server.auth, timeout=30).content == b"original"
    assert log_lines(server, r"digest nonce refused: client=127\.0\.0\.1 user=admin reason=nonce-replayed")


@BOTH_KINDS
def test_nonces_the_server_never_issued_or_too_old_are_refused(server_factory, kind):
    server = server_factory.start(kind)
    uri = "/doc.txt"
    assert requests.put(server.url_for("doc.txt"), data=b"original", auth=server.auth, timeout=30).status_code == 201
    wsgidav_style_2001 = base64.b64encode(b"978307200.0" + _md5("x").encode()).decode()
    made_up = base64.urlsafe_b64encode(bytes(36)).decode()
    from gateway.dav.digest import NonceBook, load_key  # a nonce signed with the server's key, issued in 2001

    signed_2001 = NonceBook(load_key(server.data_dir), clock=lambda: 978307200.0).issue()
    for nonce in (wsgidav_style_2001, made_up, signed_2001):
        status, headers, _ = call(server, "PUT", uri, {"Authorization": digest("admin", server.password, nonce, "PUT",
                                                                               uri)}, b"forged")  # fmt: skip
        assert status == 401, (nonce, status)
        assert "stale=true" in headers["WWW-Authenticate"]  # right password: retry with a fresh nonce
    assert requests.get(server.url_for("doc.txt"), auth=server.auth, timeout=30).content == b"original"
    # a real Digest client still works, nonce counts rising on one nonce
    session = requests.Session()
    session.auth = HTTPDigestAuth(server.user, server.password)
    for n in range(3):
        assert session.put(server.url_for("doc.txt"), data=b"v%d" % n, timeout=30).status_code == 204
    assert session.get(server.url_for("doc.txt"), timeout=30).content == b"v2"


# -- malformed headers ---------------------------------------------------------------------------------

MALFORMED = {
    "basic, nothing": "Basic",
    "basic, empty": "Basic ",
    "basic, bad base64": "Basic %%%notbase64",
    "basic, no colon": "Basic " + base64.b64encode(b"adminpassword").decode(),
    "basic, invalid utf-8": basic(b"\xff\xfeadmin", b"\xc3\x28"),
    "basic, empty name and password": basic("", ""),
    "basic, padding only": "Basic ====",
    "basic, long": "Basic " + "QUFB" * 1900,  # under the 8 KiB header line gunicorn allows
    "digest, nothing": "Digest",
    "digest, garbage": "Digest !!garbage!!",
    "digest, username only": 'Digest username="admin"',
    "digest, unterminated quote": 'Digest username="admin, realm="hfdav',
    "digest, no qop": 'Digest username="admin", realm="hfdav", nonce="abc", uri="/", response="0123"',
    "digest, bad nc": 'Digest username="admin", realm="hfdav", nonce="abc", uri="/", response="0", qop=auth, '
    'nc=zz, cnonce="c"',
    "digest, sha-512": 'Digest username="admin", realm="hfdav", nonce="abc", uri="/", response="0", qop=auth, '
    'nc=00000001, cnonce="c", algorithm=SHA-512',
    "other scheme": "Bearer abc.def.ghi",
    "no scheme": "=",
}


@BOTH_KINDS
def test_malformed_authorization_headers_get_401(server_factory, kind):
    server = server_factory.start(kind, env={"HFDAV_LOGIN_FAILURES": "1000"})
    got = {label: call(server, "GET", "/", {"Authorization": value})[0] for label, value in MALFORMED.items()}
    assert got == dict.fromkeys(MALFORMED, 401), got
    got = {label: call(server, "PUT", "/x.txt", {"Authorization": v}, b"x")[0] for label, v in MALFORMED.items()}
    assert got == dict.fromkeys(MALFORMED, 401), got
    assert "Traceback" not in server.log_text()
    assert call(server, "GET", "/", {"Authorization": basic("admin", server.password)})[0] == 200


# -- /healthz --------------------------------------------------------------------------------------


@BOTH_KINDS
def test_healthz_tells_strangers_only_ok_or_degraded(server_factory, kind):
    server = server_factory.start(kind)
    origin = server.url.rstrip("/")
    short = requests.get(origin + "/healthz", timeout=30)
    assert short.status_code == 200 and short.json() == {"status": "ok"}, short.text
    assert requests.get(origin + "/healthz", auth=(server.user, "wrong"), timeout=30).json() == {"status": "ok"}
    assert log_lines(server, r"login failed: client=127\.0\.0\.1 user=admin scheme=basic reason=wrong-password")
    full = requests.get(origin + "/healthz", auth=server.auth, timeout=30).json()
    assert full["status"] == "ok" and "version" in full and full["checks"]["store"]["kind"] == "InlineStore"
    assert requests.get(origin + "/metrics", timeout=30).status_code == 401
    assert requests.get(origin + "/metrics", auth=HTTPDigestAuth(*server.auth), timeout=30).status_code == 200


# -- logs, client addresses --------------------------------------------------------------------------


def fail2ban_regex() -> re.Pattern:
    """The failregex documented in docs/AUTH.md, with fail2ban's <HOST> as a named group."""
    block = DOCS.read_text().split("<!-- fail2ban-filter -->", 1)[1]
    line = re.search(r"^failregex = (.+)$", block, re.MULTILINE).group(1)
    return re.compile(line.replace("<HOST>", r"(?P<host>[0-9a-fA-F.:]+)"))


def test_failed_logins_are_logged_for_fail2ban_without_typed_names(server_factory):
    server = server_factory.start("cheroot", env={"HFDAV_TRUSTED_PROXIES": "127.0.0.1/32"})
    typed = "Tr0ub4dor&3-typed-as-the-name"
    assert call(server, "GET", "/", {"Authorization": basic(typed, "x")}, source="127.0.0.5")[0] == 401
    assert call(server, "GET", "/", {"Authorization": basic("admin", "wrong")}, source="127.0.0.5")[0] == 401
    header = digest("admin", "wrong", fresh_nonce(server), "GET", "/")
    assert call(server, "GET", "/", {"Authorization": header}, source="127.0.0.5")[0] == 401
    text = server.log_text()
    assert typed not in text and "Tr0ub4dor" not in text
    rx = fail2ban_regex()
    hosts = [m.group("host") for line in text.splitlines() if (m := rx.search(line))]
    assert hosts == ["127.0.0.5"] * 3, text[-3000:]
    assert log_lines(server, r"login failed: client=127\.0\.0\.5 user=\(unknown\) scheme=basic reason=unknown-user")
    server.wait_for_log(r"hfdav\.access: GET / 401 .* user=- client=127\.0\.0\.5$")


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(server_factory):
    server = server_factory.start("cheroot", env={"HFDAV_TRUSTED_PROXIES": "127.0.0.1/32"})
    forged = {"X-Forwarded-For": "198.51.100.8", "X-Real-IP": "198.51.100.9"}
    assert call(server, "GET", "/", {**forged, "Authorization": basic("admin", "x")}, source="127.0.0.6")[0] == 401
    assert not log_lines(server, r"198\.51\.100\.[89]")
    assert log_lines(server, r"login failed: client=127\.0\.0\.6 ")
    proxied = {"X-Forwarded-For": "203.0.113.50, 198.51.100.7", "Authorization": basic("admin", "x")}
    assert call(server, "GET", "/", proxied, source="127.0.0.1")[0] == 401
    assert log_lines(server, r"login failed: client=198\.51\.100\.7 ")
    server.wait_for_log(r"GET / 401 .* client=198\.51\.100\.7$")  # the access line follows the answer


@pytest.mark.slow
def test_client_address_and_throttle_through_the_containers_nginx(tmp_path):
    if not (shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")):
        pytest.skip("nginx not installed: apt-get install nginx (or scripts/test.sh as root)")
    from tests.container.support import start_boot

    booted = start_boot(tmp_path, env={"HFDAV_TRUSTED_PROXIES": "127.0.0.1/32", "HFDAV_LOGIN_FAILURES": "4"})
    try:
        headers = {"X-Forwarded-For": "198.51.100.8", "X-Real-IP": "198.51.100.9"}
        got = [call(booted, "PROPFIND", "/dav/", {**headers, "Authorization": basic(f"u{i}", "x"), "Depth": "0"},
                    source="127.0.0.7")[0] for i in range(6)]  # fmt: skip
        assert got == [401] * 4 + [429] * 2, got
        assert call(booted, "PROPFIND", "/dav/", {"Authorization": basic("admin", booted.password), "Depth": "0"},
                    source="127.0.0.8")[0] == 207  # fmt: skip
        status, _, body = call(booted, "GET", "/healthz", source="127.0.0.8")
        assert status == 200 and json.loads(body) == {"status": "ok"}
        log = booted.log_text()
        assert len(re.findall(r"login failed: client=127\.0\.0\.7 user=\(unknown\)", log)) == 4, log[-3000:]
        assert "198.51.100" not in log and "login failed: client=127.0.0.1 " not in log
    finally:
        assert booted.shutdown() == 0


# -- user settings -------------------------------------------------------------------------------


def test_user_settings_and_password_hashes(server_factory, tmp_path):
    htpasswd = tmp_path / "users.htpasswd"
    if shutil.which("htpasswd"):
        subprocess.run(["htpasswd", "-B", "-b", "-c", str(htpasswd), "alice", "alice-secret-1"], check=True,
                       capture_output=True)  # fmt: skip
    else:
        import bcrypt

        print("htpasswd (apache2-utils) not installed: writing its $2y$ form with bcrypt")
        hashed = bcrypt.hashpw(b"alice-secret-1", bcrypt.gensalt(5)).decode()
        htpasswd.write_text("alice:" + hashed.replace("$2b", "$2y"))
    env = {"HFDAV_USERS": "bob:pw-bob-1:RO;carl:pw-carl-2: ro", "HFDAV_USERS_FILE": str(htpasswd)}
    server = server_factory.start("cheroot", env=env)
    url = server.url_for("f.txt")
    assert requests.put(url, data=b"by alice", auth=("alice", "alice-secret-1"), timeout=30).status_code == 201
    for user, password in (("bob", "pw-bob-1"), ("carl", "pw-carl-2")):
        assert requests.get(url, auth=(user, password), timeout=30).content == b"by alice"
        assert requests.put(url, data=b"x", auth=(user, password), timeout=30).status_code == 403
    assert requests.get(url, auth=("bob", "pw-bob-1:RO"), timeout=30).status_code == 401
    assert requests.get(url, auth=("bob", "pw-bob-1;carl:pw-carl-2"), timeout=30).status_code == 401
    assert "alice have password hashes: they can log in with Basic only" in server.log_text()


def test_placeholder_admin_password_is_refused_at_start(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "SYS_TOKEN": PLACEHOLDER, "HFDAV_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.run([*_hfdav_command(), "serve", "--port", str(free_port())], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "SYS_TOKEN is the example value of .env.example" in proc.stderr and PLACEHOLDER not in proc.stderr
    assert "Traceback" not in proc.stderr


# -- clients that only answer a Basic challenge ------------------------------------------------------


@BOTH_KINDS
def test_a_client_that_only_answers_basic_challenges_logs_in(server_factory, kind):
    server = server_factory.start(kind)
    passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    passwords.add_password(None, server.url, server.user, server.password)
    opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(passwords))
    with opener.open(server.url, timeout=30) as resp:
        assert resp.status == 200


def test_admin_api_logins_go_through_the_same_throttle(server_factory):
    server = server_factory.start("cheroot", env={"HFDAV_LOGIN_FAILURES": "4"})
    api = "/.hfdav-admin/locks"
    got = [call(server, "GET", api, {"Authorization": basic("admin", f"guess{i}")}, source="127.0.0.9")[0]
           for i in range(6)]  # fmt: skip
    assert got == [401] * 4 + [429] * 2, got
    assert len(log_lines(server, r"login failed: client=127\.0\.0\.9 user=admin")) == 4
    r = requests.get(server.url.rstrip("/") + api, auth=HTTPDigestAuth(*server.auth), timeout=30)
    assert r.status_code == 200 and r.json() == {"locks": []}
