"""``HubEmulator``: a Hugging Face Hub emulator for the real ``huggingface_hub`` client over HTTP.

Two listening sockets on the same host:

- the **API origin** (``url``): ``/api/...``, the Git-LFS batch/verify endpoints and ``/resolve``;
  every request needs ``Authorization: Bearer <token>``;
- the **storage origin** (``storage_url``, another port): LFS uploads (``PUT``) and LFS downloads
  (``GET``/``HEAD`` with Range), no auth, like pre-signed S3 URLs. ``/resolve`` of an LFS file answers
  302 to this origin; since the origin differs, ``get_hf_file_metadata`` takes the metadata from the
  302 itself, and httpx drops the Authorization header on the redirect.

The storage origin also serves the Xet CAS API (xet.py): with ``hf_xet`` enabled the client gets a
CAS token from the Hub origin and uploads xorbs and shards there. Client setup:
``HfApi(endpoint=emu.url, token=emu.token)`` and ``emu.client_env(transport="lfs"|"xet")``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from .context import Config, HubContext
from .faults import FaultInjector
from .handler import EmulatorHTTPServer
from .router import Router
from .store import Commit, Repo, RepoStore

logger = logging.getLogger(__name__)


class HubEmulator:
    """Hub emulator serving repos kept under ``data_dir`` (state survives restarts on the same dir).

    ``options`` set fields of :class:`Config` (``username``, ``page_size``, ``expand_page_size``,
    ``commits_page_size``, ``lfs_threshold``, ``multipart_threshold``, ``multipart_chunk_size``,
    ``lfs_redirect``); ``emu.config`` can also be changed while running.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        storage_port: int = 0,
        token: str | None = "hf_test",
        commit_quota_per_hour: int | None = None,
        **options: Any,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self._port = port
        self._storage_port = storage_port
        self.config = dataclasses.replace(Config(), token=token, **options)
        self.faults = FaultInjector(commit_quota_per_hour)
        self.store = RepoStore(self.data_dir)
        self._ctx = HubContext(self.store, self.faults, self.config)
        self._router = Router(self._ctx)
        self._servers: list[EmulatorHTTPServer] = []
        self._threads: list[threading.Thread] = []

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> HubEmulator:
        """Bind both ports and serve in background threads. Idempotent."""
        if self._servers:
            return self
        api = EmulatorHTTPServer((self.host, self._port), self._ctx, self._router, "api")
        storage = EmulatorHTTPServer((self.host, self._storage_port), self._ctx, self._router, "storage")
        self._servers = [api, storage]
        self._port, self._storage_port = api.server_address[1], storage.server_address[1]
        url_host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        self._ctx.api_url = f"http://{url_host}:{self._port}"
        self._ctx.storage_url = f"http://{url_host}:{self._storage_port}"
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"hub-emulator-{server.role}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        logger.info("Hub emulator listening on %s (storage %s)", self.url, self.storage_url)
        return self

    def stop(self) -> None:
        """Stop serving, close open keep-alive connections and release the ports."""
        self.faults.clear()  # requests held by a "hang" fault end
        stoppers = [threading.Thread(target=server.shutdown) for server in self._servers]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        for server in self._servers:
            server.close_connections()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []

    def __enter__(self) -> HubEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The Hub endpoint, e.g. ``http://127.0.0.1:8765`` (use as ``HF_ENDPOINT``)."""
        return self._ctx.api_url

    @property
    def storage_url(self) -> str:
        """Base URL of the storage origin that LFS uploads and downloads go to."""
        return self._ctx.storage_url

    @property
    def port(self) -> int:
        return self._port

    @property
    def token(self) -> str | None:
        return self.config.token

    @property
    def stats(self) -> dict[str, int]:
        """Snapshot of the counters: requests, api_calls, commits, lfs_puts, bytes_in, bytes_out,
        resolve_gets, status_429, … (see ``context.STAT_KEYS``)."""
        return self._ctx.stats.snapshot()

    def reset_stats(self) -> None:
        self._ctx.stats.reset()

    def client_env(self, hf_home: str | Path | None = None, transport: str = "lfs") -> dict[str, str]:
        """Environment for a ``huggingface_hub`` client (to set before importing it); ``transport``
        ``xet`` lets the client upload through hf_xet to the emulated CAS."""
        env = {
            "HF_ENDPOINT": self.url,
            "HF_HUB_DISABLE_XET": "0" if transport == "xet" else "1",
            "HFDAV_HUB_TRANSPORT": transport,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }
        if self.token:
            env["HF_TOKEN"] = self.token
        if hf_home is not None:
            env["HF_HOME"] = str(hf_home)
        return env

    # -- inspection helpers -----------------------------------------------------------------------------------

    def create_repo(self, repo_id: str, repo_type: str = "dataset", *, private: bool = True) -> None:
        """Create a repo directly (no HTTP), with the Hub's initial ``.gitattributes`` commit."""
        self.store.create(repo_type, repo_id, private=private)

    def _repo(self, repo_id: str, repo_type: str) -> Repo:
        repo = self.store.get(repo_type, repo_id)
        if repo is None:
            raise KeyError(f"no {repo_type} repo {repo_id!r}")
        return repo

    def _commit(self, repo_id: str, repo_type: str, revision: str) -> tuple[Repo, Commit]:
        repo = self._repo(repo_id, repo_type)
        commit = repo.resolve(revision)
        if commit is None:
            raise KeyError(f"revision {revision!r} not found in {repo_id!r}")
        return repo, commit

    def repo_exists(self, repo_id: str, repo_type: str = "dataset") -> bool:
        return self.store.get(repo_type, repo_id) is not None

    def head(self, repo_id: str, repo_type: str = "dataset", branch: str = "main") -> str:
        """Commit SHA of ``branch``."""
        return self._commit(repo_id, repo_type, branch)[1].id

    def repo_files(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> dict[str, int]:
        """``path -> size`` of every file at ``revision`` (including ``.gitattributes``)."""
        _, commit = self._commit(repo_id, repo_type, revision)
        return {path: entry.size for path, entry in sorted(commit.tree.items())}

    def read_file(self, repo_id: str, path: str, repo_type: str = "dataset", revision: str = "main") -> bytes:
        """Content of a file (regular or LFS) at ``revision``."""
        repo, commit = self._commit(repo_id, repo_type, revision)
        entry = commit.tree.get(path)
        if entry is None:
            raise KeyError(f"{path!r} not found at {revision!r}")
        if entry.xet_hash:
            return b"".join(self._ctx.xet.read_range(entry.xet_hash, 0, entry.size - 1))
        return repo.path_of(entry).read_bytes()

    def xet_files(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> dict[str, str]:
        """``path -> Xet file hash`` of the files at ``revision`` whose content is in the Xet CAS."""
        _, commit = self._commit(repo_id, repo_type, revision)
        return {path: entry.xet_hash for path, entry in sorted(commit.tree.items()) if entry.xet_hash}

    def lfs_object_path(self, repo_id: str, oid: str, repo_type: str = "dataset") -> Path:
        """Where this repo stores (or would store) the LFS object ``oid``."""
        return self._repo(repo_id, repo_type).lfs_path(oid)

    def all_lfs_objects(self, repo_id: str, repo_type: str = "dataset") -> set[str]:
        """Oids of every LFS object the repo stores, referenced or not."""
        return self._repo(repo_id, repo_type).lfs_oids()

    def commit_count(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> int:
        """Number of commits in the history of ``revision`` (the initial commit included)."""
        repo, commit = self._commit(repo_id, repo_type, revision)
        return sum(1 for _ in repo.history(commit.id))

    def commit_titles(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> list[str]:
        """Titles of the history of ``revision``, newest first."""
        repo, commit = self._commit(repo_id, repo_type, revision)
        return [item.title for item in repo.history(commit.id)]
