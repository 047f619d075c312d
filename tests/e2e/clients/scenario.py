"""One scenario for every WebDAV client library the end-to-end tests drive, and its checks.

A client is driven by a small script in its own language (``driver.mjs``, ``driver.pl``, …).
The script reads a plan (a JSON list of steps) on stdin, runs each step through the library
the way an application would, and prints one JSON result per step on stdout:
``{"ok": true, "value": ...}`` or ``{"ok": false, "status": 423, "error": "..."}``. A failed
step does not stop the run. Paths in the plan are plain share paths (``/dir/中文 #1.txt``);
each driver hands them to its library in the form the library documents (decoded, or
percent-encoded where the library expects a URI).

Steps: ``mkdir``, ``put`` (``file``; ``stream`` to upload from a stream; ``locked`` to send
the lock token this client holds for the path, or for ``lock_of``; ``overwrite: false`` to
refuse replacing an existing file), ``put_foreign`` (from a second client
instance that holds no locks), ``list`` (the library's own listing: name, size, is-dir),
``get`` (into ``file``), ``copy``/``move`` (``from``, ``to``; ``overwrite: false`` sends
``Overwrite: F``; ``depth: "0"`` copies a folder without its members), ``delete``, ``lock`` (value:
the token), ``unlock``.

Each name goes through mkdir, upload, list, download, copy (into a second folder), move
(back, renamed) and delete (of the renamed file). Then a folder is copied (Depth infinity and
Depth 0), moved and deleted as a whole; COPY, MOVE and PUT are told not to overwrite an
existing file; and for clients that lock, a file is locked, written under the lock, refused
to a second client, unlocked and moved while locked, and a folder is locked with Depth
infinity so that a new file inside needs its token. :func:`cases` turns the outcome into one pytest case per
(name, operation), so a known server defect can be marked ``xfail`` for exactly the cases it
breaks. What the library reports is checked, and so is what the server holds afterwards
(plain HTTP PROPFIND/GET beside the client).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.e2e.support import MiB, all_paths

#: Names with every character class that needs care in a URL or in XML: reserved URL
#: delimiters, ``%`` (must not be decoded twice), ``+`` (not a space in a path), ``'`` and
#: ``&`` (XML attribute and entity syntax), runs of spaces, CJK and non-BMP emoji.
NAMES = {
    "question": "why? not.txt",
    "hash": "issue #12.txt",
    "percent": "100% sure %41.txt",
    "delims": "a&b+c;d=e'f.txt",
    "spaces": "two  spaces and end .txt",
    "cjk": "中文文件 データ.txt",
    "emoji": "emoji 😀🎉 ✓.txt",
    # as macOS writes names; hfdav keeps and lists names in NFC (gateway/paths.py), so it is
    # listed as "café" with a composed é, and found under either spelling
    "nfd": "cafe\u0301 decomposed.txt",
    "backslash": "back\\slash {braces} [brackets] ~tilde.txt",
    "edges": " leading and trailing .txt ",
}
#: A file of several 1 MiB chunks (the test server's chunk size), not chunk-aligned.
BIG = ("big", "big 大 #%&+;' 🎉.bin", 3 * MiB + 12345)
#: The folders: names with the same characters (``?`` only in file names: a folder named
#: with ``?`` would route every copy and move into it through the known Destination defect).
FOLDER = "/dir #%&+;' 目录 🎉"
COPIES = "/copies 100% & 副本"
#: The lock sequence's file: every awkward character, ``?`` included (no Destination involved).
LOCKED = "locked ?#%&+;' 锁 🔒.txt"
MOVED_LOCKED = "moved under lock 🔒.txt"
#: A folder copied and moved as a whole (Depth: infinity), with a file and a subfolder inside.
TREE = "/tree & 100% 🌳"
TREE_FILE = "sub #1/leaf & 叶 🍃.txt"
TREE_COPY = "/tree copy #2 副本"
TREE_MOVED = "/tree moved ✓ 移动"
TREE_SHALLOW = "/tree shallow #0 浅"
#: Overwrite: F and If-None-Match: * must leave an existing target alone (412).
GUARD_SOURCE = "/guard ?a; 源.txt"
GUARD_TARGET = "/guard b #% 目标.txt"
#: A folder locked as a whole: a new file inside needs the folder's token.
LOCKED_DIR = "/locked dir & 100% 🔐"

OPS = ("mkdir", "upload", "list", "download", "copy", "move", "delete")
LOCK_OPS = ("lock", "put_locked", "foreign_refused", "unlock", "foreign_after_unlock", "move_locked")
TREE_OPS = ("copy_tree", "move_tree", "delete_tree", "copy_tree_shallow")
GUARD_OPS = ("copy_no_overwrite", "move_no_overwrite", "put_no_overwrite")
LOCK_DIR_OPS = ("lock_dir", "put_in_locked_dir", "foreign_in_locked_dir_refused", "unlock_dir")

DRIVER_TIMEOUT_S = 120

def _content(key: str) -> bytes:
    """Distinct, name-dependent bytes (so a file served under the wrong name is noticed)."""
    seed = hashlib.sha256(key.encode()).digest()
    return (seed * 50)[: 1000 + len(key)]


def _big_content() -> bytes:
    """Bytes that differ from chunk to chunk (no two chunks alike to deduplicate)."""
    return random.Random("big").randbytes(BIG[2])


def require_client(command: str, package: str) -> str:
    """The client's path, or skip the test saying which Debian package brings it."""
    path = shutil.which(command)
    if path is None:
        pytest.skip(f"{command} not installed: apt-get install {package} (or scripts/test.sh as root)")
    return path


