"""Shared state handed to every endpoint: configuration, counters, store, faults and base URLs."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .faults import FaultInjector
from .httpio import Request
from .store import RepoStore
from .xet import XetCas

URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/", "kernel": "kernels/"}
API_PLURALS = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}

MiB = 1 << 20
GiB = 1 << 30


@dataclass
class Config:
    """Tunable behaviour. Page sizes follow the Hub (tree 1000, 50 with ``expand``). ``xet_*``: lifetime
    of CAS tokens and of signed storage URLs (s), and whether a shard's files are checked against
    their sha256 on upload, and whether xorbs are uploaded through grants (else ``/v1/xorbs``), see xet.py."""

    token: str | None = "hf_test"
    username: str = "testuser"
    #: More tokens that the emulator accepts for reading only (whoami says role "read"; writes: 403).
    read_tokens: tuple[str, ...] = ()
    #: Namespaces the user may not write to (creating or changing a repo there: 403).
    foreign_namespaces: tuple[str, ...] = ()
    page_size: int = 1000
    expand_page_size: int = 50
    commits_page_size: int = 50
    lfs_threshold: int = 10 * MiB
    multipart_threshold: int = 5 * GiB
    multipart_chunk_size: int = 512 * MiB
    lfs_redirect: bool = True
    xet_token_ttl: int = 3600
    xet_url_ttl: int = 3600
    xet_verify_files: bool = True
    xet_upload_grants: bool = True


STAT_KEYS = (
    "requests",
    "api_calls",
    "commits",
    "commit_requests",
    "preuploads",
    "lfs_batches",
    "lfs_puts",
    "lfs_parts",
    "lfs_verifies",
    "tree_pages",
    "paths_info",
    "super_squashes",
    "resolve_heads",
    "resolve_gets",
    "storage_gets",
    "bytes_in",
    "bytes_out",
    "status_4xx",
    "status_5xx",
    "status_429",
    "faults_fired",
    "dropped_connections",
    "xet_tokens",
    "xet_dedup_queries",
    "xet_grant_requests",
    "xet_grant_puts",
    "xet_xorbs",
    "xet_shards",
    "xet_files",
    "xet_reconstructions",
    "xet_xorb_gets",
    "xet_telemetry",
)


class Stats:
    """Thread-safe counters; ``snapshot()`` returns a plain dict."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(STAT_KEYS, 0)

    def incr(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(STAT_KEYS, 0)


class HubContext:
    """What the endpoints share. ``api_url``/``storage_url`` are set once the sockets are bound."""

    def __init__(self, store: RepoStore, faults: FaultInjector, config: Config) -> None:
        self.store = store
        self.faults = faults
        self.config = config
        self.stats = Stats()
        self.api_url = ""
        self.storage_url = ""
        self.xet = XetCas(store.root.parent)

    def api_base(self, req: Request) -> str:
        """The endpoint as the client addressed it (``url``/``commitUrl`` must use the client's host)."""
        host = req.headers.get("Host")
        return f"http://{host}" if host else self.api_url

    def repo_url(self, req: Request, repo_type: str, repo_id: str) -> str:
        return f"{self.api_base(req)}/{URL_PREFIXES[repo_type]}{repo_id}"

    def storage_object_url(self, repo_type: str, repo_id: str, oid: str) -> str:
        """Off-origin, unauthenticated URL of an LFS object (GET/HEAD with Range)."""
        return f"{self.storage_url}/objects/{repo_type}/{repo_id}/{oid}"

    def storage_upload_url(self, repo_type: str, repo_id: str, oid: str, part: int | None = None) -> str:
        suffix = f"/{part}" if part is not None else ""
        return f"{self.storage_url}/upload/{repo_type}/{repo_id}/{oid}{suffix}"
