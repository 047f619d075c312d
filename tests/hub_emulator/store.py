"""On-disk repository state: commits, branches, regular blobs and per-repo LFS objects.

Layout under ``<data_dir>/repos/<type>/<namespace>/<name>/``::

    repo.json            {"type", "id", "private", "createdAt"}
    refs.json            {"<branch>": "<commit sha>"}
    commits/<sha>.json   {"id", "parents", "title", "message", "date", "authors",
                          "tree": {path: {"oid", "size", "lfs", "blob"[, "sha256"]}}}
    blobs/<sha1>         regular file contents, named by git blob SHA-1
    lfs/<sha256>         LFS objects of this repo only (the Hub validates ``lfsFile`` oids per repo)
    xet/<sha256>.json    files uploaded to the Xet CAS for this repo: {"xet_hash", "size"} (see xet.py)
    tmp/                 uploads in progress

Every JSON file is replaced atomically (write to a temporary file, then ``os.replace``), so the
state survives a restart of the emulator on the same ``data_dir``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import gitutil

logger = logging.getLogger(__name__)

REPO_TYPES = ("model", "dataset", "space", "kernel")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_HEX40_RE = re.compile(r"^[0-9a-f]{40}$")
_PREFIX_RE = re.compile(r"^[0-9a-f]{7,40}$")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def valid_repo_id(repo_id: str) -> bool:
    """A repo id is ``namespace/name`` with Hub-safe characters (no traversal, no ``.git`` suffix)."""
    parts = repo_id.split("/")
    return len(parts) == 2 and all(_NAME_RE.match(p) and ".." not in p for p in parts) and not parts[1].endswith(".git")


@dataclass(frozen=True)
class FileEntry:
    """One file of a commit tree. ``oid`` is the git blob SHA-1 (of the pointer for LFS files).
    ``xet_hash`` is set for an LFS file whose content is in the Xet CAS rather than in ``lfs/``."""

    oid: str
    size: int
    lfs: bool
    blob: str
    sha256: str | None = None
    xet_hash: str | None = None

    @property
    def pointer_size(self) -> int:
        """Length of the LFS pointer file (only meaningful for LFS entries)."""
        return len(gitutil.lfs_pointer(self.sha256 or "", self.size))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"oid": self.oid, "size": self.size, "lfs": self.lfs, "blob": self.blob}
        if self.sha256:
            data["sha256"] = self.sha256
        if self.xet_hash:
            data["xetHash"] = self.xet_hash
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileEntry:
        return cls(data["oid"], data["size"], data["lfs"], data["blob"], data.get("sha256"), data.get("xetHash"))

    @classmethod
    def for_lfs(cls, sha256: str, size: int) -> FileEntry:
        return cls(gitutil.git_blob_sha1(gitutil.lfs_pointer(sha256, size)), size, True, f"lfs/{sha256}", sha256)

    @classmethod
    def for_xet(cls, sha256: str, size: int, xet_hash: str) -> FileEntry:
        pointer_oid = gitutil.git_blob_sha1(gitutil.lfs_pointer(sha256, size))
        return cls(pointer_oid, size, True, f"xet/{sha256}.json", sha256, xet_hash)


@dataclass
class Commit:
    """An immutable commit: metadata plus the full flat tree ``path -> FileEntry``."""

    id: str
    parents: list[str]
    title: str
    message: str
    date: str
    authors: list[str]
    tree: dict[str, FileEntry] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parents": self.parents,
            "title": self.title,
            "message": self.message,
            "date": self.date,
            "authors": self.authors,
            "tree": {path: entry.to_json() for path, entry in sorted(self.tree.items())},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Commit:
        tree = {path: FileEntry.from_json(entry) for path, entry in data["tree"].items()}
        return cls(data["id"], data["parents"], data["title"], data["message"], data["date"], data["authors"], tree)

    @classmethod
    def create(
        cls, parents: list[str], title: str, message: str, authors: list[str], tree: dict[str, FileEntry]
    ) -> Commit:
        """Build a new commit; its id is a SHA-1 over its content plus a random nonce."""
        date = gitutil.iso_now()
        seed = json.dumps([parents, title, message, date, authors, sorted(tree), uuid.uuid4().hex])
        return cls(hashlib.sha1(seed.encode()).hexdigest(), parents, title, message, date, authors, dict(tree))


class TreeView:
    """Read index over one commit's tree: files, directories, children and git oids."""

    def __init__(self, commit: Commit) -> None:
        self.commit = commit
        self.files = commit.tree
        self.dir_oids = gitutil.directory_oids({path: entry.oid for path, entry in self.files.items()})
        self.children: dict[str, list[str]] = {directory: [] for directory in self.dir_oids}
        for path in list(self.dir_oids) + list(self.files):
            if path:
                self.children[path.rpartition("/")[0]].append(path)

    def is_dir(self, path: str) -> bool:
        return path in self.dir_oids

    def descendants(self, directory: str) -> Iterator[str]:
        """All files and directories below ``directory`` (depth first)."""
        for child in self.children.get(directory, []):
            yield child
            if child in self.dir_oids:
                yield from self.descendants(child)


