"""fsck finds every defect planted on purpose, repairs what it can, names affected files."""

import os

import pytest
from sqlalchemy import update

from gateway.fsck import Fsck
from gateway.meta.schema import extents, objects
from gateway.packing import Packer

MiB = 1 << 20


@pytest.fixture
def fsck(files, store):
    return Fsck(files.repo, store, object_hasher=files.object_hasher)


def kinds(report):
    return sorted(f.kind for f in report.findings)


def test_clean_store_is_clean(files, store, fsck):
    files.write_bytes("/a", os.urandom(2 * MiB + 5))
    for i in range(5):
        files.write_bytes(f"/s{i}", os.urandom(100))
    Packer(files.repo, store, tmp_dir=files.tmp_dir, object_hasher=files.object_hasher).pack_small_objects(force=True)
    report = fsck.run(verify=1.0)
    assert report.clean, report.findings
    assert report.objects_hashed == report.objects_checked


def test_planted_defects_are_all_found(files, store, fsck):
    files.write_bytes("/big", os.urandom(2 * MiB))
    files.write_bytes("/victim", os.urandom(MiB + 1))
    files.write_bytes("/bitrot", os.urandom(1000))
    files.write_bytes("/gone", os.urandom(500))
    repo = files.repo
    [bitrot] = repo.extents(files.stat("/bitrot").version_id)
    [gone] = repo.extents(files.stat("/gone").version_id)
    big0 = repo.extents(files.stat("/big").version_id)[0]
    # 1. bit rot in a stored object
    with open(store.path_of(bitrot.object_id), "r+b") as f:
        f.write(b"\x00\x01\x02")
    # 2. an object deleted behind the database's back
    store.path_of(gone.object_id).unlink()
    # 3. a wrong refcount
    with repo.engine.begin() as c:
        c.execute(update(objects).where(objects.c.id == big0.object_id).values(refcount=7))
    # 4. a stray object in the store
    stray_id = "ffee" + "0" * 60
    (store.root / "ff" / "ee").mkdir(parents=True, exist_ok=True)
    (store.root / "ff" / "ee" / stray_id).write_bytes(b"stray")
    # 5. an extent gap
    vid = files.stat("/victim").version_id
    with repo.engine.begin() as c:
        c.execute(update(extents).where((extents.c.version_id == vid) & (extents.c.seq == 1)).values(file_offset=5))
    report = fsck.run(verify=1.0)
    assert kinds(report) == ["extent-gap", "hash", "missing-object", "refcount", "stray-object"]
    by_kind = {f.kind: f for f in report.findings}
    assert by_kind["hash"].files == ("/bitrot",)
    assert by_kind["missing-object"].files == ("/gone",)
    # repair fixes refcount and adopts the stray as an orphan; the rest stays reported
    fixed = fsck.run(repair=True)
    assert {f.kind for f in fixed.findings if f.repaired} == {"refcount", "stray-object"}
    again = fsck.run()
    assert kinds(again) == ["extent-gap", "missing-object"]
    files.collect_garbage(grace_s=-1)
    assert not (store.root / "ff" / "ee" / stray_id).exists()


def test_pack_defects(files, store, fsck):
    for i in range(4):
        files.write_bytes(f"/p{i}", os.urandom(300))
    Packer(files.repo, store, tmp_dir=files.tmp_dir, object_hasher=files.object_hasher).pack_small_objects(force=True)
    [pack] = [o for o in files.repo.all_objects() if o.is_pack]
    with files.repo.engine.begin() as c:
        c.execute(update(objects).where(objects.c.id == pack.id).values(refcount=1))
    with open(store.path_of(pack.id), "r+b") as f:
        f.seek(350)
        f.write(b"XX")
    report = fsck.run(verify=1.0)
    assert kinds(report) == ["hash", "hash", "refcount"]  # the pack and the member at 300..600
    member_hash = [f for f in report.findings if f.kind == "hash" and f.subject != pack.id]
    assert len(member_hash) == 1 and member_hash[0].files == ("/p1",)
