import pytest

from gateway.errors import AlreadyExists
from gateway.files import FileService
from gateway.trash import TRASH_PATH, Trash


@pytest.fixture
def clock():
    class Clock:
        now = 1_800_000_000.0

        def __call__(self):
            return self.now

    return Clock()


@pytest.fixture
def tfiles(repo, store, tmp_path, clock):
    trash = Trash(repo, days=7, clock=clock)
    return FileService(repo, store, tmp_dir=tmp_path / "t", chunk_size=1 << 20, trash=trash)


def test_delete_goes_to_trash_and_restores(tfiles):
    tfiles.mkdir("/docs")
    tfiles.write_bytes("/docs/a.txt", b"alpha")
    tfiles.delete("/docs/a.txt")
    assert tfiles.stat("/docs/a.txt") is None
    [entry] = tfiles.trash.entries()
    assert entry.original_path == "/docs/a.txt" and entry.size == 5 and not entry.is_dir
    assert tfiles.read_bytes(entry.trash_path) == b"alpha"
    assert tfiles.trash.restore(entry.trash_path) == "/docs/a.txt"
    assert tfiles.read_bytes("/docs/a.txt") == b"alpha"
    assert tfiles.trash.entries() == []


def test_folder_delete_and_restore_elsewhere(tfiles):
    tfiles.mkdir("/p")
    tfiles.mkdir("/p/q")
    tfiles.write_bytes("/p/q/f", b"x")
    tfiles.delete("/p")
    [entry] = tfiles.trash.entries()
    assert entry.original_path == "/p" and entry.is_dir and entry.size == 1
    tfiles.mkdir("/p")
    with pytest.raises(AlreadyExists):
        tfiles.trash.restore(entry.trash_path)
    tfiles.trash.restore(entry.trash_path, to="/p-restored")
    assert tfiles.read_bytes("/p-restored/q/f") == b"x"


def test_purge_after_days_frees_objects(tfiles, store, clock):
    tfiles.write_bytes("/old", b"o" * 100)
    tfiles.delete("/old")
    clock.now += 3 * 86400
    tfiles.write_bytes("/new", b"n" * 100)
    tfiles.delete("/new")
    clock.now += 5 * 86400  # /old is 8 days in the trash, /new 5
    assert tfiles.trash.purge() == 1
    assert [e.original_path for e in tfiles.trash.entries()] == ["/new"]
    tfiles.collect_garbage(grace_s=-1)
    assert len(list(store.list_ids())) == 1


def test_delete_inside_trash_is_final(tfiles):
    tfiles.write_bytes("/f", b"1")
    tfiles.delete("/f")
    [entry] = tfiles.trash.entries()
    tfiles.delete(entry.trash_path)
    assert tfiles.trash.entries() == []
    assert tfiles.repo.get(TRASH_PATH) is not None


def test_same_name_deleted_twice(tfiles, clock):
    for content in (b"v1", b"v2"):
        tfiles.write_bytes("/same", content)
        tfiles.delete("/same")
        clock.now += 1
    entries = tfiles.trash.entries()
    assert [tfiles.read_bytes(e.trash_path) for e in entries] == [b"v1", b"v2"]
