"""``hfdav versions list|restore`` on a data dir (the same operations the admin API serves)."""

import json

import pytest

from gateway.cli import main


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("HFDAV_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("SYS_TOKEN", "a-long-admin-password")
    monkeypatch.setenv("HFDAV_VERSIONS", "3")
    return tmp_path


def _gateway():
    from gateway.app import build_gateway
    from gateway.config import load_settings

    return build_gateway(load_settings())


def test_cli_lists_and_restores(env, capsys):
    gw = _gateway()
    for i in range(6):
        gw.files.write_bytes("/r.txt", f"content {i}".encode())
    gw.close()
    assert main(["versions", "list", "/r.txt", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [v["n"] for v in listed["versions"]] == [1, 2, 3]
    assert [v["size"] for v in listed["versions"]] == [9, 9, 9]
    assert main(["versions", "restore", "/r.txt", "3"]) == 0
    assert "restored version 3 of /r.txt" in capsys.readouterr().out
    gw = _gateway()
    assert gw.files.read_bytes("/r.txt") == b"content 2"
    gw.close()
    assert main(["versions", "list", "/r.txt"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3


def test_cli_unknown_version_fails(env, capsys):
    gw = _gateway()
    gw.files.write_bytes("/r.txt", b"only")
    gw.close()
    assert main(["versions", "restore", "/r.txt", "1"]) != 0
