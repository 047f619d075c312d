"""Fixtures and helpers for the Hub backend tests: the Hub emulator, settings pointing at it,
gateways in-process and as ``hfdav serve`` subprocesses. Test modules import what they use.

huggingface_hub reads ``HF_HUB_DISABLE_XET`` and friends when it is imported, so they are set
here before anything imports it (and ``constants.HF_HUB_DISABLE_XET`` is patched per test too).
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
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


@pytest.fixture
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubEmulator]:
    """A Hub emulator on free ports; the client library is kept off Xet."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    with HubEmulator(tmp_path / "hub-emulator", token=TOKEN) as emu:
        yield emu


def hub_env(emu: HubEmulator, data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment of a gateway on the emulator: 1 MiB chunks, commits after 1 s, a budget that
    does not slow tests down, no trash (deletes are final)."""
    env = {
        "HF_DATASET_REPO": REPO,
        "HF_TOKEN": TOKEN,
        "HF_ENDPOINT": emu.url,
        "HF_HUB_DISABLE_XET": "1",
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
        return requests.get(self.origin + "/healthz", timeout=10).json()

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
