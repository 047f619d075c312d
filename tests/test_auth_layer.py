"""The authentication layer in-process: user settings, the login throttle, Digest nonces, client
addresses, and the Authenticator's answers to every kind of Authorization header."""

from __future__ import annotations

import base64
import hashlib
import io
import ipaddress
import json
import logging
import os
import shutil
import subprocess
import time

import bcrypt
import pytest

from gateway import metrics
from gateway.config import load_settings
from gateway.dav.auth import Authenticator, Identity, Refusal, accounts
from gateway.dav.digest import NC_WINDOW, NonceBook, NonceState, load_key, parse_params
from gateway.dav.throttle import LoginThrottle, address_key
from gateway.errors import ConfigError
from gateway.web import WebFront, client_address

PLACEHOLDER = "change-me-to-a-long-random-password"


def settings(tmp_path, **env):
    return load_settings({"HFDAV_DATA_DIR": str(tmp_path), **env})


def problems(tmp_path, **env) -> list[str]:
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, **env)
    return info.value.problems


# -- HFDAV_USERS ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("bob:pw:RO", [("bob", "pw", False)]),
        ("carl:pw2: ro", [("carl", "pw2", False)]),
        ("bob:pw;carl:pw2", [("bob", "pw", True), ("carl", "pw2", True)]),
        ("bob:pw , carl:pw2:Rw\ndora:x", [("bob", "pw", True), ("carl", "pw2", True), ("dora", "x", True)]),
        ("bob:pa:ss:rw", [("bob", "pa:ss", True)]),
        (r"bob:pa\:ss", [("bob", "pa:ss", True)]),
        (r"bob:a\,b\;c\\d:ro", [("bob", "a,b;c\\d", False)]),
    ],
)
def test_users_are_parsed_strictly(tmp_path, text, expected):
    s = settings(tmp_path, HFDAV_USERS=text)
    assert [(u.name, u.password, u.can_write) for u in s.users] == expected


def test_every_bad_user_entry_is_reported_without_passwords(tmp_path):
    found = problems(tmp_path, HFDAV_USERS="bob:secret1:admin, justapassword, carl:, bad name:secret2,"
                                           "dora:x,dora:y, admin:secret3, ok:secret4")  # fmt: skip
    assert len(found) == 6, found
    text = "\n".join(found)
    for n in (1, 2, 3, 4, 6, 7):
        assert f"HFDAV_USERS entry {n}:" in text
    for secret in ("secret1", "justapassword", "secret2", "secret3", "bad name"):
        assert secret not in text


def test_placeholder_passwords_are_refused(tmp_path):
    found = problems(tmp_path, SYS_TOKEN=PLACEHOLDER)
    assert len(found) == 1 and "SYS_TOKEN" in found[0] and ".env.example" in found[0]
    assert PLACEHOLDER not in found[0]
    found = problems(tmp_path, HFDAV_USERS="alice:alice-password:rw")
    assert len(found) == 1 and "example password" in found[0]


def test_short_passwords_are_only_a_warning(tmp_path, caplog):
    s = settings(tmp_path, SYS_TOKEN="pw", HFDAV_USERS="bob:a-long-enough-password")
    with caplog.at_level(logging.WARNING, logger="hfdav.auth"):
        Authenticator.from_settings(s, os.urandom(32))
    assert "'admin' has fewer than 12" in caplog.text and "bob" not in caplog.text
    assert "pw" not in caplog.text.replace("password", "")


def _htpasswd(path, name, password, *extra):
    exe = shutil.which("htpasswd")
    if exe:
        subprocess.run([exe, "-B", "-b", *extra, str(path), name, password], check=True, capture_output=True)
    else:  # the same $2y$ form htpasswd -B writes
        digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(5)).decode().replace("$2b$", "$2y$", 1)
        with open(path, "a") as f:
            f.write(f"{name}:{digest}\n")


def test_users_file_with_bcrypt_hashes(tmp_path):
    path = tmp_path / "users.htpasswd"
    _htpasswd(path, "alice", "alice-secret-1", *(["-c"] if shutil.which("htpasswd") else []))
    _htpasswd(path, "bob", "bob-secret-2")
    path.write_text(path.read_text().replace("\nbob:", "\n# a comment\nbob:").rstrip("\n") + ":ro\n")
    assert path.read_text().startswith("alice:$2y$")
    s = settings(tmp_path, HFDAV_USERS_FILE=str(path), SYS_TOKEN="x" * 20)
    auth = Authenticator.from_settings(s, os.urandom(32))
    assert _who(auth, basic("alice", "alice-secret-1")) == Identity("alice", ("editor",))
    assert _who(auth, basic("bob", "bob-secret-2")) == Identity("bob", ("reader",))
    assert _who(auth, basic("alice", "bob-secret-2")).status.startswith("401")
    # a second check of the same password is answered from the cache, a wrong one is not
    assert _who(auth, basic("alice", "alice-secret-1")) == Identity("alice", ("editor",))


