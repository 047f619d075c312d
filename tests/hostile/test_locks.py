"""Hostile and careless lock requests: huge owners, endless timeouts, a lock on the share root,
lock floods, and the cost of many stored locks for every other request."""

from __future__ import annotations

import re
import time
import tracemalloc

import pytest
import requests

from gateway.meta.repo import LockRow
from tests.inprocess import served_gateway

ADMIN = ("admin", "pw")
BOB = ("bob", "bpw")
MiB = 1 << 20


def lock_body(owner: str = "me", scope: str = "exclusive") -> str:
    return (
        '<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:">'
        f"<D:lockscope><D:{scope}/></D:lockscope><D:locktype><D:write/></D:locktype>"
        f"<D:owner>{owner}</D:owner></D:lockinfo>"
    )


@pytest.fixture
def server(tmp_path, monkeypatch, request):
    for name, value in getattr(request, "param", {}).items():
        monkeypatch.setenv(name, value)
    env = {
        "HFDAV_DATA_DIR": str(tmp_path / "data"),
        "SYS_TOKEN": "pw",
        "HFDAV_USERS": "bob:bpw:rw,reader:rpw:ro",
        **getattr(request, "param", {}),
    }
    with served_gateway(env, threads=8) as served:
        yield served


def dav(method, url, auth=ADMIN, **kw):
    return requests.request(method, url, auth=auth, timeout=30, **kw)


def lock(url, auth=ADMIN, depth="infinity", timeout="Infinite", owner="me", scope="exclusive"):
    headers = {"Depth": depth, "Timeout": timeout, "Content-Type": "application/xml"}
    return dav("LOCK", url, auth=auth, data=lock_body(owner, scope), headers=headers)


def granted(r) -> int:
    """The timeout a LOCK answer reports (seconds left)."""
    m = re.search(r"<D:timeout>Second-(\d+)</D:timeout>", r.text)
    assert m, r.text
    return int(m.group(1))


def test_timeout_infinite_is_capped_and_reported(server):
    base, gw = server
    assert dav("MKCOL", base + "/work").status_code == 201
    started = time.time()
    r = lock(base + "/work/", timeout="Infinite")
    assert r.status_code == 200, r.text
    assert 3500 <= granted(r) <= 3600
    (row,) = gw.repo.all_locks()
    assert row.timeout == 3600 and row.expire <= time.time() + 3600 and row.expire >= started + 3500
    # a longer request is cut down too, a shorter one granted as asked
    r = lock(base + "/other.txt", depth="0", timeout="Second-9999999")
    assert r.status_code == 201  # a lock-null resource: an empty file and 3500 <= granted(r) <= 3600
    r = lock(base + "/short.txt", depth="0", timeout="Second-120")
    assert r.status_code == 201 and 100 <= granted(r) <= 120


@pytest.mark.parametrize("server", [{"HFDAV_LOCK_MAX_TIMEOUT": "600"}], indirect=True)
def test_max_timeout_setting(server):
    base, _ = server
    r = lock(base + "/f.txt", depth="0", timeout="Second-3600")
    assert r.status_code == 201 and 500 <= granted(r) <= 600
    token = r.headers["Lock-Token"]
    # a refresh asking for more is capped as well
    r = dav("LOCK", base + "/f.txt", headers={"If": f"({token})", "Timeout": "Infinite"})
    assert r.status_code == 200 and 500 <= granted(r) <= 600


def test_depth_infinity_lock_on_share_root_refused_for_users(server):
    base, gw = server
    r = lock(base + "/", auth=BOB)
    assert r.status_code == 403, r.text
    assert gw.repo.all_locks() == []
    # the writers are not blocked
    assert dav("PUT", base + "/a.txt", auth=BOB, data=b"x").status_code == 201
    assert dav("PUT", base + "/a.txt", data=b"y").status_code == 204
    # a depth-0 lock on the root blocks nobody's PUT and is allowed; so is the admin's
    assert lock(base + "/", auth=BOB, depth="0").status_code == 200
    gw.repo.delete_locks_below("/", recursive=True)
    assert lock(base + "/", auth=ADMIN).status_code == 200


@pytest.mark.parametrize("server", [{"HFDAV_PREFIX": "/dav"}], indirect=True)
def test_share_root_under_a_prefix(server):
    """Behind the container's nginx the share is /dav: its root is what may not be locked."""
    base, gw = server
    assert lock(base + "/dav/", auth=BOB).status_code == 403
    assert dav("MKCOL", base + "/dav/work").status_code == 201
    assert lock(base + "/dav/work/", auth=BOB).status_code == 200
    assert [r.root for r in gw.repo.all_locks()] == ["/dav/work"]
    assert dav("PUT", base + "/dav/work/f.txt", data=b"x").status_code == 423
    assert dav("PUT", base + "/dav/f.txt", data=b"x").status_code == 201
    # the admin API lives outside the share; it shows the lock under its URL path
    (info,) = requests.get(base + "/.hfdav-admin/locks", auth=ADMIN, timeout=10).json()["locks"]
    assert info["path"] == "/dav/work"