def nfc(text: str) -> str:
    """The spelling hfdav stores and lists names in."""
    return unicodedata.normalize("NFC", text)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Entry:
    """One name of the scenario: where it lives, what it holds, where copy and move put it."""

    key: str
    name: str
    data: bytes
    stream: bool = False

    @property
    def path(self) -> str:
        return f"{FOLDER}/{self.name}"

    @property
    def listed(self) -> str:
        """The name as listings show it."""
        return nfc(self.name)

    @property
    def copy_path(self) -> str:
        return f"{COPIES}/{self.name}"

    @property
    def moved_path(self) -> str:
        return f"{FOLDER}/renamed {self.name}"


def entries() -> list[Entry]:
    found = [Entry(k, n, _content(k)) for k, n in NAMES.items()]
    found.append(Entry(BIG[0], BIG[1], _big_content(), stream=True))
    return found


class ClientRun:
    """Runs the scenario through one driver against one server and keeps the outcome."""

    def __init__(self, server, workdir: Path, argv: list[str], *, can_lock: bool = True):
        self.server = server
        self.workdir = workdir
        self.can_lock = can_lock
        self.entries = {e.key: e for e in entries()}
        self.up, self.down = workdir / "up", workdir / "down"
        self.up.mkdir(parents=True, exist_ok=True)
        self.down.mkdir(parents=True, exist_ok=True)
        self.steps: list[dict] = []
        self._ids: dict[str, int] = {}
        self._plan()
        proc = subprocess.run(
            [*argv, server.url, server.user, server.password],
            input=json.dumps(self.steps), capture_output=True, text=True, timeout=DRIVER_TIMEOUT_S,
            cwd=workdir,
        )  # fmt: skip
        self.stderr = proc.stderr
        try:
            self.results = json.loads(proc.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"driver {argv} exited {proc.returncode} without a result:\n{proc.stdout}\n{proc.stderr}")
        assert len(self.results) == len(self.steps), f"driver answered {len(self.results)} of {len(self.steps)}"
        self.tree = all_paths(server)

    # -- the plan ---------------------------------------------------------------------------

    def _step(self, sid: str, op: str, **args) -> None:
        self._ids[sid] = len(self.steps)
        self.steps.append({"op": op, **args})

    def _upfile(self, label: str, data: bytes) -> str:
        f = self.up / label
        f.write_bytes(data)
        return str(f)

    def _plan(self) -> None:
        self._step("mkdir", "mkdir", path=FOLDER)
        self._step("mkdir copies", "mkdir", path=COPIES)
        for e in self.entries.values():
            self._step(f"put {e.key}", "put", path=e.path, file=self._upfile(e.key, e.data), stream=e.stream)
        self._step("list", "list", path=FOLDER)
        for e in self.entries.values():
            self._step(f"get {e.key}", "get", path=e.path, file=str(self.down / e.key))
            self._step(f"copy {e.key}", "copy", **{"from": e.path, "to": e.copy_path})
            self._step(f"get copy {e.key}", "get", path=e.copy_path, file=str(self.down / f"copy-{e.key}"))
            self._step(f"move {e.key}", "move", **{"from": e.copy_path, "to": e.moved_path})
            self._step(f"get moved {e.key}", "get", path=e.moved_path, file=str(self.down / f"moved-{e.key}"))
        self._step("list moved", "list", path=FOLDER)
        self._step("list copies moved", "list", path=COPIES)
        for e in self.entries.values():
            self._step(f"delete {e.key}", "delete", path=e.moved_path)
        self._step("list after", "list", path=FOLDER)
        self._plan_tree()
        self._plan_guard()
        if self.can_lock:
            self._plan_lock()
            self._plan_lock_dir()

    def _plan_tree(self) -> None:
        sub = TREE_FILE.rsplit("/", 1)[0]
        self._step("tree mkdir", "mkdir", path=TREE)
        self._step("tree mkdir sub", "mkdir", path=f"{TREE}/{sub}")
        self._step("tree put", "put", path=f"{TREE}/{TREE_FILE}", file=self._upfile("tree", _content("tree")))
        self._step("copy_tree", "copy", **{"from": TREE, "to": TREE_COPY})
        self._step("get tree copy", "get", path=f"{TREE_COPY}/{TREE_FILE}", file=str(self.down / "tree-copy"))
        self._step("move_tree", "move", **{"from": TREE_COPY, "to": TREE_MOVED})
        self._step("list tree moved", "list", path=f"{TREE_MOVED}/{sub}")
        self._step("get tree moved", "get", path=f"{TREE_MOVED}/{TREE_FILE}", file=str(self.down / "tree-moved"))
        self._step("delete_tree", "delete", path=TREE_MOVED)
        # Depth: 0 copies the folder and its properties, not its members (RFC 4918 §9.8.3)
        self._step("copy_tree_shallow", "copy", depth="0", **{"from": TREE, "to": TREE_SHALLOW})
        self._step("list tree shallow", "list", path=TREE_SHALLOW)
        self._step("delete tree shallow", "delete", path=TREE_SHALLOW)

    def _plan_guard(self) -> None:
        self._step("guard put source", "put", path=GUARD_SOURCE, file=self._upfile("guard-a", _content("guard a")))
        self._step("guard put target", "put", path=GUARD_TARGET, file=self._upfile("guard-b", _content("guard b")))
        for op in ("copy", "move"):
            self._step(f"{op}_no_overwrite", op, overwrite=False, **{"from": GUARD_SOURCE, "to": GUARD_TARGET})
        self._step("put_no_overwrite", "put", path=GUARD_TARGET, file=self._upfile("guard-c", _content("guard c")),
                   overwrite=False)  # fmt: skip

    def _plan_lock_dir(self) -> None:
        inside = f"{LOCKED_DIR}/new #1 新 🆕.txt"
        self._step("lock dir mkdir", "mkdir", path=LOCKED_DIR)
        self._step("lock_dir", "lock", path=LOCKED_DIR)
        self._step("put_in_locked_dir", "put", path=inside, file=self._upfile("in-dir-1", _content("in dir 1")),
                   locked=True, lock_of=LOCKED_DIR)  # fmt: skip
        self._step("foreign_in_locked_dir_refused", "put_foreign", path=f"{LOCKED_DIR}/foreign.txt",
                   file=self._upfile("in-dir-2", _content("in dir 2")))  # fmt: skip
        self._step("unlock_dir", "unlock", path=LOCKED_DIR)
        self._step("foreign in unlocked dir", "put_foreign", path=f"{LOCKED_DIR}/foreign.txt",
                   file=self._upfile("in-dir-2", _content("in dir 2")))  # fmt: skip

    def _plan_lock(self) -> None:
        path, moved = f"{FOLDER}/{LOCKED}", f"{FOLDER}/{MOVED_LOCKED}"
        v = {i: self._upfile(f"lock-v{i}", _content(f"lock v{i}")) for i in range(1, 6)}
        self._step("lock put", "put", path=path, file=v[1])
        self._step("lock", "lock", path=path)
        self._step("put_locked", "put", path=path, file=v[2], locked=True)
        self._step("foreign_refused", "put_foreign", path=path, file=v[3])
        self._step("get locked", "get", path=path, file=str(self.down / "locked-1"))
        self._step("unlock", "unlock", path=path)
        self._step("foreign_after_unlock", "put_foreign", path=path, file=v[4])
        self._step("get unlocked", "get", path=path, file=str(self.down / "locked-2"))
        # MOVE of a locked file, with its token: allowed, and the lock does not move along
        self._step("lock again", "lock", path=path)
        self._step("move_locked", "move", **{"from": path, "to": moved})
        self._step("foreign after move", "put_foreign", path=moved, file=v[5])

    # -- the outcome ------------------------------------------------------------------------

    def result(self, sid: str) -> dict:
        return self.results[self._ids[sid]]

    def ok(self, sid: str) -> dict:
        r = self.result(sid)
        assert r.get("ok"), (
            f"{sid}: {self.steps[self._ids[sid]]} failed: {r}\n--- driver stderr ---\n{self.stderr[-4000:]}"
        )
        return r

    def downloaded(self, label: str) -> bytes:
        return (self.down / label).read_bytes()

    def served(self, path: str) -> requests.Response:
        return requests.get(self.server.url_for(path), auth=self.server.auth, timeout=60)

    def listed(self, sid: str) -> dict[str, dict]:
        """The library's listing of a step: name -> {"size", "dir"}."""
        return {item["name"]: item for item in self.ok(sid)["value"]}


