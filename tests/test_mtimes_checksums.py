"""Client-set modification times and content checksums, layer by layer: the file service and
the metadata repository (SQLite and PostgreSQL), the migration, the repo format (journal and
snapshot, and a rebuild from the Hub repo), then every header and property over real HTTP."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from xml.etree import ElementTree

import pytest
import requests
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from gateway.config import ConfigError, load_settings
from gateway.files import EMPTY_CHECKSUMS, FileService
from gateway.meta import db
from gateway.meta.repo import NO_CHECKSUMS, Checksums, MetadataRepository, TreeRecord
from gateway.sync import repofmt
from gateway.sync.replay import ReplayClock, Replayer
from tests.hub_emulator import HubEmulator
from tests.hub_fixtures import emulator_fixture, hub_env, hub_sync, in_process_gateway  # noqa: F401
from tests.inprocess import served_gateway

MiB = 1 << 20
AUTH = ("admin", "pw")
OC = "{http://owncloud.org/ns}"
T2020 = 1_577_880_000  # 2020-01-01 12:00:00 UTC


def sums_of(data: bytes) -> Checksums:
    return Checksums(hashlib.md5(data).hexdigest(), hashlib.sha1(data).hexdigest())


# -- file service and repository -------------------------------------------------------------
def test_a_put_stores_md5_and_sha1_of_its_content(files: FileService):
    data = os.urandom(3 * MiB + 17)  # several chunks, fed in blocks of several sizes
    session = files.open_write("/big.bin", expected_length=len(data))
    for start, step in ((0, 1000), (1000, MiB), (MiB + 1000, 5), (MiB + 1005, len(data))):
        session.write(data[start : start + step])
    node = session.commit()
    assert node.checksums == sums_of(data)
    assert files.stat("/big.bin").checksums == sums_of(data)
    # in the request thread only (no pool): the same digests
    files.digest_pool = None
    assert files.write_bytes("/inline.bin", data).checksums == sums_of(data)


def test_with_checksums_off_uploads_get_none_and_announced_ones_are_not_checked(files: FileService):
    files.checksums = False
    data = os.urandom(MiB + 3)
    assert files.write_bytes("/off.bin", data).checksums == Checksums(None, None)
    session = files.open_write("/off2.bin", expected_length=3, announced=Checksums("0" * 32, None))
    session.write(b"abc")
    assert session.commit().size == 3  # nothing to compare the announced MD5 with


def test_the_checksums_setting():
    assert load_settings({"SYS_TOKEN": "a-long-test-password"}).checksums is True
    assert load_settings({"SYS_TOKEN": "a-long-test-password", "HFDAV_CHECKSUMS": "off"}).checksums is False
    with pytest.raises(ConfigError):
        load_settings({"SYS_TOKEN": "a-long-test-password", "HFDAV_CHECKSUMS": "maybe"})


def test_a_mutable_buffer_reused_by_the_caller_does_not_change_the_digest(files: FileService):
    data = os.urandom(2 * MiB)
    buf = bytearray(MiB)
    session = files.open_write("/reused.bin", expected_length=len(data))
    for start in (0, MiB):
        buf[:] = data[start : start + MiB]
        session.write(buf)
        buf[:] = b"\0" * MiB  # the caller reuses its buffer at once
    assert session.commit().checksums == sums_of(data)


def test_empty_files_have_the_empty_digests(files: FileService):
    assert files.write_bytes("/e1", b"").checksums == sums_of(b"") == EMPTY_CHECKSUMS
    assert files.create_empty("/e2").checksums == EMPTY_CHECKSUMS


def test_client_time_is_kept_and_a_new_version_without_one_gets_now(files: FileService):
    node = files.write_bytes("/t.txt", b"one", mtime=T2020)
    assert node.modified_at == T2020
    files.write_bytes("/epoch.txt", b"x", mtime=0.0)  # 1970 is a time, not "unset"
    assert files.stat("/epoch.txt").modified_at == 0.0
    before = time.time()
    node = files.write_bytes("/t.txt", b"two")
    assert node.modified_at >= before - 1
    assert node.checksums == sums_of(b"two")


def test_copy_and_move_keep_time_and_checksums(files: FileService):
    files.mkdir("/d")
    files.write_bytes("/d/a.bin", b"payload", mtime=T2020)
    files.copy("/d/a.bin", "/copy.bin")
    files.copy("/d", "/d2")
    files.move("/d/a.bin", "/moved.bin")
    for path in ("/copy.bin", "/d2/a.bin", "/moved.bin"):
        node = files.stat(path)
        assert (node.modified_at, node.checksums) == (T2020, sums_of(b"payload")), path
    files.write_bytes("/copy.bin", b"other", mtime=T2020 + 5)
    files.copy("/copy.bin", "/moved.bin", overwrite=True)
    node = files.stat("/moved.bin")
    assert (node.modified_at, node.checksums) == (T2020 + 5, sums_of(b"other"))


def test_versions_written_before_checksums_have_none(repo: MetadataRepository):
    node = repo.put_version("/old.bin", [])
    assert node.checksums == NO_CHECKSUMS


def test_migration_keeps_existing_versions_without_checksums(db_url):
    engine = db.make_engine(db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db.__file__).with_name("migrations")))
    cfg.attributes["connection_engine"] = engine
    command.upgrade(cfg, "0003")
    with engine.begin() as c:
        c.execute(sa.text("INSERT INTO nodes (parent_id, name, path, is_dir, created_at, modified_at) "
                          "VALUES (NULL, '', '', true, 1, 1)"))  # fmt: skip
        root = c.execute(sa.text("SELECT id FROM nodes WHERE path = ''")).scalar()
        c.execute(sa.text("INSERT INTO nodes (parent_id, name, path, is_dir, created_at, modified_at) "
                          "VALUES (:p, 'f', '/f', false, 1, 2)"), {"p": root})  # fmt: skip
        fid = c.execute(sa.text("SELECT id FROM nodes WHERE path = '/f'")).scalar()
        c.execute(sa.text("INSERT INTO versions (node_id, size, etag, created_at) VALUES (:n, 0, 'e', 1)"), {"n": fid})
        vid = c.execute(sa.text("SELECT id FROM versions")).scalar()
        c.execute(sa.text("UPDATE nodes SET version_id = :v WHERE id = :n"), {"v": vid, "n": fid})
    db.migrate(engine)
    repo = MetadataRepository(engine)
    try:
        old = repo.get("/f")
        assert old.checksums == NO_CHECKSUMS and old.modified_at == 2
        assert repo.put_version("/g", [], checksums=EMPTY_CHECKSUMS).checksums == EMPTY_CHECKSUMS
    finally:
        repo.close()


# -- repo format: journal entries and snapshots ----------------------------------------------
def test_journal_put_carries_time_and_checksums_and_replays_them(tmp_path):
    src = MetadataRepository.open(f"sqlite:///{tmp_path / 'src.db'}", journal_enabled=True)
    files = FileService(src, _store(tmp_path), tmp_dir=tmp_path / "tmp", chunk_size=MiB)
    try:
        files.write_bytes("/a.bin", b"alpha", mtime=T2020)
        files.repo.put_version("/legacy.bin", [])  # no checksums: the entry has none
        entries = [r.entry for r in src.pending_journal()]
    finally:
        files.close()
    puts = [json.loads(e) for e in entries]
    assert puts[0]["mtime"] == T2020 and puts[0]["md5"] == sums_of(b"alpha").md5
    assert "md5" not in puts[1] and "sha1" not in puts[1]
    clock = ReplayClock()
    dst = MetadataRepository.open(f"sqlite:///{tmp_path / 'dst.db'}", clock=clock)
    try:
        Replayer(dst, clock).apply_entries(repofmt.Entry(i + 1, 5.0, p) for i, p in enumerate(puts))
        a = dst.get("/a.bin")
        assert (a.modified_at, a.checksums) == (T2020, sums_of(b"alpha"))
        assert dst.get("/legacy.bin").checksums == NO_CHECKSUMS
    finally:
        dst.close()


def test_snapshot_carries_checksums_in_lines_older_readers_skip(tmp_path):
    tree = [
        TreeRecord("/d", True, 1.0, 2.0, None, None, ()),
        TreeRecord("/d/f", False, 1.0, float(T2020), None, "e1", (("o1", 0, 5),), sums_of(b"hello")),
        TreeRecord("/d/old", False, 1.0, 3.0, None, "e2", ()),
    ]
    path = tmp_path / "snap.jsonl.gz"
    repofmt.write_snapshot(path, repofmt.SnapshotHeader(1, 3, 9.0), tree, [], [])
    reader = repofmt.SnapshotReader(path)
    assert list(reader.tree()) == tree
    # what a reader that knows only "n" lines gets (it unpacks seven fields per node)
    assert [len(item) for item in reader._items("n")] == [7, 7, 7]


def _store(tmp_path):
    from gateway.store.local import LocalStore

    return LocalStore(tmp_path / "objects", fsync=False)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_rebuild_from_the_hub_repo_keeps_times_and_checksums(emulator: HubEmulator, tmp_path: Path):
    def seen(gw):
        return {n.path: (n.modified_at, n.checksums) for n in gw.repo.walk("") if not n.is_dir}

    env = hub_env(emulator, tmp_path / "data")
    with in_process_gateway(env) as gw:
        gw.files.write_bytes("/in-snapshot.bin", os.urandom(MiB + 3), mtime=T2020)
        gw.files.write_bytes("/small.txt", b"small", mtime=T2020 + 1)
        assert hub_sync(gw).flush(120)
        hub_sync(gw).committer.snapshot_now()
        gw.files.write_bytes("/in-journal.txt", b"after the snapshot", mtime=T2020 + 2)
        gw.files.copy("/small.txt", "/copied.txt")
        assert hub_sync(gw).flush(120)
        before = seen(gw)
    assert before["/in-journal.txt"] == (T2020 + 2, sums_of(b"after the snapshot"))
    assert before["/copied.txt"] == (T2020 + 1, sums_of(b"small"))
    shutil.rmtree(tmp_path / "data")
    with in_process_gateway(env) as gw:
        assert seen(gw) == before


# -- over HTTP: headers and properties -------------------------------------------------------
@pytest.fixture
def base(tmp_path):
    env = {"HFDAV_DATA_DIR": str(tmp_path / "data"), "SYS_TOKEN": "pw", "HFDAV_CHUNK_SIZE": "1MiB"}
    with served_gateway(env) as served:
        yield served


def dav(method, url, **kw):
    return requests.request(method, url, auth=AUTH, timeout=30, **kw)


def propfind(url, *props: str, depth="0") -> str:
    body = '<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns"><d:prop>'
    body += "".join(props) + "</d:prop></d:propfind>"
    r = dav("PROPFIND", url, headers={"Depth": depth}, data=body)
    assert r.status_code == 207, r.text
    return r.text


def checksum_values(xml: str) -> list[str]:
    """The text of every ``oc:checksum`` element in a multistatus."""
    return [e.text for e in ElementTree.fromstring(xml.encode()).iter(OC + "checksum")]


def mtime_of(url) -> float:
    r = dav("HEAD", url)
    assert r.status_code == 200
    return parsedate_to_datetime(r.headers["Last-Modified"]).timestamp()


def proppatch(url, inner: str, ns: str = "") -> requests.Response:
    body = f'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" {ns}><D:set><D:prop>{inner}</D:prop></D:set>'
    body += "</D:propertyupdate>"
    return dav("PROPPATCH", url, data=body)


def test_put_with_x_oc_mtime_sets_the_time_and_says_accepted(base):
    url, gw = base
    r = dav("PUT", url + "/a.txt", data=b"hello", headers={"X-OC-Mtime": str(T2020)})
    assert r.status_code == 201 and r.headers.get("X-OC-Mtime") == "accepted"
    assert mtime_of(url + "/a.txt") == T2020
    assert "Wed, 01 Jan 2020 12:00:00 GMT" in propfind(url + "/a.txt", "<d:getlastmodified/>")
    # one change, one journal-able transaction: the version already had the time
    assert gw.repo.get("/a.txt").modified_at == T2020
    # overwrite with a new time, then without one: now
    r = dav("PUT", url + "/a.txt", data=b"v2", headers={"X-OC-Mtime": str(T2020 + 60)})
    assert r.status_code == 204 and r.headers.get("X-OC-Mtime") == "accepted"
    assert mtime_of(url + "/a.txt") == T2020 + 60
    before = time.time()
    r = dav("PUT", url + "/a.txt", data=b"v3")
    assert r.status_code == 204 and "X-OC-Mtime" not in r.headers
    assert mtime_of(url + "/a.txt") >= int(before) - 1


def test_a_malformed_x_oc_mtime_is_refused_and_stores_nothing(base):
    url, _ = base
    for bad in ("yesterday", "nan", "1e999", "253402300800", "-1e18"):  # the last two: beyond year 9999 / before 1
        r = dav("PUT", url + "/bad.txt", data=b"x", headers={"X-OC-Mtime": bad})
        assert r.status_code == 400, bad
        assert "X-OC-Mtime" not in r.headers
    assert dav("GET", url + "/bad.txt").status_code == 404


def test_proppatch_lastmodified_as_rclone_sends_it(base):
    url, _ = base
    dav("PUT", url + "/p.bin", data=b"content")
    # rclone's SetModTime (owncloud/nextcloud): epoch seconds, with its checksum beside
    r = proppatch(
        url + "/p.bin",
        f'<lastmodified xmlns="DAV:">{T2020}</lastmodified>'
        "<oc:checksums><oc:checksum>SHA1:0000000000000000000000000000000000000000</oc:checksum></oc:checksums>",
        'xmlns:oc="http://owncloud.org/ns"',
    )
    assert r.status_code == 207 and "200 OK" in r.text and "403" not in r.text and "424" not in r.text, r.text
    assert mtime_of(url + "/p.bin") == T2020
    # the client's checksum is not taken for the server's
    sums = sums_of(b"content")
    assert checksum_values(propfind(url + "/p.bin", "<oc:checksums/>")) == [f"SHA1:{sums.sha1} MD5:{sums.md5}"]


def test_proppatch_getlastmodified_and_win32_lastmodified(base):
    url, _ = base
    dav("PUT", url + "/g.txt", data=b"g")
    r = proppatch(url + "/g.txt", "<D:getlastmodified>Wed, 01 Jan 2020 12:00:00 GMT</D:getlastmodified>")
    assert r.status_code == 207 and "200 OK" in r.text, r.text
    assert mtime_of(url + "/g.txt") == T2020
    r = proppatch(
        url + "/g.txt",
        "<Z:Win32LastModifiedTime>Thu, 02 Jan 2020 12:00:00 GMT</Z:Win32LastModifiedTime>",
        'xmlns:Z="urn:schemas-microsoft-com:"',
    )
    assert r.status_code == 207 and "200 OK" in r.text, r.text
    assert mtime_of(url + "/g.txt") == T2020 + 86400


def test_a_bad_time_in_proppatch_changes_nothing(base):
    url, _ = base
    dav("PUT", url + "/k.txt", data=b"k", headers={"X-OC-Mtime": str(T2020)})
    for bad in ("soon", "1e18"):
        r = proppatch(
            url + "/k.txt", f'<lastmodified xmlns="DAV:">{bad}</lastmodified><D:displayname>x</D:displayname>'
        )
        assert r.status_code == 207 and "409" in r.text and "200 OK" not in r.text, r.text
    assert mtime_of(url + "/k.txt") == T2020
    assert dav("PROPFIND", url + "/", headers={"Depth": "1"}).status_code == 207


def test_oc_checksums_property(base):
    url, gw = base
    data = os.urandom(2 * MiB + 5)
    dav("PUT", url + "/c.bin", data=data)
    dav("MKCOL", url + "/dir")
    text = propfind(url + "/c.bin", "<oc:checksums/>", "<d:getcontentlength/>")
    want = f"SHA1:{hashlib.sha1(data).hexdigest()} MD5:{hashlib.md5(data).hexdigest()}"
    assert checksum_values(text) == [want], text
    # a folder has none; allprop does not list it (not an RFC 4918 property)
    listing = propfind(url + "/", "<oc:checksums/>", depth="1")
    assert listing.count("404 Not Found") == 2 and checksum_values(listing) == [want]  # "/" and "/dir"
    assert "checksum" not in dav("PROPFIND", url + "/c.bin", headers={"Depth": "0"}).text
    # COPY and MOVE keep them, with the time
    proppatch(url + "/c.bin", f"<D:lastmodified>{T2020}</D:lastmodified>")
    assert dav("COPY", url + "/c.bin", headers={"Destination": url + "/dir/copy.bin"}).status_code == 201
    assert dav("MOVE", url + "/c.bin", headers={"Destination": url + "/moved.bin"}).status_code == 201
    for path in ("/dir/copy.bin", "/moved.bin"):
        assert checksum_values(propfind(url + path, "<oc:checksums/>")) == [want], path
        assert mtime_of(url + path) == T2020, path
    # a file from before checksums were kept: the property is absent, the rest is there
    gw.repo.put_version("/legacy.bin", [])
    text = propfind(url + "/legacy.bin", "<oc:checksums/>", "<d:getcontentlength/>")
    assert "404 Not Found" in text and "200 OK" in text


def test_oc_checksum_announced_with_a_put_is_checked(base):
    url, _ = base
    data, other = b"the real body", b"what the client hashed"
    sha1, md5 = hashlib.sha1(data).hexdigest(), hashlib.md5(data).hexdigest()
    assert dav("PUT", url + "/ok.bin", data=data, headers={"OC-Checksum": f"SHA1:{sha1.upper()}"}).status_code == 201
    assert dav("PUT", url + "/ok.bin", data=data, headers={"OC-Checksum": f"MD5:{md5}"}).status_code == 204
    assert dav("PUT", url + "/ok.bin", data=data, headers={"OC-Checksum": "ADLER32:0badf00d"}).status_code == 204
    for header in (f"SHA1:{hashlib.sha1(other).hexdigest()}", f"MD5:{hashlib.md5(other).hexdigest()}",
                   f"SHA1:{sha1} MD5:{hashlib.md5(other).hexdigest()}"):  # fmt: skip
        r = dav("PUT", url + "/ok.bin", data=b"replacement", headers={"OC-Checksum": header})
        assert r.status_code == 400, header
        r = dav("PUT", url + "/new.bin", data=data, headers={"OC-Checksum": header})
        assert r.status_code == 400, header
    assert dav("GET", url + "/ok.bin").content == data  # the version before the refused PUTs
    assert dav("GET", url + "/new.bin").status_code == 404
