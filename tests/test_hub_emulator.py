"""The Hub emulator driven by the real huggingface_hub client over HTTP (Xet disabled)."""

from __future__ import annotations

import os
import tempfile

# The client reads these at import time: set them before importing huggingface_hub.
os.environ.update(
    {
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "0",
    }
)
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="hf-home-"))

import hashlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx2  # noqa: E402
import pytest  # noqa: E402
from huggingface_hub import (  # noqa: E402
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    HfFileSystem,
    constants,
    get_session,
    hf_hub_download,
)
from huggingface_hub.errors import (  # noqa: E402
    BadRequestError,
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.hub_emulator import HubEmulator  # noqa: E402

REPO = "testuser/store"
TOKEN = "hf_test"
MiB = 1 << 20

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def emu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubEmulator]:
    with HubEmulator(tmp_path / "hub", token=TOKEN) as emulator:
        for name, value in emulator.client_env(tmp_path / "hf-home").items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        yield emulator


@pytest.fixture
def api(emu: HubEmulator) -> HfApi:
    return HfApi(endpoint=emu.url, token=TOKEN)


@pytest.fixture
def repo(api: HfApi) -> str:
    api.create_repo(REPO, repo_type="dataset", private=True)
    return REPO


def commit(api: HfApi, operations: list, message: str = "update", **kwargs):
    return api.create_commit(REPO, operations, commit_message=message, repo_type="dataset", **kwargs)


def resolve_url(emu: HubEmulator, revision: str, path: str) -> str:
    return f"{emu.url}/datasets/{REPO}/resolve/{revision}/{path}"


AUTH = {"authorization": f"Bearer {TOKEN}"}


# -- repos ------------------------------------------------------------------------------------------------------


def test_create_repo_private_and_exist_ok(api: HfApi, emu: HubEmulator) -> None:
    url = api.create_repo(REPO, repo_type="dataset", private=True)
    assert url == f"{emu.url}/datasets/{REPO}"
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(REPO, repo_type="dataset", private=True)
    assert err.value.response.status_code == 409
    assert api.create_repo(REPO, repo_type="dataset", private=True, exist_ok=True) == url
    info = api.dataset_info(REPO)
    assert info.private is True and info.sha == emu.head(REPO)
    assert emu.repo_files(REPO) == {".gitattributes": len(emu.read_file(REPO, ".gitattributes"))}


def test_auth_and_not_found_errors(repo: str, emu: HubEmulator) -> None:
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=emu.url, token="hf_wrong").dataset_info(repo)
    assert err.value.response.status_code == 401
    assert err.value.response.headers["X-Error-Message"] == "Invalid credentials in Authorization header"
    api = HfApi(endpoint=emu.url, token=TOKEN)
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info("testuser/missing")
    with pytest.raises(RevisionNotFoundError):
        api.dataset_info(repo, revision="nope")
    token = get_session().get(f"{emu.url}/api/datasets/{repo}/xet-write-token/main", headers=AUTH)
    assert token.status_code == 200 and token.json()["casUrl"] == token.headers["X-Xet-Cas-Url"] == emu.storage_url
    assert get_session().get(f"{emu.url}/api/datasets/{repo}/xet-read-token/nope", headers=AUTH).status_code == 404
    assert get_session().get(f"{emu.url}/api/agent-harnesses").json() == {"standardEnvVars": [], "harnesses": {}}


# -- commits ----------------------------------------------------------------------------------------------------


def test_preupload_and_commit_lfs_and_regular_then_delete(api: HfApi, repo: str, emu: HubEmulator) -> None:
    big = os.urandom(3 * MiB)
    small = b'{"version": 1}\n'
    ops = [CommitOperationAdd("chunks/00/a.bin", big), CommitOperationAdd("meta/index.json", small)]
    api.preupload_lfs_files(repo, ops, repo_type="dataset")
    assert emu.stats["lfs_puts"] == 1 and emu.stats["commits"] == 0
    info = commit(api, ops, "add files")
    assert info.oid == emu.head(repo)
    assert emu.repo_files(repo)["chunks/00/a.bin"] == len(big)
    assert emu.read_file(repo, "chunks/00/a.bin") == big
    assert emu.read_file(repo, "meta/index.json") == small
    oid = hashlib.sha256(big).hexdigest()
    assert emu.lfs_object_path(repo, oid).read_bytes() == big
    assert emu.all_lfs_objects(repo) == {oid}

    commit(api, [CommitOperationDelete("meta/index.json")], "delete")
    assert "meta/index.json" not in emu.repo_files(repo)
    with pytest.raises(EntryNotFoundError):
        commit(api, [CommitOperationDelete("meta/index.json")], "delete again")
    commit(api, [CommitOperationDelete("chunks/", is_folder=True)], "delete folder")
    assert set(emu.repo_files(repo)) == {".gitattributes"}
    assert emu.commit_count(repo) == 4