def cases(xfail: dict[tuple[str, str], str] | None = None, *, lock: bool = True, without: tuple[str, ...] = ()) -> list:
    """pytest params ``(key, op)`` for every name and operation (plus the lock sequence and a
    check of the final tree); ``xfail`` maps ``(key, op)`` to the reason of a known defect;
    ``without`` names operations the client does not have."""
    xfail = xfail or {}
    keys = [*NAMES, BIG[0]]
    ops = [op for op in OPS if op != "mkdir" and op not in without]
    pairs = [("-", "mkdir")] + [(k, op) for k in keys for op in ops] + [("-", "tree")]
    pairs += [("tree", op) for op in TREE_OPS if op not in without]
    pairs += [("guard", op) for op in GUARD_OPS if op not in without]
    if lock:
        pairs += [("lock", op) for op in LOCK_OPS] + [("lockdir", op) for op in LOCK_DIR_OPS]
    params = []
    for key, op in pairs:
        marks = [pytest.mark.xfail(strict=True, reason=xfail[key, op])] if (key, op) in xfail else []
        params.append(pytest.param(key, op, marks=marks, id=f"{op}-{key}"))
    return params


def check(run: ClientRun, key: str, op: str) -> None:
    """Assert one (name, operation) case of a finished run."""
    if key == "lock":
        return _check_lock(run, op)
    if key == "lockdir":
        return _check_lock_dir(run, op)
    if key == "tree":
        return _check_tree_ops(run, op)
    if key == "guard":
        return _check_guard(run, op)
    if op == "mkdir":
        run.ok("mkdir")
        run.ok("mkdir copies")
        assert run.tree.get(FOLDER.strip("/"), {}).get("resourcetype") == "collection", run.tree.keys()
        assert run.tree.get(COPIES.strip("/"), {}).get("resourcetype") == "collection", run.tree.keys()
        return
    if op == "tree":
        return _check_tree(run)
    e = run.entries[key]
    if op == "upload":
        run.ok(f"put {key}")
        served = run.served(e.path)
        assert served.status_code == 200 and sha256(served.content) == sha256(e.data), f"{e.name!r} not stored"
        assert int(run.tree[nfc(e.path)[1:]]["getcontentlength"]) == len(e.data)
        if e.listed != e.name:  # one file under both spellings
            assert sha256(run.served(nfc(e.path)).content) == sha256(e.data)
    elif op == "list":
        listed = run.listed("list")
        assert e.listed in listed, f"{e.listed!r} not in the library's listing: {sorted(listed)}"
        assert int(listed[e.listed]["size"]) == len(e.data) and not listed[e.listed]["dir"], listed[e.listed]
    elif op == "download":
        run.ok(f"get {key}")
        assert sha256(run.downloaded(key)) == sha256(e.data)
    elif op == "copy":
        run.ok(f"copy {key}")
        run.ok(f"get copy {key}")
        assert sha256(run.downloaded(f"copy-{key}")) == sha256(e.data)
    elif op == "move":
        run.ok(f"move {key}")
        run.ok(f"get moved {key}")
        assert sha256(run.downloaded(f"moved-{key}")) == sha256(e.data)
        listed = run.listed("list moved")
        renamed = f"renamed {e.listed}"
        assert renamed in listed and int(listed[renamed]["size"]) == len(e.data), sorted(listed)
        assert e.listed not in run.listed("list copies moved"), f"{e.copy_path!r} still there after the move"
    elif op == "delete":
        run.ok(f"delete {key}")
        assert nfc(e.moved_path)[1:] not in run.tree
        assert f"renamed {e.listed}" not in run.listed("list after")
        assert run.served(e.moved_path).status_code == 404
    else:
        raise AssertionError(f"unknown operation {op}")


