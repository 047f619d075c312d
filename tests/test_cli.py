"""The hfdav command line, called in-process."""

import json
import os
import sqlite3

import pytest

from gateway.cli import main

PASSWORD = "a-long-admin-password"


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("HFDAV_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("SYS_TOKEN", PASSWORD)
    monkeypatch.setenv("HFDAV_CHUNK_SIZE", "1MiB")
    return tmp_path


def _gateway():
    from gateway.app import build_gateway
    from gateway.config import load_settings

    return build_gateway(load_settings())


def _corrupt_only_object(data_dir, content: bytes) -> None:
    """Replace the bytes of the one stored object: a row of the small-object database
    (gateway.store.inline), or else its file."""
    db = sqlite3.connect(data_dir / "small-objects.sqlite")
    try:
        with db:
            changed = db.execute("UPDATE objects SET data = ?", (content,)).rowcount
    finally:
        db.close()
    assert changed <= 1
    if not changed:
        next(p for p in (data_dir / "objects").rglob("*") if p.is_file()).write_bytes(content)


def test_bad_settings_exit_2_listing_all(env, monkeypatch, capsys):
    monkeypatch.setenv("HFDAV_PORT", "x")
    monkeypatch.setenv("HFDAV_CHUNK_SIZE", "1 banana")
    assert main(["check-config"]) == 2
    err = capsys.readouterr().err
    assert "HFDAV_PORT" in err and "HFDAV_CHUNK_SIZE" in err


def test_trash_list_restore_and_fsck(env, capsys):
    gw = _gateway()
    gw.files.mkdir("/docs")
    gw.files.write_bytes("/docs/a.txt", b"hello")
    gw.files.delete("/docs/a.txt")
    gw.close()
    assert main(["trash", "list"]) == 0
    out = capsys.readouterr().out
    assert "/docs/a.txt" in out
    trash_path = out.split("->")[1].strip()
    assert main(["trash", "restore", trash_path]) == 0
    assert "restored to /docs/a.txt" in capsys.readouterr().out
    assert main(["fsck", "--verify", "1"]) == 0
    assert "0 findings" in capsys.readouterr().out
    gw = _gateway()
    assert gw.files.read_bytes("/docs/a.txt") == b"hello"
    gw.close()
    _corrupt_only_object(env / "d", b"HELLO")
    assert main(["fsck", "--verify", "1"]) == 1
    assert "hash:" in capsys.readouterr().out


def test_gc_packs_small_files(env, capsys):
    gw = _gateway()
    for i in range(5):
        gw.files.write_bytes(f"/s{i}", bytes([i]) * 100)
    gw.close()
    capsys.readouterr()
    assert main(["gc"]) == 0
    out, err = capsys.readouterr()
    assert "small objects packed: 5" in out
    assert "gc: packing small objects" in err and "gc: done, 4 of 4 steps (100%)" in err  # progress off a tty
    gw = _gateway()
    assert [gw.files.read_bytes(f"/s{i}") for i in range(5)] == [bytes([i]) * 100 for i in range(5)]
    gw.close()


def test_wrong_encryption_key_exits_2_without_traceback(env, monkeypatch, capsys):
    monkeypatch.setenv("HFDAV_ENCRYPTION_KEY", "passphrase:correct horse battery")
    gw = _gateway()
    gw.files.write_bytes("/secret", b"s")
    gw.close()
    monkeypatch.setenv("HFDAV_ENCRYPTION_KEY", "passphrase:wrong horse battery")
    assert main(["stats"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "key" in err.lower()


# -- everyday mistakes: one line on stderr, exit code 2, nothing created ----------------------


def _one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_read_only_command_on_a_data_dir_typo_creates_no_drive(env, capsys):
    _gateway().close()  # the real drive
    capsys.readouterr()
    typo = env / "dta"
    for argv in (["stats"], ["fsck"], ["verify"], ["trash", "list"], ["sync", "status"], ["locks", "list"],
                 ["locks", "break", "opaquelocktoken:x"], ["locks", "break-path", "/a"]):  # fmt: skip
        assert main([*argv, "--data-dir", str(typo)]) == 2, argv
        line = _one_line(capsys.readouterr().err)
        assert line.startswith(f"hfdav: no drive in {typo} (") and "--data-dir" in line, line
    assert not typo.exists()
    (env / "empty").mkdir()
    assert main(["stats", "--data-dir", str(env / "empty")]) == 2
    assert "no drive in" in _one_line(capsys.readouterr().err)
    assert list((env / "empty").iterdir()) == []


def test_squash_off_a_terminal_needs_yes(env, capsys, monkeypatch):
    _gateway().close()
    capsys.readouterr()
    assert main(["gc", "--squash", "--yes"]) == 2  # local mode: no repo history to squash
    assert "--squash needs the Hub backend" in _one_line(capsys.readouterr().err)
    monkeypatch.setenv("HF_DATASET_REPO", "someone/drive")
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["gc", "--squash"]) == 2  # refused before anything opens the repo
    line = _one_line(capsys.readouterr().err)
    assert "pass --yes to confirm" in line and "squash the history of someone/drive" in line


def test_squash_on_a_terminal_asks(env, capsys, monkeypatch):
    _gateway().close()
    capsys.readouterr()
    monkeypatch.setenv("HF_DATASET_REPO", "someone/drive")
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["gc", "--squash"]) == 2
    assert _one_line(capsys.readouterr().err) == "hfdav: not squashed"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["fsck", "--verify", "2"], "not a share between 0 and 1: '2'"),
        (["fsck", "--verify", "all"], "not a share between 0 and 1: 'all'"),
        (["verify", "--sample", "-0.5"], "not a share between 0 and 1"),
        (["gc", "--grace", "6x"], "not a duration: '6x'"),
        (["trash", "empty"], "invalid choice: 'empty'"),
    ],
)
def test_bad_arguments_exit_2_with_one_error_line(env, capsys, argv, needle):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (error,) = [line for line in err.splitlines() if "error:" in line]  # argparse: usage, then the error
    assert needle in error, err


