"""Earlier versions of files: kept after overwrites, read back, restored, pruned, replayed."""

import pytest
from sqlalchemy import select

from gateway import versions as fv
from gateway.errors import NotFound
from gateway.meta.repo import MetadataRepository
from gateway.meta.schema import objects
from gateway.sync.replay import apply_change

CONTENTS = [bytes([65 + i]) * (1000 + i) for i in range(6)]  # original + 5 overwrites


def _write_all(files, path="/f.bin"):
    for data in CONTENTS:
        files.write_bytes(path, data)


def _live_objects(repo) -> set[str]:
    with repo.engine.connect() as c:
        return {r[0] for r in c.execute(select(objects.c.id).where(objects.c.refcount > 0))}


def test_last_n_versions_read_back_and_restore(files, repo):
    repo.keep_versions = 3
    _write_all(files)
    vs = fv.list_versions(files, "/f.bin")
    assert [v.number for v in vs] == [1, 2, 3]
    for v, want in zip(vs, reversed(CONTENTS[2:5]), strict=True):
        assert v.size == len(want)
        assert fv.read_version(files, "/f.bin", v.number) == want
    with fv.open_version(files, "/f.bin", 2) as r:  # a range inside an earlier version
        r.seek(10)
        assert r.read(5) == CONTENTS[3][10:15]
    fv.restore_version(files, "/f.bin", 3)
    assert files.read_bytes("/f.bin") == CONTENTS[2]
    # the content current before the restore is now version 1; still 3 kept
    assert fv.read_version(files, "/f.bin", 1) == CONTENTS[5]
    assert len(fv.list_versions(files, "/f.bin")) == 3
    with pytest.raises(NotFound):
        fv.read_version(files, "/f.bin", 4)


def test_zero_keeps_none_and_gc_frees_them(files, repo):
    repo.keep_versions = 0
    _write_all(files)
    assert fv.list_versions(files, "/f.bin") == []
    files.collect_garbage(grace_s=0)
    assert len(_live_objects(repo)) == 1


def test_gc_prunes_beyond_setting_but_keeps_kept_versions(files, repo):
    from gateway.meta import versions as mv

    repo.keep_versions = 5
    _write_all(files)
    assert len(fv.list_versions(files, "/f.bin")) == 5
    repo.keep_versions = 2  # the setting was lowered: gc prunes
    assert mv.prune(repo, repo.keep_versions) == 3
    files.collect_garbage(grace_s=0)
    assert len(_live_objects(repo)) == 3  # current + 2 kept
    assert fv.read_version(files, "/f.bin", 1) == CONTENTS[4]
    assert fv.read_version(files, "/f.bin", 2) == CONTENTS[3]


def test_dedup_and_delete_release_versions(files, repo):
    repo.keep_versions = 4
    files.write_bytes("/a", b"same")
    files.write_bytes("/a", b"other")
    files.write_bytes("/a", b"same")  # shares the object of version 2
    assert len(_live_objects(repo)) == 2
    files.delete("/a")
    files.collect_garbage(grace_s=0)
    assert _live_objects(repo) == set()


def test_versions_follow_a_move(files, repo):
    repo.keep_versions = 2
    files.write_bytes("/a", b"one")
    files.write_bytes("/a", b"two")
    files.move("/a", "/b")
    assert fv.read_version(files, "/b", 1) == b"one"


def test_journal_replay_keeps_the_versions(tmp_path, store, db_url):
    from gateway.files import FileService
    from gateway.meta.ledger import LedgerMixin  # noqa: F401 - the journal lives there

    src = MetadataRepository.open(db_url, journal_enabled=True)
    src.keep_versions = 3
    files = FileService(src, store, tmp_dir=tmp_path / "t", chunk_size=1 << 20)
    _write_all(files)
    from gateway.meta import versions as mv

    fv.restore_version(files, "/f.bin", 2)
    src.keep_versions = 1
    mv.prune(src, 1)
    entries = [r.entry for r in src.journal_rows()] if hasattr(src, "journal_rows") else None
    if entries is None:
        import json

        from gateway.meta.schema import journal

        with src.engine.connect() as c:
            entries = [json.loads(r[0]) for r in c.execute(select(journal.c.entry).order_by(journal.c.seq))]
    dst = MetadataRepository.open(f"sqlite:///{tmp_path / 'replayed.db'}")
    dst.keep_versions = 0  # the journal says what was kept, not the replaying process
    for e in entries:
        apply_change(dst, e)
    out = FileService(dst, store, tmp_dir=tmp_path / "u", chunk_size=1 << 20)
    assert out.read_bytes("/f.bin") == files.read_bytes("/f.bin")
    want = [(v.size, v.etag) for v in fv.list_versions(files, "/f.bin")]
    assert [(v.size, v.etag) for v in fv.list_versions(out, "/f.bin")] == want
    assert fv.read_version(out, "/f.bin", 1) == fv.read_version(files, "/f.bin", 1)
    src.close()
    dst.close()


def test_fsck_finds_nothing_wrong_with_kept_versions(files, repo, store):
    from gateway.fsck import Fsck

    repo.keep_versions = 2
    _write_all(files)
    files.write_bytes("/g", b"x")
    files.delete("/g")
    files.collect_garbage(grace_s=0)
    report = Fsck(repo, store, object_hasher=files.object_hasher).run(repair=False, verify=1.0)
    assert report.findings == []
    assert report.objects_checked == 3  # current + 2 kept; the pruned and deleted ones are collected