def test_users_file_refuses_other_hash_formats(tmp_path):
    path = tmp_path / "users.htpasswd"
    good = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    path.write_text(f"md5:$apr1$abcdefgh$0123456789012345678901\nplain:clear-text\nsha:{{SHA}}W6ph5Mm5Pz8GgiUL=\n"
                    f"dup:{good}\nbad:{good}:admin\n")  # fmt: skip
    found = problems(tmp_path, HFDAV_USERS_FILE=str(path), HFDAV_USERS="dup:other-password")
    assert len(found) == 5, found
    assert sum("no bcrypt hash" in p for p in found) == 3 and "line 4: user 'dup' is defined twice" in found[3]
    assert "line 5: expected name:hash" in found[4]
    assert "clear-text" not in "\n".join(found)


# -- client address -----------------------------------------------------------------------------

LOOPBACK = tuple(ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1/128"))


@pytest.mark.parametrize(
    "environ,expected",
    [
        ({"REMOTE_ADDR": "203.0.113.5", "HTTP_X_FORWARDED_FOR": "198.51.100.1"}, "203.0.113.5"),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "198.51.100.1"}, "198.51.100.1"),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "1.1.1.1, 198.51.100.1"}, "198.51.100.1"),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "198.51.100.1, 127.0.0.1"}, "198.51.100.1"),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "garbage, 127.0.0.1"}, "127.0.0.1"),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "198.51.100.2"}, "198.51.100.2"),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "<script>"}, "127.0.0.1"),
        ({"REMOTE_ADDR": "::ffff:127.0.0.1", "HTTP_X_REAL_IP": "2001:db8::7"}, "2001:db8::7"),
        ({"REMOTE_ADDR": "127.0.0.1"}, "127.0.0.1"),
        ({}, "-"),
    ],
)
def test_client_address(environ, expected):
    assert client_address(environ, LOOPBACK) == expected


def test_client_address_without_trusted_proxies():
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "198.51.100.1", "HTTP_X_REAL_IP": "198.51.100.1"}
    assert client_address(environ, ()) == "127.0.0.1"


# -- throttle ------------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_throttle_delays_then_blocks_then_decays():
    clock = Clock()
    t = LoginThrottle(10, clock=clock)
    delays = [t.failed("198.51.100.1", None) for _ in range(10)]
    assert delays[:5] == [0] * 5
    assert delays[5:9] == [0.25, 0.5, 1.0, 2.0] and delays[9] == 2.0
    wait = t.retry_after("198.51.100.1", None)
    assert 60 < wait < 120
    assert t.retry_after("198.51.100.2", None) == 0  # another address is not blocked
    clock.now += wait + 1
    assert t.retry_after("198.51.100.1", None) == 0
    t.failed("198.51.100.1", None)
    assert t.retry_after("198.51.100.1", None) > 0  # one more guess, then blocked again


def test_throttle_counts_users_across_addresses_but_not_for_known_pairs():
    clock = Clock()
    t = LoginThrottle(4, clock=clock)
    t.succeeded("198.51.100.9", "alice")
    for i in range(4):
        t.failed(f"203.0.113.{i}", "alice")
    assert t.retry_after("203.0.113.200", "alice") > 0  # a fresh address: alice is blocked
    assert t.retry_after("203.0.113.200", None) == 0
    assert t.retry_after("198.51.100.9", "alice") == 0  # where alice logged in before
    clock.now += 8 * 24 * 3600  # the pair is forgotten after a week, the scores decayed
    assert t.retry_after("198.51.100.9", "alice") == 0


def test_throttle_memory_is_bounded():
    t = LoginThrottle(10, max_entries=100)
    for i in range(5000):
        t.failed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", None)
        t.succeeded(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "alice")
    assert len(t) <= 200
    # names made up by a client are not kept at all: only known users reach the throttle by name
    assert address_key("2001:db8:1:2:3:4:5:6") == address_key("2001:db8:1:2:ffff::1") == "addr:2001:db8:1:2::/64"
    assert address_key("::ffff:198.51.100.1") == "addr:198.51.100.1"