def test_grace_takes_units(env, capsys):
    gw = _gateway()
    gw.files.write_bytes("/a", b"x" * 10)
    gw.files.write_bytes("/a", b"y" * 10)  # the first version's object is unreferenced now
    gw.close()
    assert main(["gc", "--grace", "6h"]) == 0
    assert "unreferenced objects deleted: 0" in capsys.readouterr().out
    assert main(["gc", "--grace", "0s"]) == 0
    assert "unreferenced objects deleted: 1" in capsys.readouterr().out


def test_empty_trash_says_so_and_stats_are_human(env, capsys):
    gw = _gateway()
    gw.files.write_bytes("/big", b"z" * 3 * 1024 * 1024)
    gw.close()
    assert main(["trash", "list"]) == 0
    assert capsys.readouterr().out == "trash is empty\n"
    assert main(["stats"]) == 0
    out = capsys.readouterr().out
    assert "in files: 3.0 MiB (3145728 bytes)" in out and "files and folders: 2" in out
    assert main(["stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["bytes_in_files"] == 3 * 1024 * 1024 and stats["backend"] == "local"


def test_fsck_json_exit_code_reflects_problems(env, capsys):
    gw = _gateway()
    gw.files.write_bytes("/f", b"hello")
    gw.close()
    capsys.readouterr()
    assert main(["fsck", "--verify", "1", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["findings"] == []
    assert "checking objects: done, 1 of 1 objects (100%)" in err  # progress off a terminal
    assert "verifying: done, 5 B of 5 B (100%)" in err
    _corrupt_only_object(env / "d", b"HELLO")
    assert main(["verify", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["unrepaired"] == 1 and report["findings"][0]["kind"] == "hash"
    assert report["findings"][0]["files"] == ["/f"]


def test_commands_are_routed_to_a_running_server(env, capsys, monkeypatch):
    """With a server on the data dir, the commands ask it and never open the data dir here."""
    from gateway.admin_api import write_server_record
    from tests.inprocess import served_gateway

    monkeypatch.setenv("HFDAV_TRASH_DAYS", "7")
    with served_gateway(dict(os.environ)) as (base, gw):
        write_server_record(gw.settings.data_dir, base)
        gw.files.write_bytes("/doc.txt", b"draft")
        gw.files.delete("/doc.txt")
        capsys.readouterr()

        def no_local_open(*_args, **_kwargs):
            raise AssertionError("opened the data dir next to the running server")

        monkeypatch.setattr("gateway.app.build_gateway", no_local_open)
        assert main(["trash", "list", "--json"]) == 0
        (entry,) = json.loads(capsys.readouterr().out)["entries"]
        assert main(["trash", "restore", entry["trash_path"]]) == 0
        assert gw.files.read_bytes("/doc.txt") == b"draft"  # the server's drive changed
        capsys.readouterr()
        assert main(["trash", "restore", entry["trash_path"]]) == 2  # restored already: the server's 409
        err = capsys.readouterr().err  # (the server's access log shares this process's stderr)
        assert "Traceback" not in err and err.splitlines()[-1].startswith("hfdav: the server at ")
        assert "answered 409: /doc.txt exists" in err.splitlines()[-1]
        assert main(["stats", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["nodes"] == 3  # /, /doc.txt, the trash folder
    monkeypatch.undo()


def test_admin_api_maintenance_needs_a_read_write_user(env, monkeypatch):
    import requests

    from tests.inprocess import served_gateway

    monkeypatch.setenv("HFDAV_USERS", "reader:reader-password:ro")
    with served_gateway(dict(os.environ)) as (base, _gw):
        assert requests.get(base + "/.hfdav-admin/stats", timeout=10).status_code == 401
        reader = ("reader", "reader-password")
        assert requests.post(base + "/.hfdav-admin/gc", auth=reader, timeout=10).status_code == 403
        r = requests.post(base + "/.hfdav-admin/fsck", params={"verify": "2"}, auth=("admin", PASSWORD), timeout=10)
        assert r.status_code == 400 and "between 0 and 1" in r.json()["error"]
        r = requests.post(base + "/.hfdav-admin/gc", params={"squash": "1"}, auth=("admin", PASSWORD), timeout=10)
        assert r.status_code == 400 and "Hub backend" in r.json()["error"]
        r = requests.get(base + "/.hfdav-admin/stats", auth=("admin", PASSWORD), timeout=10)
        assert r.status_code == 200 and r.json()["backend"] == "local"