def test_identical_upload_makes_no_commit(api: HfApi, repo: str, emu: HubEmulator) -> None:
    data = os.urandom(MiB)
    commit(api, [CommitOperationAdd("a.bin", data)])
    count = emu.commit_count(repo)
    commit(api, [CommitOperationAdd("a.bin", data)])
    assert emu.commit_count(repo) == count


def test_commit_with_unknown_lfs_oid_is_rejected(api: HfApi, repo: str, emu: HubEmulator) -> None:
    data = os.urandom(MiB)
    op = CommitOperationAdd("x.bin", data)
    api.preupload_lfs_files(repo, [op], repo_type="dataset")
    emu.lfs_object_path(repo, hashlib.sha256(data).hexdigest()).unlink()
    with pytest.raises(BadRequestError, match="LFS pointer pointed to a file that does not exist"):
        commit(api, [op])

    body = "\n".join(
        json.dumps(line)
        for line in (
            {"key": "header", "value": {"summary": "bad", "description": ""}},
            {"key": "lfsFile", "value": {"path": "x.bin", "algo": "sha256", "oid": "0" * 64, "size": 1}},
        )
    )
    response = get_session().post(
        f"{emu.url}/api/datasets/{repo}/commit/main",
        content=body.encode(),
        headers={**AUTH, "content-type": "application/x-ndjson"},
    )
    assert response.status_code == 400
    assert "LFS pointer pointed to a file that does not exist" in response.json()["error"]


def test_parent_commit_mismatch_is_412(api: HfApi, repo: str, emu: HubEmulator) -> None:
    first = emu.head(repo)
    commit(api, [CommitOperationAdd("a.txt", b"a\n")], parent_commit=first)
    with pytest.raises(HfHubHTTPError) as err:
        commit(api, [CommitOperationAdd("b.txt", b"b\n")], parent_commit=first)
    assert err.value.response.status_code == 412
    assert "b.txt" not in emu.repo_files(repo)


# -- listings ---------------------------------------------------------------------------------------------------


def test_list_repo_tree_recursive_with_paging(api: HfApi, repo: str, emu: HubEmulator) -> None:
    emu.config.page_size = 5
    files = {f"data/{i % 3}/f{i:02d}.txt": f"file {i}\n".encode() for i in range(12)}
    commit(api, [CommitOperationAdd(path, data) for path, data in files.items()])
    emu.reset_stats()
    entries = list(api.list_repo_tree(repo, repo_type="dataset", recursive=True))
    file_paths = {e.path for e in entries if hasattr(e, "blob_id")}
    assert file_paths == set(files) | {".gitattributes"}
    assert {e.path for e in entries if not hasattr(e, "blob_id")} == {"data", "data/0", "data/1", "data/2"}
    assert len(entries) == 17 and emu.stats["tree_pages"] == 4
    children = list(api.list_repo_tree(repo, path_in_repo="data/1", repo_type="dataset"))
    assert sorted(e.path for e in children) == sorted(p for p in files if p.startswith("data/1/"))
    expanded = list(api.list_repo_tree(repo, path_in_repo="data", repo_type="dataset", expand=True))
    assert all(e.last_commit is not None and e.last_commit.oid == emu.head(repo) for e in expanded)
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(repo, path_in_repo="missing", repo_type="dataset"))


def test_get_paths_info(api: HfApi, repo: str) -> None:
    data = os.urandom(2 * MiB)
    commit(api, [CommitOperationAdd("chunks/00/a.bin", data), CommitOperationAdd("readme.txt", b"hi\n")])
    infos = {
        i.path: i
        for i in api.get_paths_info(repo, ["chunks/00/a.bin", "chunks", "readme.txt", "nope"], repo_type="dataset")
    }
    assert set(infos) == {"chunks/00/a.bin", "chunks", "readme.txt"}
    assert infos["chunks/00/a.bin"].lfs.sha256 == hashlib.sha256(data).hexdigest()
    assert infos["chunks/00/a.bin"].size == len(data)
    assert infos["readme.txt"].lfs is None
    assert infos["chunks"].tree_id


