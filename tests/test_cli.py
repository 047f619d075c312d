"""The hfdav command line, called in-process."""

import pytest

from gateway.cli import main


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("HFDAV_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("SYS_TOKEN", "pw")
    monkeypatch.setenv("HFDAV_CHUNK_SIZE", "1MiB")
    return tmp_path


def _gateway():
    from gateway.app import build_gateway
    from gateway.config import load_settings

    return build_gateway(load_settings())


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
    store_file = next(p for p in (env / "d" / "objects").rglob("*") if p.is_file())
    gw.close()
    store_file.write_bytes(b"HELLO")
    assert main(["fsck", "--verify", "1"]) == 1
    assert "hash:" in capsys.readouterr().out


def test_gc_packs_small_files(env, capsys):
    gw = _gateway()
    for i in range(5):
        gw.files.write_bytes(f"/s{i}", bytes([i]) * 100)
    gw.close()
    assert main(["gc"]) == 0
    assert "small objects packed: 5" in capsys.readouterr().out
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