def _check_tree(run: ClientRun) -> None:
    """Afterwards the share holds exactly the uploaded files (and the lock sequence's file),
    with their sizes: nothing was created or overwritten under a wrong name."""
    sub = TREE_FILE.rsplit("/", 1)[0]
    expected = {FOLDER.strip("/"), COPIES.strip("/"), TREE.strip("/"), f"{TREE}/{sub}"[1:], f"{TREE}/{TREE_FILE}"[1:]}
    expected |= {nfc(e.path)[1:] for e in run.entries.values()}
    expected.add(GUARD_TARGET[1:])
    if not run.result("move_no_overwrite").get("ok"):
        # refused, as it must be where the client can ask for no overwrite (hdav cannot: its
        # MOVE then legitimately replaces the target)
        expected.add(GUARD_SOURCE[1:])
    if run.can_lock:
        expected |= {f"{FOLDER}/{MOVED_LOCKED}"[1:], LOCKED_DIR[1:], f"{LOCKED_DIR}/new #1 新 🆕.txt"[1:]}
        expected.add(f"{LOCKED_DIR}/foreign.txt"[1:])
    found = set(run.tree) - {""}
    assert found == expected, f"unexpected: {sorted(found - expected)}; missing: {sorted(expected - found)}"
    for e in run.entries.values():
        assert int(run.tree[nfc(e.path)[1:]]["getcontentlength"]) == len(e.data), e.name