def test_list_repo_commits_paged(api: HfApi, repo: str, emu: HubEmulator) -> None:
    emu.config.commits_page_size = 2
    for i in range(4):
        commit(api, [CommitOperationAdd(f"f{i}.txt", b"%d\n" % i)], f"commit {i}")
    commits = api.list_repo_commits(repo, repo_type="dataset")
    assert [c.title for c in commits] == ["commit 3", "commit 2", "commit 1", "commit 0", "initial commit"]
    assert commits[0].commit_id == emu.head(repo)


def test_super_squash_history_forgets_unreferenced_lfs(api: HfApi, repo: str, emu: HubEmulator) -> None:
    kept, dropped = os.urandom(MiB), os.urandom(MiB)
    commit(api, [CommitOperationAdd("kept.bin", kept), CommitOperationAdd("dropped.bin", dropped)])
    old = emu.head(repo)
    commit(api, [CommitOperationDelete("dropped.bin")])
    assert len(emu.all_lfs_objects(repo)) == 2
    api.super_squash_history(repo, repo_type="dataset", commit_message="squashed")
    assert emu.commit_count(repo) == 1
    assert emu.commit_titles(repo) == ["squashed"]
    assert emu.all_lfs_objects(repo) == {hashlib.sha256(kept).hexdigest()}
    assert set(emu.repo_files(repo)) == {".gitattributes", "kept.bin"}
    with pytest.raises(RevisionNotFoundError):
        list(api.list_repo_tree(repo, repo_type="dataset", revision=old))


# -- downloads --------------------------------------------------------------------------------------------------