# -- Digest nonces ---------------------------------------------------------------------------------


def test_nonces_are_checked():
    clock = Clock()
    book = NonceBook(os.urandom(32), lifetime=300, clock=clock)
    nonce = book.issue()
    assert book.use(nonce, "00000001") is NonceState.OK
    assert book.use(nonce, "00000001") is NonceState.REPLAYED
    assert book.use(nonce, "00000003") is NonceState.OK
    assert book.use(nonce, "00000002") is NonceState.OK  # out of order, inside the window
    assert book.use(nonce, "00000002") is NonceState.REPLAYED
    assert book.use(nonce, f"{3 + NC_WINDOW + 5:08x}") is NonceState.OK
    assert book.use(nonce, "00000004") is NonceState.REPLAYED  # fell out of the window
    assert book.use(nonce, "zz") is NonceState.UNKNOWN
    other = NonceBook(os.urandom(32), clock=clock)
    assert book.use(other.issue(), "00000001") is NonceState.UNKNOWN  # never issued here
    assert book.use(base64.b64encode(b"978307200.0" + b"0" * 32).decode(), "00000001") is NonceState.UNKNOWN
    clock.now += 301
    assert book.use(book.issue(), "00000001") is NonceState.OK
    assert book.use(nonce, "00000100") is NonceState.STALE


def test_nonce_dated_2001_is_stale_and_forgotten_nonces_are_not_replayable():
    key = os.urandom(32)
    clock = Clock()
    clock.now = 978307200.0
    old = NonceBook(key, clock=clock).issue()
    assert NonceBook(key).use(old, "00000001") is NonceState.STALE
    book = NonceBook(key, max_nonces=10)
    first = book.issue()
    assert book.use(first, "00000001") is NonceState.OK
    for _ in range(20):
        assert book.use(book.issue(), "00000001") is NonceState.OK
    assert len(book) == 10
    assert book.use(first, "00000002") is NonceState.STALE


def test_nonce_key_is_created_once(tmp_path):
    key = load_key(tmp_path)
    assert len(key) == 32 and load_key(tmp_path) == key
    assert (tmp_path / "digest-nonce-key").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["digest-nonce-key"]


def test_parse_params():
    assert parse_params('a="x, y", b=tok , c="q\\"uote"') == {"a": "x, y", "b": "tok", "c": 'q"uote'}
    for bad in ('a="unterminated', "a", "a=1 b=2", "a=1,,", "a=1, a=2", "=x"):
        assert parse_params(bad) is None, bad


# -- Authenticator ---------------------------------------------------------------------------------


def basic(user: str | bytes, password: str | bytes) -> str:
    raw = (user if isinstance(user, bytes) else user.encode()) + b":"
    raw += password if isinstance(password, bytes) else password.encode()
    return "Basic " + base64.b64encode(raw).decode()


def _who(auth: Authenticator, header: str | None, method: str = "GET", client: str = "198.51.100.1", **env):
    environ = {"REQUEST_METHOD": method, "REQUEST_URI": "/f.txt", "PATH_INFO": "/f.txt", **env}
    if header is not None:
        environ["HTTP_AUTHORIZATION"] = header
    return auth.admit(environ, client)


@pytest.fixture
def auth(tmp_path):
    s = settings(tmp_path, SYS_TOKEN="admin-password-1", HFDAV_USERS="reader:reader-password:ro",
                 HFDAV_LOGIN_FAILURES="1000")  # fmt: skip
    return Authenticator(accounts(s), digest=NonceBook(os.urandom(32)), throttle=LoginThrottle(1000))


def _challenges(refusal) -> list[str]:
    return [v for k, v in refusal.headers if k == "WWW-Authenticate"]


def test_challenge_offers_digest_and_basic(auth):
    refusal = _who(auth, None)
    assert isinstance(refusal, Refusal) and refusal.status.startswith("401")
    digest, basic_challenge = _challenges(refusal)
    assert digest.startswith('Digest realm="hfdav", nonce="') and 'qop="auth"' in digest
    assert basic_challenge.startswith('Basic realm="hfdav"')
    no_digest = Authenticator(auth._accounts)
    assert [c.split()[0] for c in _challenges(_who(no_digest, None))] == ["Basic"]
    assert _who(no_digest, digest_header(no_digest, "admin", "admin-password-1", "x" * 48)).status.startswith("401")