def _check_lock(run: ClientRun, op: str) -> None:
    path = f"{FOLDER}/{LOCKED}"
    run.ok("lock put")
    if op == "lock":
        token = run.ok("lock")["value"]
        assert isinstance(token, str) and token.startswith("opaquelocktoken:"), token
    elif op == "put_locked":
        run.ok("put_locked")
        run.ok("get locked")
        assert run.downloaded("locked-1") == _content("lock v2")
    elif op == "foreign_refused":
        r = run.result("foreign_refused")
        assert not r.get("ok") and r.get("status") == 423, r
        assert run.downloaded("locked-1") == _content("lock v2")
    elif op == "unlock":
        run.ok("unlock")
    elif op == "foreign_after_unlock":
        run.ok("foreign_after_unlock")
        run.ok("get unlocked")
        assert run.downloaded("locked-2") == _content("lock v4")
    elif op == "move_locked":
        run.ok("lock again")
        run.ok("move_locked")
        assert path.strip("/") not in run.tree
        # the lock stayed behind (RFC 4918 §7.6): a client without a token may write the new name
        run.ok("foreign after move")
        served = run.served(f"{FOLDER}/{MOVED_LOCKED}")
        assert served.status_code == 200 and served.content == _content("lock v5")


def _check_tree_ops(run: ClientRun, op: str) -> None:
    run.ok("tree put")
    if op == "copy_tree":
        run.ok("copy_tree")
        run.ok("get tree copy")
        assert run.downloaded("tree-copy") == _content("tree")
    elif op == "move_tree":
        run.ok("move_tree")
        listed = run.listed("list tree moved")
        leaf = TREE_FILE.rsplit("/", 1)[1]
        assert leaf in listed and int(listed[leaf]["size"]) == len(_content("tree")), sorted(listed)
        run.ok("get tree moved")
        assert run.downloaded("tree-moved") == _content("tree")
        assert TREE_COPY[1:] not in run.tree
    elif op == "copy_tree_shallow":
        run.ok("copy_tree_shallow")
        assert run.listed("list tree shallow") == {}, "a Depth: 0 copy brought the members along"
        run.ok("delete tree shallow")
    elif op == "delete_tree":
        run.ok("delete_tree")
        assert not [p for p in run.tree if p.startswith(TREE_MOVED[1:])], sorted(run.tree)
        assert run.served(f"{TREE_MOVED}/{TREE_FILE}").status_code == 404
    # the source folder is untouched by all of it
    served = run.served(f"{TREE}/{TREE_FILE}")
    assert served.status_code == 200 and served.content == _content("tree")