@pytest.mark.parametrize("server", [{"HFDAV_LOCK_OWNER_MAX": "256"}], indirect=True)
def test_owner_too_large_refused_without_a_lock_row(server):
    """The cap is lowered so that the request stays small (the default is 4 KiB)."""
    base, gw = server
    r = lock(base + "/big.txt", depth="0", owner="x" * 300)
    assert r.status_code == 413, (r.status_code, r.text[-400:])
    assert gw.repo.all_locks() == []
    assert lock(base + "/big.txt", depth="0", owner="<D:href>mailto:me@example.org</D:href>").status_code in (200, 201)
    assert len(gw.repo.all_locks()) == 1


@pytest.mark.parametrize("server", [{"HFDAV_LOCKS_PER_USER": "3", "HFDAV_LOCKS_MAX": "5"}], indirect=True)
def test_lock_count_limits(server):
    base, gw = server
    for i in range(5):
        assert dav("PUT", f"{base}/b{i}.txt", data=b"x").status_code == 201
        assert dav("PUT", f"{base}/a{i}.txt", data=b"x").status_code == 201
    codes = [lock(f"{base}/b{i}.txt", auth=BOB, depth="0").status_code for i in range(5)]
    assert codes == [200, 200, 200, 507, 507]
    codes = [lock(f"{base}/a{i}.txt", auth=ADMIN, depth="0").status_code for i in range(4)]
    assert codes == [200, 200, 507, 507]  # 5 in all
    assert len(gw.repo.all_locks()) == 5
    # an unlocked slot is free again
    token = gw.repo.all_locks(principal="bob")[0].token
    assert dav("UNLOCK", f"{base}/b0.txt", auth=BOB, headers={"Lock-Token": f"<{token}>"}).status_code == 204
    assert lock(f"{base}/b4.txt", auth=BOB, depth="0").status_code == 200


def _stored_lock(token: str, root: str, owner: str, depth: str = "0") -> LockRow:
    return LockRow(token, root, depth, "exclusive", "write", owner, "admin", 3600, time.time() + 3600)


def test_requests_read_only_the_locks_of_their_paths(server):
    """40 locks with 1 MiB owners (stored before owners were capped) in one folder: requests
    elsewhere must not read them (each request used to read all of them: 40 MiB)."""
    base, gw = server
    assert dav("MKCOL", base + "/locked").status_code == 201
    assert dav("MKCOL", base + "/elsewhere").status_code == 201
    for i in range(40):
        gw.repo.create_lock(_stored_lock(f"opaquelocktoken:big{i}", f"/locked/f{i}", "o" * MiB), lambda _: None)
    tracemalloc.start()
    try:
        for i in range(3):
            assert dav("PUT", f"{base}/elsewhere/n{i}.txt", data=b"data").status_code == 201
            assert dav("PROPFIND", base + "/elsewhere/", headers={"Depth": "1"}).status_code == 207
            assert dav("PROPFIND", base + "/", headers={"Depth": "1"}).status_code == 207
            assert dav("DELETE", f"{base}/elsewhere/n{i}.txt").status_code == 204
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, f"requests elsewhere allocated {peak / MiB:.0f} MiB"


def test_locks_are_still_enforced_with_scoped_lookups(server):
    base, gw = server
    assert dav("MKCOL", base + "/d").status_code == 201
    assert dav("MKCOL", base + "/d/sub").status_code == 201
    assert dav("PUT", base + "/d/sub/f.txt", data=b"x").status_code == 201
    r = lock(base + "/d/sub/f.txt", auth=BOB, depth="0", timeout="Second-600")
    assert r.status_code == 200
    token = r.headers["Lock-Token"].strip("<>")
    # the file itself, and any depth-infinity change above it, need the token
    assert dav("PUT", base + "/d/sub/f.txt", data=b"y").status_code == 423
    r = dav("MOVE", base + "/d", headers={"Destination": base + "/e"})
    assert r.status_code in (207, 423), r.status_code
    assert dav("GET", base + "/d/sub/f.txt").content == b"x"
    assert dav("PUT", base + "/d/sub/f.txt", auth=BOB, data=b"y", headers={"If": f"(<{token}>)"}).status_code == 204
    # PROPFIND shows the lock on the member, and only there
    r = dav("PROPFIND", base + "/d/sub/", headers={"Depth": "1"})
    assert r.text.count(token) == 1
    # a depth-infinity lock on a folder covers its members, and conflicts with the member's lock
    assert lock(base + "/d/", auth=ADMIN).status_code == 423
    assert dav("UNLOCK", base + "/d/sub/f.txt", auth=BOB, headers={"Lock-Token": f"<{token}>"}).status_code == 204
    assert lock(base + "/d/", auth=ADMIN).status_code == 200
    assert dav("PUT", base + "/d/new.txt", auth=BOB, data=b"z").status_code == 423
    assert dav("PUT", base + "/dd.txt", auth=BOB, data=b"z").status_code == 201  # a sibling name, not below


