"""Metadata repository: runs on SQLite and on PostgreSQL (skipped with a reason if absent)."""

import json

import pytest

from gateway.errors import AlreadyExists, Conflict, NotFound
from gateway.meta.repo import Extent, MetadataRepository, NewObject


def put(repo, path, *oids, size=10):
    parts = [Extent(i * size, oid, 0, size) for i, oid in enumerate(oids)]
    return repo.put_version(path, parts, new_objects=[NewObject(o, size) for o in set(oids)])


def refcount(repo, oid):
    row = repo.get_object(oid)
    return row.refcount if row else None


def test_root_exists(repo):
    root = repo.get("")
    assert root.is_dir and root.id == 1


def test_mkdir_put_list(repo):
    repo.mkdir("/a")
    node = put(repo, "/a/f", "o1", "o2")
    assert node.size == 20 and not node.is_dir
    assert [n.name for n in repo.children(repo.get("/a").id)] == ["f"]
    assert [e.object_id for e in repo.extents(node.version_id)] == ["o1", "o2"]
    assert refcount(repo, "o1") == 1


def test_missing_parent_and_conflicts(repo):
    with pytest.raises(Conflict):
        put(repo, "/nope/f", "o1")
    repo.mkdir("/d")
    with pytest.raises(AlreadyExists):
        repo.mkdir("/d")
    with pytest.raises(Conflict):
        put(repo, "/d", "o1")
    put(repo, "/file", "o1")
    with pytest.raises(Conflict):
        repo.mkdir("/file/sub")


def test_overwrite_releases_old_version(repo):
    put(repo, "/f", "old")
    put(repo, "/f", "new")
    assert refcount(repo, "old") == 0 and repo.get_object("old").orphaned_at is not None
    assert refcount(repo, "new") == 1
    assert [o.id for o in repo.orphans(older_than=1e12)] == ["old"]


def test_dedup_shared_object(repo):
    put(repo, "/a", "same")
    put(repo, "/b", "same")
    assert refcount(repo, "same") == 2
    repo.delete("/a")
    assert refcount(repo, "same") == 1 and repo.get_object("same").orphaned_at is None


def test_move_subtree_keeps_ids_and_props(repo):
    repo.mkdir("/x")
    repo.mkdir("/x/y")
    f = put(repo, "/x/y/f", "o1")
    repo.set_property(f.id, "{ns:}p", "<p/>")
    repo.mkdir("/z")
    repo.move("/x", "/z/x2")
    assert repo.get("/x") is None and repo.get("/x/y/f") is None
    moved = repo.get("/z/x2/y/f")
    assert moved.id == f.id
    assert repo.get_properties(moved.id) == {"{ns:}p": "<p/>"}
    with pytest.raises(Conflict):
        repo.move("/z", "/z/x2/inside")


def test_move_prefix_is_not_a_string_prefix(repo):
    repo.mkdir("/ab")
    repo.mkdir("/abc")
    put(repo, "/abc/f", "o1")
    repo.move("/ab", "/q")
    assert repo.get("/abc/f") is not None


def test_copy_tree_shares_objects(repo):
    repo.mkdir("/s")
    put(repo, "/s/f", "o1", "o2")
    repo.copy("/s", "/t")
    assert repo.get("/t/f").size == 20
    assert refcount(repo, "o1") == 2
    repo.delete("/s")
    assert refcount(repo, "o1") == 1
    assert repo.get("/t/f") is not None


def test_delete_subtree(repo):
    repo.mkdir("/d")
    repo.mkdir("/d/e")
    put(repo, "/d/e/f", "o1")
    removed = repo.delete("/d")
    assert {n.path for n in removed} == {"/d", "/d/e", "/d/e/f"}
    assert refcount(repo, "o1") == 0
    with pytest.raises(NotFound):
        repo.delete("/d")
    with pytest.raises(Conflict):
        repo.delete("")


def test_used_bytes_and_etag(repo):
    a = put(repo, "/a", "o1")
    b = put(repo, "/b", "o1")
    assert repo.used_bytes() == 20 and repo.stored_bytes() == 10
    assert a.etag == b.etag  # same content, same strong etag
    c = put(repo, "/a", "o2")
    assert c.etag != a.etag


def test_lock_conflict_checked_in_transaction(repo):
    from gateway.meta.repo import LockRow

    row = LockRow("t1", "/f", "0", "exclusive", "write", "<o/>", "u", 60, 1e12)
    repo.create_lock(row, lambda existing: None)
    with pytest.raises(Conflict):
        repo.create_lock(row.__class__(**{**row.__dict__, "token": "t2"}), lambda ex: "busy" if ex else None)
    assert [lk.token for lk in repo.all_locks()] == ["t1"]


def test_journal_records_changes(db_url):
    repo = MetadataRepository.open(db_url, journal_enabled=True)
    try:
        repo.mkdir("/j")
        put(repo, "/j/f", "o1")
        repo.move("/j/f", "/j/g")
        repo.delete("/j")
        from sqlalchemy import select

        from gateway.meta.schema import journal

        with repo.engine.connect() as c:
            ops = [json.loads(r[0])["op"] for r in c.execute(select(journal.c.entry).order_by(journal.c.seq))]
        assert ops == ["mkdir", "put", "move", "delete"]
    finally:
        repo.close()


def test_children_order_and_count(repo):
    for name in ["b", "a", "c"]:
        put(repo, f"/{name}", "o" + name)
    assert [n.name for n in repo.children(1)] == ["a", "b", "c"]
    assert repo.count_nodes() == 4


def test_object_states_are_stored_as_their_strings(repo):
    """Object states are an enum whose members are the strings the database holds: a state
    written as a member reads back as the same string (a driver adapting enums by name would
    store ``STAGED`` instead), and a plain string from an older row matches its member."""
    from sqlalchemy import select

    from gateway.meta.records import ObjectState
    from gateway.meta.schema import OBJECT_STATES, objects

    assert [str(s) for s in OBJECT_STATES] == ["staged", "uploaded", "committed", "deleting", "packed"]
    repo.put_version("/f", [Extent(0, "o1", 0, 5)], new_objects=[NewObject("o1", 5)], object_state=ObjectState.STAGED)
    assert repo.mark_uploaded("o1", None, None) == "uploaded"
    repo.mark_committed(["o1"])
    with repo.engine.connect() as c:
        stored = c.execute(select(objects.c.state).where(objects.c.id == "o1")).scalar()
    assert type(stored) is str and stored == "committed" == ObjectState.COMMITTED
    repo.set_object_state(["o1"], ObjectState.DELETING, only_from=ObjectState.COMMITTED)
    assert repo.get_object("o1").state == "deleting"
    assert repo.objects_in_state(ObjectState.DELETING)[0].id == "o1"


def test_copied_folder_is_listed_in_its_new_parent(repo):
    """A recursive copy of a folder links the copy to the folder it lands in (it used to get
    no parent, so that listing the destination folder did not show it)."""
    repo.mkdir("/a")
    repo.mkdir("/a/b")
    put(repo, "/a/b/f", "o1")
    repo.mkdir("/dst")
    copied = repo.copy("/a", "/dst/a")
    dst = repo.get("/dst")
    assert copied.parent_id == dst.id
    assert [n.name for n in repo.children(dst.id)] == ["a"]
    assert [n.name for n in repo.children(copied.id)] == ["b"]
    assert [n.name for n in repo.children(repo.get("/dst/a/b").id)] == ["f"]