MALFORMED = [
    "Basic", "Basic ", "Basic !!!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Basic YWJj", "Basic =",
    basic(b"\xff\xfe", b"\xff"), basic("", ""), "Basic " + "A" * 20000, "Bearer abc", "Negotiate TlRMTVNTUAAB",
    "Digest", "Digest garbage", 'Digest username="admin"', 'Digest username="admin", realm="hfdav", nonce="x',
    'Digest username="admin", realm="hfdav", nonce="n", uri="/f.txt", response="r"',  # no qop: RFC 2069 form
    'Digest username="admin", realm="hfdav", nonce="n", uri="/f.txt", response="r", qop=auth-int, nc=00000001, '
    'cnonce="c"',
    'Digest username="admin", realm="hfdav", nonce="n", uri="/f.txt", response="r", qop=auth, nc=00000001, '
    'cnonce="c", algorithm=SHA-512',
    'Digest username="admin", realm="other", nonce="n", uri="/f.txt", response="r", qop=auth, nc=1, cnonce="c"',
    "\x00\x01\x02", "Basic \u00e9\u00e9\u00e9\u00e9",
]  # fmt: skip


@pytest.mark.parametrize("header", MALFORMED)
def test_malformed_headers_are_401(auth, header):
    refusal = _who(auth, header)
    assert isinstance(refusal, Refusal) and refusal.status.startswith("401"), refusal
    assert len(_challenges(refusal)) == 2


def test_roles_and_anonymous_modes(auth):
    assert _who(auth, basic("admin", "admin-password-1"), "PUT") == Identity("admin", ("editor",))
    assert _who(auth, basic("reader", "reader-password")) == Identity("reader", ("reader",))
    auth.anonymous = "ro"
    assert _who(auth, None, "GET") == Identity(None, ("reader",))
    assert isinstance(_who(auth, None, "PUT"), Refusal)
    assert isinstance(_who(auth, basic("admin", "wrong"), "GET"), Refusal)  # not downgraded
    auth.anonymous = "rw"
    assert _who(auth, None, "PUT") == Identity(None, ("editor",))
    assert isinstance(_who(auth, basic("admin", "wrong"), "PUT"), Refusal)


def digest_header(auth, user, password, nonce, *, method="GET", uri="/f.txt", nc="00000001", cnonce="c0ffee"):
    def md5(text):
        return hashlib.md5(text.encode()).hexdigest()

    response = md5(f"{md5(f'{user}:hfdav:{password}')}:{nonce}:{nc}:{cnonce}:auth:{md5(f'{method}:{uri}')}")
    return (f'Digest username="{user}", realm="hfdav", nonce="{nonce}", uri="{uri}", algorithm=MD5, '
            f'response="{response}", qop=auth, nc={nc}, cnonce="{cnonce}"')  # fmt: skip


def _nonce(refusal) -> str:
    return parse_params(_challenges(refusal)[0].split(" ", 1)[1])["nonce"]


def test_digest_replay_and_unknown_nonces_are_refused(auth):
    nonce = _nonce(_who(auth, None))
    header = digest_header(auth, "admin", "admin-password-1", nonce, method="PUT")
    assert _who(auth, header, "PUT") == Identity("admin", ("editor",))
    for _ in range(3):
        replay = _who(auth, header, "PUT")
        assert isinstance(replay, Refusal) and "stale=true" in _challenges(replay)[0]
    second = digest_header(auth, "admin", "admin-password-1", nonce, method="PUT", nc="00000002")
    assert _who(auth, second, "PUT") == Identity("admin", ("editor",))
    # another resource than the one the response was computed for
    other = _who(auth, digest_header(auth, "admin", "admin-password-1", nonce, nc="00000003"), uri="/g.txt",
                 REQUEST_URI="/g.txt")  # fmt: skip
    assert isinstance(other, Refusal)
    forged = "A" * len(nonce)
    refused = _who(auth, digest_header(auth, "admin", "admin-password-1", forged))
    assert isinstance(refused, Refusal) and "stale=true" in _challenges(refused)[0]
    wrong = _who(auth, digest_header(auth, "admin", "wrong", _nonce(_who(auth, None))))
    assert isinstance(wrong, Refusal) and "stale" not in _challenges(wrong)[0]