def _check_lock_dir(run: ClientRun, op: str) -> None:
    if op == "lock_dir":
        token = run.ok("lock_dir")["value"]
        assert isinstance(token, str) and token.startswith("opaquelocktoken:"), token
    elif op == "put_in_locked_dir":
        run.ok("put_in_locked_dir")
        served = run.served(f"{LOCKED_DIR}/new #1 新 🆕.txt")
        assert served.status_code == 200 and served.content == _content("in dir 1")
    elif op == "foreign_in_locked_dir_refused":
        r = run.result("foreign_in_locked_dir_refused")
        assert not r.get("ok") and r.get("status") == 423, r
    elif op == "unlock_dir":
        run.ok("unlock_dir")
        run.ok("foreign in unlocked dir")
        served = run.served(f"{LOCKED_DIR}/foreign.txt")
        assert served.status_code == 200 and served.content == _content("in dir 2")


def _check_guard(run: ClientRun, op: str) -> None:
    run.ok("guard put source")
    run.ok("guard put target")
    r = run.result(op)
    assert not r.get("ok") and r.get("status") == 412, r
    for path, key in ((GUARD_SOURCE, "guard a"), (GUARD_TARGET, "guard b")):
        served = run.served(path)
        assert served.status_code == 200 and served.content == _content(key), path