class Repo:
    """One repository on disk. ``lock`` serializes every write (commits, squash, uploads' final rename)."""

    def __init__(self, root: Path, meta: dict[str, Any]) -> None:
        self.root = root
        self.meta = meta
        self.lock = threading.RLock()
        self._commits: dict[str, Commit] = {}
        self._views: OrderedDict[str, TreeView] = OrderedDict()
        refs_file = root / "refs.json"
        self.refs: dict[str, str] = json.loads(refs_file.read_text()) if refs_file.exists() else {}

    @property
    def repo_type(self) -> str:
        return self.meta["type"]

    @property
    def repo_id(self) -> str:
        return self.meta["id"]

    @property
    def private(self) -> bool:
        return bool(self.meta.get("private", False))

    def save_meta(self) -> None:
        write_atomic(self.root / "repo.json", json.dumps(self.meta, indent=1).encode())

    # -- commits and refs -------------------------------------------------------------------------------------

    def get_commit(self, sha: str) -> Commit | None:
        commit = self._commits.get(sha)
        if commit is None and _HEX40_RE.match(sha):
            try:
                data = json.loads((self.root / "commits" / f"{sha}.json").read_text())
            except FileNotFoundError:  # unknown, or forgotten by a super-squash
                return None
            commit = Commit.from_json(data)
            self._commits[sha] = commit
        return commit

    def resolve(self, revision: str) -> Commit | None:
        """Resolve a branch name, a full commit SHA or a unique SHA prefix (>= 7 hex chars)."""
        if revision in self.refs:
            return self.get_commit(self.refs[revision])
        if _HEX40_RE.match(revision):
            return self.get_commit(revision)
        if _PREFIX_RE.match(revision):
            matches = [p.stem for p in (self.root / "commits").glob(f"{revision}*.json")]
            if len(matches) == 1:
                return self.get_commit(matches[0])
        return None

    def add_commit(self, commit: Commit, branch: str) -> None:
        """Persist ``commit`` and move ``branch`` to it (commit file first, then the ref)."""
        with self.lock:
            write_atomic(self.root / "commits" / f"{commit.id}.json", json.dumps(commit.to_json()).encode())
            self._commits[commit.id] = commit
            self.set_ref(branch, commit.id)

    def set_ref(self, branch: str, sha: str) -> None:
        with self.lock:
            refs = dict(self.refs)
            refs[branch] = sha
            write_atomic(self.root / "refs.json", json.dumps(refs, indent=1).encode())
            self.refs = refs

    def history(self, sha: str) -> Iterator[Commit]:
        """Commits from ``sha`` back to the root, following first parents (newest first)."""
        commit = self.get_commit(sha)
        while commit is not None:
            yield commit
            commit = self.get_commit(commit.parents[0]) if commit.parents else None

    def tree_view(self, commit: Commit) -> TreeView:
        """Cached ``TreeView`` of a commit (commits are immutable)."""
        with self.lock:
            view = self._views.get(commit.id)
            if view is None:
                view = TreeView(commit)
                self._views[commit.id] = view
                while len(self._views) > 16:
                    self._views.popitem(last=False)
            else:
                self._views.move_to_end(commit.id)
            return view

    # -- contents ---------------------------------------------------------------------------------------------

    def path_of(self, entry: FileEntry) -> Path:
        return self.root / entry.blob

    def lfs_path(self, oid: str) -> Path:
        return self.root / "lfs" / oid

    def lfs_size(self, oid: str) -> int | None:
        """Size of the stored LFS object ``oid``, or None if this repo does not hold it."""
        try:
            return self.lfs_path(oid).stat().st_size
        except (FileNotFoundError, OSError):
            return None

    def xet_file(self, sha256: str) -> tuple[str, int] | None:
        """``(xet file hash, size)`` of a file a shard uploaded for this repo declared, or None."""
        try:
            data = json.loads((self.root / "xet" / f"{sha256}.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return data["xet_hash"], data["size"]

    def add_xet_file(self, sha256: str, xet_hash: str, size: int) -> None:
        write_atomic(self.root / "xet" / f"{sha256}.json", json.dumps({"xet_hash": xet_hash, "size": size}).encode())

    def lfs_oids(self) -> set[str]:
        directory = self.root / "lfs"
        return {p.name for p in directory.iterdir()} if directory.exists() else set()

    def store_blob(self, content: bytes) -> FileEntry:
        """Store a regular file's content (content-addressed) and return its tree entry."""
        oid = gitutil.git_blob_sha1(content)
        path = self.root / "blobs" / oid
        if not path.exists():
            write_atomic(path, content)
        return FileEntry(oid, len(content), False, f"blobs/{oid}")

    def temp_path(self, suffix: str = "") -> Path:
        """A fresh path in the repo's ``tmp/`` folder, on the same filesystem as the stores."""
        directory = self.root / "tmp"
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f"{uuid.uuid4().hex}{suffix}"

    def install_lfs_object(self, tmp: Path, oid: str) -> None:
        """Move a verified upload into ``lfs/<oid>``."""
        target = self.lfs_path(oid)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)

    # -- maintenance ------------------------------------------------------------------------------------------

    def collect_garbage(self) -> dict[str, int]:
        """Forget commits unreachable from any branch, then blobs and LFS objects no reachable tree uses."""
        with self.lock:
            reachable: set[str] = set()
            used: set[str] = {"repo.json"}
            for sha in self.refs.values():
                for commit in self.history(sha):
                    if commit.id in reachable:
                        break
                    reachable.add(commit.id)
                    used.update(entry.blob for entry in commit.tree.values())
            removed = {"commits": 0, "blobs": 0, "lfs": 0}
            for path in (self.root / "commits").glob("*.json"):
                if path.stem not in reachable:
                    path.unlink(missing_ok=True)
                    self._commits.pop(path.stem, None)
                    self._views.pop(path.stem, None)
                    removed["commits"] += 1
            for kind in ("blobs", "lfs"):
                directory = self.root / kind
                for path in directory.iterdir() if directory.exists() else ():
                    if f"{kind}/{path.name}" not in used:
                        path.unlink(missing_ok=True)
                        removed[kind] += 1
            return removed


class RepoStore:
    """Registry of the repos under ``<data_dir>/repos``, loaded lazily from disk."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "repos"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._repos: dict[tuple[str, str], Repo] = {}

    def _dir(self, repo_type: str, repo_id: str) -> Path:
        return self.root / repo_type / repo_id

    def _load(self, repo_type: str, repo_id: str) -> Repo | None:
        """Cached or on-disk repo; the caller holds ``self._lock``."""
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            directory = self._dir(repo_type, repo_id)
            meta_file = directory / "repo.json"
            if not meta_file.exists():
                return None
            repo = Repo(directory, json.loads(meta_file.read_text()))
            self._repos[(repo_type, repo_id)] = repo
        return repo

    def get(self, repo_type: str, repo_id: str) -> Repo | None:
        if repo_type not in REPO_TYPES or not valid_repo_id(repo_id):
            return None
        with self._lock:
            return self._load(repo_type, repo_id)

    def create(self, repo_type: str, repo_id: str, *, private: bool) -> tuple[Repo, bool]:
        """Create a repo with the Hub's initial commit (``.gitattributes``); return ``(repo, created)``."""
        if repo_type not in REPO_TYPES or not valid_repo_id(repo_id):
            raise ValueError(f"invalid repo {repo_type}/{repo_id}")
        with self._lock:
            existing = self._load(repo_type, repo_id)
            if existing is not None:
                return existing, False
            directory = self._dir(repo_type, repo_id)
            shutil.rmtree(directory, ignore_errors=True)  # leftovers of a create interrupted before repo.json
            meta = {"type": repo_type, "id": repo_id, "private": private, "createdAt": gitutil.iso_now()}
            repo = Repo(directory, meta)
            entry = repo.store_blob(gitutil.DEFAULT_GITATTRIBUTES.encode())
            initial = Commit.create([], "initial commit", "", ["system"], {".gitattributes": entry})
            repo.add_commit(initial, "main")
            repo.save_meta()  # written last: a repo exists once repo.json does
            self._repos[(repo_type, repo_id)] = repo
            logger.info("created %s repo %s", repo_type, repo_id)
            return repo, True

    def delete(self, repo_type: str, repo_id: str) -> bool:
        """Delete a repo and all its objects (a re-created repo starts with an empty LFS store)."""
        if repo_type not in REPO_TYPES or not valid_repo_id(repo_id):
            return False
        with self._lock:
            repo = self._load(repo_type, repo_id)
            if repo is None:
                return False
            with repo.lock:  # let a commit in progress finish first
                self._repos.pop((repo_type, repo_id), None)
                trash = repo.root.with_name(f".deleted-{repo.root.name}-{uuid.uuid4().hex}")
                os.replace(repo.root, trash)
        shutil.rmtree(trash, ignore_errors=True)
        return True