def test_lock_lookups_by_path(repo):
    """Ancestors, siblings and subtrees, with names that sort between ``/a`` and ``/a/``
    (PostgreSQL compares lock paths byte-wise whatever its locale)."""
    roots = ["/", "/a", "/a/b", "/a/b/c", "/a b", "/a-b", "/a.b", "/a0", "/aé", "/a/ü", "/b", "/b/a"]
    for i, root in enumerate(roots):
        repo.create_lock(_stored_lock(f"t{i}", root, "o"), lambda _: None)

    def roots_of(rows):
        return sorted(r.root for r in rows)

    assert roots_of(repo.locks_below("/a")) == sorted(["/a", "/a/b", "/a/b/c", "/a/ü"])
    assert roots_of(repo.locks_below("/a/b")) == ["/a/b", "/a/b/c"]
    assert len(repo.locks_below("/")) == len(roots)
    # near /a/b/c: itself and its ancestors; near /a/b: also its siblings in /a and its members
    assert roots_of(repo.locks_near("/a/b/c")) == sorted(["/", "/a", "/a/b", "/a/b/c"])
    assert roots_of(repo.locks_near("/a/b")) == sorted(["/", "/a", "/a/b", "/a/b/c", "/a/ü"])
    assert roots_of(repo.locks_near("/b/a/c")) == sorted(["/", "/b", "/b/a"])
    # expired locks are never returned, and breaking by path takes what is asked
    repo.create_lock(LockRow("old", "/a/old", "0", "exclusive", "write", "o", "u", 1, time.time() - 5), lambda _: None)
    assert "/a/old" not in roots_of(repo.locks_below("/a"))
    assert roots_of(repo.delete_locks_below("/b", recursive=False)) == ["/b"]
    assert roots_of(repo.delete_locks_below("/a", recursive=True)) == sorted(["/a", "/a/b", "/a/b/c", "/a/ü", "/a/old"])
    assert roots_of(repo.all_locks()) == sorted(["/", "/a b", "/a-b", "/a.b", "/a0", "/aé", "/b/a"])
    if repo.engine.dialect.name == "postgresql":  # the test server's own locale may be C already
        from sqlalchemy import text

        with repo.engine.connect() as c:
            rows = c.execute(
                text(
                    "SELECT column_name, collation_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = 'locks' "
                    "AND column_name IN ('root', 'parent')"
                )
            ).all()
        assert sorted(rows) == [("parent", "C"), ("root", "C")]


def test_lock_limits_hold_across_the_transaction(repo):
    for i in range(3):
        repo.create_lock(_stored_lock(f"u{i}", f"/f{i}", "o"), lambda _: None, max_total=5, max_per_principal=3)
    from gateway.meta.repo import LockLimitReached

    with pytest.raises(LockLimitReached):
        repo.create_lock(_stored_lock("u3", "/f3", "o"), lambda _: None, max_total=5, max_per_principal=3)
    other = LockRow("v0", "/g", "0", "exclusive", "write", "o", "bob", 60, time.time() + 60)
    repo.create_lock(other, lambda _: None, max_total=5, max_per_principal=3)
    assert len(repo.all_locks()) == 4


def test_migration_fills_in_lock_parents(db_url):
    """Locks held across the upgrade keep working: their parent folders are filled in."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from gateway.meta import db
    from gateway.meta.repo import MetadataRepository

    engine = db.make_engine(db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(db._MIGRATIONS))
    cfg.attributes["connection_engine"] = engine
    command.upgrade(cfg, "0003")
    with engine.begin() as c:
        for token, root in (("k1", "/"), ("k2", "/x"), ("k3", "/x/y z")):
            c.execute(
                text(
                    "INSERT INTO locks (token, root, depth, scope, type, owner, principal, timeout, expire) "
                    "VALUES (:t, :r, '0', 'exclusive', 'write', '', 'u', 60, :e)"
                ),
                {"t": token, "r": root, "e": time.time() + 60},
            )
    engine.dispose()
    repo = MetadataRepository.open(db_url)
    try:
        assert sorted(r.root for r in repo.locks_near("/x/y z")) == ["/", "/x", "/x/y z"]
        assert sorted(r.root for r in repo.locks_near("/x/other")) == ["/", "/x", "/x/y z"]  # a sibling
        assert [r.root for r in repo.locks_below("/x/y z")] == ["/x/y z"]
    finally:
        repo.close()