def test_digest_uri_may_be_unencoded_or_absolute(auth):
    env = {"REQUEST_URI": "/a%20b%2Cc.txt?x=1", "PATH_INFO": "/a b,c.txt", "QUERY_STRING": "x=1"}
    for n, uri in enumerate(["/a%20b%2Cc.txt?x=1", "/a b,c.txt?x=1", "http://host:1/a%20b%2Cc.txt?x=1"], 1):
        header = digest_header(auth, "admin", "admin-password-1", _nonce(_who(auth, None)), uri=uri, nc=f"{n:08x}")
        assert _who(auth, header, **env) == Identity("admin", ("editor",)), uri
    header = digest_header(auth, "admin", "admin-password-1", _nonce(_who(auth, None)), uri="/a b,c.txt")
    assert isinstance(_who(auth, header, **env), Refusal)  # the query differs


def test_failed_login_log_names_the_client_never_a_typed_name(auth, caplog):
    with caplog.at_level(logging.INFO, logger="hfdav.auth"):
        _who(auth, basic("Tr0ub4dor&3", "x"), client="203.0.113.77")
        _who(auth, basic("admin", "hunter2-typo"), client="203.0.113.77")
    assert "Tr0ub4dor" not in caplog.text and "hunter2" not in caplog.text
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "login failed: client=203.0.113.77 user=(unknown) scheme=basic reason=unknown-user",
        "login failed: client=203.0.113.77 user=admin scheme=basic reason=wrong-password",
    ]


def test_blocked_client_gets_429_without_a_password_check(tmp_path):
    s = settings(tmp_path, SYS_TOKEN="admin-password-1")
    auth = Authenticator(accounts(s), throttle=LoginThrottle(4))
    started = time.monotonic()
    answers = [_who(auth, basic("nobody", f"guess{i}")).status[:3] for i in range(20)]
    assert answers[:4] == ["401"] * 4 and set(answers[4:]) == {"429"}
    assert time.monotonic() - started >= 0.25 + 0.5  # the 3rd and 4th failure were delayed
    assert metrics.value("hfdav_login_failures_total", reason="unknown-user") >= 4
    assert metrics.value("hfdav_login_throttled_total") >= 16
    blocked = _who(auth, basic("admin", "admin-password-1"))
    assert blocked.status.startswith("429") and int(dict(blocked.headers)["Retry-After"]) >= 1
    assert _who(auth, basic("admin", "admin-password-1"), client="198.51.100.2") == Identity("admin", ("editor",))


# -- /healthz and /metrics through the front -------------------------------------------------------


def _get(front, path, header=None):
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "REMOTE_ADDR": "198.51.100.1", "wsgi.input": io.BytesIO()}
    if header:
        environ["HTTP_AUTHORIZATION"] = header
    seen = {}
    body = b"".join(front(environ, lambda status, headers, exc_info=None: seen.update(status=status)))
    return seen["status"], body


def test_healthz_details_only_with_credentials(auth):
    failing = {"store": lambda: {"ok": False, "repo": "me/private-drive", "error": "hub down"}}
    front = WebFront(None, prefix="/", auth=auth, checks=failing)
    status, body = _get(front, "/healthz")
    assert status.startswith("503") and json.loads(body) == {"status": "degraded"}
    status, body = _get(front, "/healthz", basic("admin", "wrong"))
    assert status.startswith("503") and b"private-drive" not in body
    status, body = _get(front, "/healthz", basic("reader", "reader-password"))
    assert status.startswith("503") and json.loads(body)["checks"]["store"]["repo"] == "me/private-drive"
    assert _get(front, "/metrics")[0].startswith("401")
    assert _get(front, "/metrics", basic("reader", "reader-password"))[0].startswith("200")


def test_checked_basic_credentials_are_remembered_by_keyed_hash_only(tmp_path):
    s = settings(tmp_path, SYS_TOKEN="admin-password-1")
    auth = Authenticator(accounts(s), throttle=LoginThrottle(4))
    good = basic("admin", "admin-password-1")
    assert _who(auth, good) == Identity("admin", ("editor",))
    assert _who(auth, good) == Identity("admin", ("editor",))  # from the cache
    token = good.split(" ", 1)[1].encode()
    cached = list(auth._basic_cache)
    assert len(cached) == 1 and len(cached[0]) == 32
    assert token not in cached[0] and b"admin-password-1" not in cached[0]
    assert _who(auth, basic("admin", "admin-password-2")).status.startswith("401")  # never the cache's
    for i in range(6):  # the client gets blocked: a remembered credential does not pass the block
        _who(auth, basic("nobody", f"guess{i}"))
    assert _who(auth, good).status.startswith("429")
