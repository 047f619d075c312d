"""Fixtures and helpers for the Hub backend tests: the Hub emulator, settings pointing at it,
gateways in-process and as ``hfdav serve`` subprocesses. Test modules import what they use.

huggingface_hub reads ``HF_HUB_DISABLE_XET`` and friends when it is imported, so they are set
here before anything imports it (and ``constants.HF_HUB_DISABLE_XET`` is patched per test too).
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HFDAV_HUB_TRANSPORT", "lfs")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="hf-home-"))

import contextlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import requests  # noqa: E402
from huggingface_hub import constants  # noqa: E402

from gateway.app import Gateway, build_gateway  # noqa: E402
from gateway.config import load_settings  # noqa: E402
from tests.hub_emulator import HubEmulator  # noqa: E402

REPO = "testuser/store"
TOKEN = "hf_test"
PASSWORD = "secret-admin"
MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


#: Transports the Hub tests run with, each test once per transport (conftest.py); set
#: ``HFDAV_TEST_HUB_TRANSPORTS=lfs`` (or ``xet``) to run one only.
HUB_TRANSPORTS = tuple(
    t for t in os.environ.get("HFDAV_TEST_HUB_TRANSPORTS", "lfs,xet").replace(" ", "").split(",") if t
)

#: Raw-target regexes of the storage requests that upload an object's bytes / serve them, per transport.
UPLOAD_PUTS = {"lfs": r"^/upload/", "xet": r"^/xorb-uploads/"}
STORAGE_READS = {"lfs": r"^/objects/", "xet": r"^/xet-bridge/"}


def use_hub_transport(transport: str, monkeypatch: pytest.MonkeyPatch, xet_cache: Path) -> None:
    """Point this process's huggingface_hub at ``transport`` (``lfs``: classic LFS, ``xet``: hf_xet to
    the emulator's CAS) for one test, restored afterwards; used by the ``hub_transport`` fixture
    (conftest.py), which runs each Hub test with both.

    With Xet the test gets an hf_xet session of its own (the library keeps one per process), with
    its cache in ``xet_cache``, outside any gateway data dir (a test may wipe one while the session
    lives): the local dedup of one test never refers to xorbs of another test's emulator, which may
    have had the same port. ``hub_env`` reads the transport back from ``HFDAV_HUB_TRANSPORT``."""
    xet = transport == "xet"
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", not xet)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "0" if xet else "1")
    monkeypatch.setenv("HFDAV_HUB_TRANSPORT", transport)
    if xet:
        from huggingface_hub.utils import _xet

        monkeypatch.setenv("HF_XET_CACHE", str(xet_cache))
        if hasattr(constants, "HF_XET_CACHE"):
            monkeypatch.setattr(constants, "HF_XET_CACHE", str(xet_cache))
        monkeypatch.setattr(_xet, "_GLOBAL_XET_HOLDER", _xet.XetSessionHolder())


@pytest.fixture(name="emulator")
def emulator_fixture(tmp_path: Path, hub_transport: str) -> Iterator[HubEmulator]:
    """A Hub emulator on free ports (it speaks LFS and Xet); the client uses ``hub_transport``, and
    nothing went the other way (with Xet the LFS batch API is never called, with LFS no xorb sent)."""
    with HubEmulator(tmp_path / "hub-emulator", token=TOKEN) as emu:
        yield emu
        stats = emu.stats
    other = ("lfs_batches", "lfs_puts") if hub_transport == "xet" else ("xet_xorbs", "xet_shards")
    assert not any(stats[key] for key in other), f"{hub_transport} test used the other transport: {stats}"


def current_transport() -> str:
    """The transport the running test chose (``hub_transport``), ``lfs`` outside such a test."""
    return "xet" if os.environ.get("HFDAV_HUB_TRANSPORT") == "xet" else "lfs"


def hub_env(emu: HubEmulator, data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment of a gateway on the emulator: 1 MiB chunks, commits after 1 s, a budget that
    does not slow tests down, no trash (deletes are final). The transport is the test's
    (``hub_transport``); a ``hfdav serve`` subprocess keeps its Xet cache in its data dir."""
    transport = current_transport()
    env = {
        "HF_DATASET_REPO": REPO,
        "HF_TOKEN": TOKEN,
        "HF_ENDPOINT": emu.url,
        "HF_HUB_DISABLE_XET": "0" if transport == "xet" else "1",
        "HFDAV_HUB_TRANSPORT": transport,
        "HF_XET_CACHE": str(data_dir / ".cache" / "hf" / "xet"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HOME": str(data_dir.parent / "hf-home"),
        "HFDAV_DATA_DIR": str(data_dir),
        "HFDAV_CHUNK_SIZE": "1MiB",
        "HFDAV_COMMIT_INTERVAL": "1",
        "HFDAV_COMMITS_PER_HOUR": "3600",
        "HFDAV_TRASH_DAYS": "0",
        "SYS_TOKEN": PASSWORD,
        "HFDAV_LOG_LEVEL": "INFO",
    }
    env.update(extra)
    return env


@contextlib.contextmanager
def in_process_gateway(env: dict[str, str]) -> Iterator[Gateway]:
    """``build_gateway`` on settings from ``env``; closed (uploads drained) at the end."""
    gw = build_gateway(load_settings(env))
    try:
        yield gw
    finally:
        gw.close()


def hub_sync(gw: Gateway):
    """The gateway's HubSync (its only background task with a committer)."""
    return next(t for t in gw.background if hasattr(t, "committer"))


def commit_sizes(emu: HubEmulator, repo_id: str = REPO) -> list[int]:
    """Operations per commit, oldest first (added, changed or deleted paths between a commit and
    its parent), from the emulator's own history."""
    repo = emu.store.get("dataset", repo_id)
    chain = list(repo.history(emu.head(repo_id)))
    sizes = []
    for commit in reversed(chain):
        parent = repo.get_commit(commit.parents[0]).tree if commit.parents else {}
        changed = {p for p, e in commit.tree.items() if parent.get(p) != e}
        changed |= {p for p in parent if p not in commit.tree}
        sizes.append(len(changed))
    return sizes


class Server:
    """``hfdav serve`` (cheroot) in a subprocess on a free port."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self._log = None

    def start(self, timeout: float = 60.0) -> Server:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", "0"],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.PIPE,
            cwd=str(ROOT),
        )
        found: dict[str, str] = {}

        def pump() -> None:
            for raw in self.proc.stderr:
                self._log.write(raw)
                self._log.flush()
                m = re.search(rb"hfdav serving (http://\S+) \(cheroot\)", raw)
                if m and "url" not in found:
                    found["url"] = m.group(1).decode().rstrip("/")

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while "url" not in found:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"hfdav serve did not start; see {self.log_path}:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)
        self.url = found["url"]
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def session(self) -> requests.Session:
        s = requests.Session()
        s.auth = ("admin", PASSWORD)
        return s

    @property
    def origin(self) -> str:
        """``http://host:port`` (without the share prefix)."""
        return "/".join(self.url.split("/")[:3])

    def health(self) -> dict:
        return requests.get(self.origin + "/healthz", auth=("admin", PASSWORD), timeout=10).json()

    def wait_synced(self, timeout: float = 120.0) -> dict:
        """Wait until nothing is staged, pending or uncommitted; returns the store's status."""
        deadline = time.monotonic() + timeout
        status: dict = {}
        while time.monotonic() < deadline:
            status = self.health()["checks"]["store"]
            if not status["pending_changes"] and not status["staged_bytes"] and not status["uncommitted_objects"]:
                return status
            time.sleep(0.2)
        raise AssertionError(f"not synced after {timeout} s: {status}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._close_log()

    def stop(self, timeout: float = 90.0) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._close_log()
        return self.proc.returncode if self.proc else 0

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@contextlib.contextmanager
def served(env: dict[str, str], log_path: Path) -> Iterator[Server]:
    server = Server(env, log_path).start()
    try:
        yield server
    finally:
        server.stop()


def journal_documents(emu: HubEmulator, repo_id: str = REPO) -> list[dict]:
    """Every line of every journal file at the head, parsed (for format checks)."""
    out = []
    for path in sorted(emu.repo_files(repo_id)):
        if path.startswith("journal/"):
            out.extend(json.loads(line) for line in emu.read_file(repo_id, path).decode().splitlines() if line)
    return out


OBJECT_PATH_RE = re.compile(r"^objects/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})$")
JOURNAL_PATH_RE = re.compile(r"^journal/(\d{10})\.jsonl$")
SNAPSHOT_PATH_RE = re.compile(r"^snapshots/(\d{10})\.jsonl\.gz$")
#: The Hub's hard limit of entries per folder.
FOLDER_LIMIT = 10_000


def check_repo_format(emu: HubEmulator, work_dir: Path, repo_id: str = REPO) -> dict:
    """Check the repo against FORMAT.md using huggingface_hub's own listing and download calls
    (not hfdav's): every file is of a documented kind, objects and snapshots are LFS files whose
    sha256 the listing confirms, folders stay under the Hub's limit, journal files are what they
    say, and every object the current tree needs is in the repo (alone or inside a pack).
    Returns counts for the caller to check further."""
    import gzip

    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=emu.url, token=TOKEN)
    entries = list(api.list_repo_tree(repo_id, repo_type="dataset", recursive=True))
    files = {e.path: e for e in entries if isinstance(e, RepoFile)}
    per_folder: dict[str, int] = {}
    for e in entries:
        parent = e.path.rsplit("/", 1)[0] if "/" in e.path else ""
        per_folder[parent] = per_folder.get(parent, 0) + 1
    assert max(per_folder.values()) < FOLDER_LIMIT

    def fetch(path: str) -> bytes:
        local = hf_hub_download(repo_id, path, repo_type="dataset", endpoint=emu.url, token=TOKEN, cache_dir=work_dir)
        return Path(local).read_bytes()

    manifest = json.loads(fetch("hfdav.json"))
    assert manifest["format"] == "hfdav-dataset-repo" and manifest["version"] == 1
    assert manifest["object_ids"] in ("sha256", "keyed") and manifest["chunk_size"] > 0
    attributes = fetch(".gitattributes").decode()
    assert "objects/** filter=lfs diff=lfs merge=lfs -text" in attributes

    objects: dict[str, int] = {}
    journals: dict[int, list[dict]] = {}
    snapshots: dict[int, list[dict]] = {}
    for path, f in files.items():
        if path in (".gitattributes", "hfdav.json"):
            continue
        if m := OBJECT_PATH_RE.match(path):
            oid = m.group(3)
            assert (m.group(1), m.group(2)) == (oid[:2], oid[2:4]), path
            assert f.lfs is not None, f"{path} is not an LFS file"
            objects[oid] = f.size
        elif m := JOURNAL_PATH_RE.match(path):
            journals[int(m.group(1))] = [json.loads(line) for line in fetch(path).decode().splitlines() if line]
        elif m := SNAPSHOT_PATH_RE.match(path):
            assert f.lfs is not None, f"{path} is not an LFS file"
            lines = gzip.decompress(fetch(path)).decode().splitlines()
            snapshots[int(m.group(1))] = [json.loads(line) for line in lines if line]
        else:
            raise AssertionError(f"undocumented file in the repo: {path}")
    assert len(snapshots) <= 1, "older snapshots are deleted by the commit of a newer one"

    # replay what a rebuild reads: snapshot then journal files in batch order
    base = max(snapshots, default=0)
    located: dict[str, str] = {}
    tree: dict[str, list] = {}
    if base:
        header, *items = snapshots[base]
        assert header["v"] == 1 and header["snapshot"] == base
        for item in items:
            if "n" in item:
                path, is_dir, *_rest, parts = item["n"]
                if not is_dir:
                    tree[path] = parts
            elif "o" in item and item["o"][2]:
                located[item["o"][0]] = item["o"][2]
    previous_through = None
    for batch in sorted(journals):
        assert batch > base, "journal files a snapshot covers are deleted with it"
        header, *items = journals[batch]
        assert header["v"] == 1 and header["batch"] == batch
        if previous_through is not None:
            assert header["through"] >= previous_through
        previous_through = header["through"]
        for item in items:
            if "pack" in item:
                for oid, _offset, _size in item["members"]:
                    located[oid] = item["pack"]
            else:
                change = item["e"]
                if change["op"] == "put":
                    tree[change["path"]] = change["extents"]
                elif change["op"] == "delete":
                    tree = {
                        p: v for p, v in tree.items() if p != change["path"] and not p.startswith(change["path"] + "/")
                    }
                elif change["op"] == "move":
                    src, dst = change["src"], change["dst"]
                    tree = {
                        (dst + p[len(src) :] if p == src or p.startswith(src + "/") else p): v for p, v in tree.items()
                    }
                elif change["op"] == "copy":
                    src, dst = change["src"], change["dst"]
                    tree.update(
                        {dst + p[len(src) :]: v for p, v in list(tree.items()) if p == src or p.startswith(src + "/")}
                    )
    missing = []
    for path, parts in tree.items():
        for oid, _off, _len in parts:
            holder = located.get(oid, oid)
            if holder not in objects:
                missing.append((path, oid))
    assert not missing, f"objects the tree needs are not in the repo: {missing[:5]}"
    return {"objects": len(objects), "journals": len(journals), "snapshots": len(snapshots), "files": len(tree)}