def test_hf_hub_download_follows_off_origin_redirect(api: HfApi, repo: str, emu: HubEmulator, tmp_path: Path) -> None:
    data = os.urandom(3 * MiB)
    commit(api, [CommitOperationAdd("chunks/a.bin", data), CommitOperationAdd("small.txt", b"small\n")])
    head = get_session().head(resolve_url(emu, "main", "chunks/a.bin"), headers=AUTH, follow_redirects=False)
    assert head.status_code == 302
    assert head.headers["Location"].startswith(emu.storage_url) and emu.storage_url != emu.url
    assert head.headers["X-Linked-Etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert head.headers["X-Linked-Size"] == str(len(data))
    assert head.headers["X-Repo-Commit"] == emu.head(repo)
    emu.reset_stats()
    path = hf_hub_download(
        repo, "chunks/a.bin", repo_type="dataset", endpoint=emu.url, token=TOKEN, cache_dir=tmp_path / "cache"
    )
    assert Path(path).read_bytes() == data
    assert emu.stats["storage_gets"] == 1 and emu.stats["resolve_heads"] == 1
    path = hf_hub_download(
        repo, "small.txt", repo_type="dataset", endpoint=emu.url, token=TOKEN, cache_dir=tmp_path / "cache"
    )
    assert Path(path).read_bytes() == b"small\n"


def test_ranged_get_pinned_to_commit(api: HfApi, repo: str, emu: HubEmulator) -> None:
    data = os.urandom(3 * MiB)
    text = b"0123456789" * 10
    sha = commit(api, [CommitOperationAdd("a.bin", data), CommitOperationAdd("t.txt", text)]).oid
    session = get_session()
    response = session.get(resolve_url(emu, sha, "a.bin"), headers={**AUTH, "range": "bytes=1000-1999"})
    assert response.status_code == 206
    assert response.content == data[1000:2000]
    assert response.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    response = session.get(resolve_url(emu, sha, "t.txt"), headers={**AUTH, "range": "bytes=-5"})
    assert response.status_code == 206 and response.content == text[-5:]
    assert response.headers["X-Repo-Commit"] == sha
    response = session.get(resolve_url(emu, sha, "t.txt"), headers={**AUTH, "range": "bytes=500-"})
    assert response.status_code == 416 and response.headers["Content-Range"] == f"bytes */{len(text)}"
    missing = session.head(resolve_url(emu, sha, "nope.txt"), headers=AUTH)
    assert missing.status_code == 404 and missing.headers["X-Error-Code"] == "EntryNotFound"


# -- faults -----------------------------------------------------------------------------------------------------


def test_injected_429_on_preupload_is_retried_by_client(api: HfApi, repo: str, emu: HubEmulator) -> None:
    rule = emu.faults.add(method="POST", path=r"/preupload/", kind="status", status=429, times=1, reset=0)
    commit(api, [CommitOperationAdd("a.txt", b"a\n")])
    assert rule.hits == 1 and emu.stats["status_429"] == 1
    assert "a.txt" in emu.repo_files(repo)


def test_dropped_lfs_put_is_retried_by_client(api: HfApi, repo: str, emu: HubEmulator) -> None:
    rule = emu.faults.add(method="PUT", path=r"/upload/", kind="drop_before")
    data = os.urandom(2 * MiB)
    commit(api, [CommitOperationAdd("a.bin", data)])
    assert rule.hits == 1 and emu.stats["dropped_connections"] == 1
    assert emu.read_file(repo, "a.bin") == data


def test_injected_503_on_commit_raises(api: HfApi, repo: str, emu: HubEmulator) -> None:
    emu.faults.add(method="POST", path=r"/commit/", kind="status", status=503, times=2)
    with pytest.raises(HfHubHTTPError) as err:
        commit(api, [CommitOperationAdd("a.txt", b"a\n")])
    assert err.value.response.status_code == 503
    assert emu.commit_count(repo) == 1 and len(emu.faults.rules) == 1


def test_lost_commit_answer_applies_commit(api: HfApi, repo: str, emu: HubEmulator) -> None:
    emu.faults.lose_commit_answer()
    with pytest.raises(httpx2.TransportError):
        commit(api, [CommitOperationAdd("a.txt", b"a\n")])
    assert emu.read_file(repo, "a.txt") == b"a\n"
    assert emu.commit_count(repo) == 2 and emu.stats["commits"] == 1
    commit(api, [CommitOperationAdd("b.txt", b"b\n")])  # the connection pool recovers
    assert "b.txt" in emu.repo_files(repo)


def test_connection_dropped_after_reading_commit_body(api: HfApi, repo: str, emu: HubEmulator) -> None:
    emu.faults.add(method="POST", path=r"/commit/", kind="drop_after_read")
    with pytest.raises(httpx2.TransportError):
        commit(api, [CommitOperationAdd("a.txt", b"a\n")])
    assert emu.commit_count(repo) == 1 and "a.txt" not in emu.repo_files(repo)
    assert emu.stats["dropped_connections"] == 1 and emu.stats["bytes_in"] > 0


def test_commit_quota_answers_429(api: HfApi, repo: str, emu: HubEmulator) -> None:
    emu.faults.set_commit_quota(2)
    commit(api, [CommitOperationAdd("a.txt", b"a\n")])
    commit(api, [CommitOperationAdd("b.txt", b"b\n")])
    with pytest.raises(HfHubHTTPError) as err:
        commit(api, [CommitOperationAdd("c.txt", b"c\n")])
    assert err.value.response.status_code == 429
    assert "hourly quotas for action: commit" in str(err.value)
    assert "c.txt" not in emu.repo_files(repo)
    emu.faults.commit_quota.reset()
    commit(api, [CommitOperationAdd("c.txt", b"c\n")])


# -- transfers and lifecycle ------------------------------------------------------------------------------------


def test_multipart_upload(api: HfApi, repo: str, emu: HubEmulator) -> None:
    emu.config.multipart_threshold = MiB
    emu.config.multipart_chunk_size = MiB
    data = os.urandom(3 * MiB + 7)
    commit(api, [CommitOperationAdd("big.bin", data)])
    assert emu.stats["lfs_parts"] == 4
    assert emu.read_file(repo, "big.bin") == data


def test_large_streamed_upload_and_download(api: HfApi, repo: str, emu: HubEmulator, tmp_path: Path) -> None:
    source = tmp_path / "chunk.bin"
    block = os.urandom(MiB)
    with open(source, "wb") as fh:
        for i in range(52):
            fh.write(block[i:] + block[:i])
    commit(api, [CommitOperationAdd("chunks/big.bin", source)])
    assert emu.repo_files(repo)["chunks/big.bin"] == 52 * MiB
    path = hf_hub_download(
        repo, "chunks/big.bin", repo_type="dataset", endpoint=emu.url, token=TOKEN, cache_dir=tmp_path / "cache"
    )
    assert Path(path).read_bytes() == source.read_bytes()


def test_state_persists_across_restart(api: HfApi, repo: str, emu: HubEmulator, tmp_path: Path) -> None:
    data = os.urandom(MiB)
    sha = commit(api, [CommitOperationAdd("a.bin", data), CommitOperationAdd("b.txt", b"b\n")]).oid
    emu.stop()
    with HubEmulator(emu.data_dir, token=TOKEN) as again:
        assert again.head(repo) == sha
        api2 = HfApi(endpoint=again.url, token=TOKEN)
        assert {e.path for e in api2.list_repo_tree(repo, repo_type="dataset")} == {".gitattributes", "a.bin", "b.txt"}
        path = hf_hub_download(
            repo, "a.bin", repo_type="dataset", endpoint=again.url, token=TOKEN, cache_dir=tmp_path / "cache"
        )
        assert Path(path).read_bytes() == data


def test_standalone_module(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.hub_emulator", "--port", "0", "--data-dir", str(tmp_path / "hub")],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline().strip()  # type: ignore[union-attr]
        assert line.startswith("HUB EMULATOR LISTENING http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        assert HfApi(endpoint=url, token=TOKEN).create_repo(REPO, repo_type="dataset") == f"{url}/datasets/{REPO}"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_delay_fault_and_drop_after_on_lfs_put(api: HfApi, repo: str, emu: HubEmulator) -> None:
    emu.faults.add(method="GET", path=r"/tree/", kind="delay", seconds=0.3)
    started = time.monotonic()
    assert {e.path for e in api.list_repo_tree(repo, repo_type="dataset")} == {".gitattributes"}
    assert time.monotonic() - started >= 0.3
    rule = emu.faults.add(method="PUT", path=r"/upload/", kind="drop_after")
    data = os.urandom(MiB)
    commit(api, [CommitOperationAdd("a.bin", data)])  # the PUT is stored, the client retries it anyway
    assert rule.hits == 1 and emu.stats["lfs_puts"] == 2
    assert emu.read_file(repo, "a.bin") == data


def test_concurrent_commits_are_serialized(api: HfApi, repo: str, emu: HubEmulator) -> None:
    def add(i: int) -> str:
        return commit(api, [CommitOperationAdd(f"c/{i}.bin", os.urandom(256 * 1024))], f"c{i}").oid

    with ThreadPoolExecutor(6) as pool:
        oids = list(pool.map(add, range(6)))
    assert len(set(oids)) == 6 and emu.commit_count(repo) == 7
    assert {p for p in emu.repo_files(repo) if p.startswith("c/")} == {f"c/{i}.bin" for i in range(6)}


def test_hf_file_system_range_reads(api: HfApi, repo: str, emu: HubEmulator) -> None:
    data = os.urandom(3 * MiB)
    sha = commit(api, [CommitOperationAdd("chunks/a.bin", data)]).oid
    fs = HfFileSystem(endpoint=emu.url, token=TOKEN, skip_instance_cache=True)
    with fs.open(f"datasets/{repo}/chunks/a.bin", "rb", revision=sha, block_size=MiB) as fh:
        fh.seek(MiB + 10)
        assert fh.read(100) == data[MiB + 10 : MiB + 110]
    assert fs.info(f"datasets/{repo}/chunks/a.bin", revision=sha)["size"] == len(data)


def test_lfs_objects_are_scoped_per_repo(api: HfApi, repo: str, emu: HubEmulator) -> None:
    data = os.urandom(MiB)
    commit(api, [CommitOperationAdd("a.bin", data)])
    api.delete_repo(repo, repo_type="dataset")
    assert not emu.repo_exists(repo)
    api.create_repo(repo, repo_type="dataset", private=True)
    assert emu.all_lfs_objects(repo) == set()
    commit(api, [CommitOperationAdd("a.bin", data)])  # uploaded again into the new repo's store
    assert emu.all_lfs_objects(repo) == {hashlib.sha256(data).hexdigest()}
