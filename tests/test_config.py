import pytest

from gateway.config import DEFAULT_CHUNK_SIZE, MiB, load_settings, parse_size
from gateway.errors import ConfigError


def test_defaults(tmp_path):
    s = load_settings({"HFDAV_DATA_DIR": str(tmp_path)})
    assert s.host == "127.0.0.1" and s.port == 8000
    assert s.chunk_size == DEFAULT_CHUNK_SIZE == 50 * MiB
    assert s.database_url == f"sqlite:///{tmp_path / 'meta.sqlite3'}"
    assert s.prefix == "/" and s.anonymous == "none" and not s.hub_enabled


@pytest.mark.parametrize("text,expected", [("52428800", 52428800), ("50MiB", 50 * MiB), ("2G", 2 << 30), ("4k", 4096)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


def test_every_problem_is_reported_at_once(tmp_path):
    env = {
        "HFDAV_DATA_DIR": str(tmp_path),
        "HFDAV_PORT": "http",
        "HFDAV_CHUNK_SIZE": "12 parsecs",
        "HF_DATASET_REPO": "not a repo",
        "HFDAV_USERS": "bob",
        "HFDAV_ANONYMOUS": "maybe",
    }
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    text = "\n".join(info.value.problems)
    for name in ("HFDAV_PORT", "HFDAV_CHUNK_SIZE", "HF_DATASET_REPO", "HF_TOKEN", "HFDAV_USERS", "HFDAV_ANONYMOUS"):
        assert name in text
    assert len(info.value.problems) == 6


def test_users_and_overrides(tmp_path):
    s = load_settings(
        {"HFDAV_DATA_DIR": str(tmp_path), "HFDAV_USERS": "alice:pw:ro, bob:a:b:rw\ncarol:x", "HFDAV_PORT": "9000"},
        {"port": 9100, "chunk_size": 2 * MiB},
    )
    assert [(u.name, u.password, u.can_write) for u in s.users] == [
        ("alice", "pw", False),
        ("bob", "a:b", True),
        ("carol", "x", True),
    ]
    assert s.port == 9100 and s.chunk_size == 2 * MiB


def test_secrets_not_in_repr(tmp_path):
    s = load_settings({"HFDAV_DATA_DIR": str(tmp_path), "SYS_TOKEN": "hunter2", "HFDAV_USERS": "a:opensesame"})
    assert "hunter2" not in repr(s) and "opensesame" not in repr(s)


def test_max_xml_body(tmp_path):
    assert load_settings({"HFDAV_DATA_DIR": str(tmp_path)}).max_xml_body == MiB
    assert load_settings({"HFDAV_DATA_DIR": str(tmp_path), "HFDAV_MAX_XML_BODY": "4MiB"}).max_xml_body == 4 * MiB
    with pytest.raises(ConfigError, match="HFDAV_MAX_XML_BODY"):
        load_settings({"HFDAV_DATA_DIR": str(tmp_path), "HFDAV_MAX_XML_BODY": "1k"})


def test_max_propfind_infinity(tmp_path):
    env = {"HFDAV_DATA_DIR": str(tmp_path)}
    assert load_settings(env).max_propfind_infinity == 10_000
    assert load_settings({**env, "HFDAV_MAX_PROPFIND_INFINITY": "0"}).max_propfind_infinity == 0
    with pytest.raises(ConfigError, match="HFDAV_MAX_PROPFIND_INFINITY"):
        load_settings({**env, "HFDAV_MAX_PROPFIND_INFINITY": "-1"})


def test_max_copy_members(tmp_path):
    env = {"HFDAV_DATA_DIR": str(tmp_path)}
    assert load_settings(env).max_copy_members == 10_000
    assert load_settings({**env, "HFDAV_MAX_COPY_MEMBERS": "50"}).max_copy_members == 50
    with pytest.raises(ConfigError, match="HFDAV_MAX_COPY_MEMBERS"):
        load_settings({**env, "HFDAV_MAX_COPY_MEMBERS": "0"})


def test_hub_transport(tmp_path):
    base = {"HFDAV_DATA_DIR": str(tmp_path)}
    assert load_settings(base).hub_transport == "lfs"
    assert load_settings({**base, "HFDAV_HUB_TRANSPORT": "XET"}).hub_transport == "xet"
    assert load_settings({**base, "HF_HUB_DISABLE_XET": "1"}).hub_transport == "lfs"
    assert load_settings({**base, "HF_HUB_DISABLE_XET": "1", "HFDAV_HUB_TRANSPORT": "xet"}).hub_transport == "xet"
    with pytest.raises(ConfigError, match="HFDAV_HUB_TRANSPORT"):
        load_settings({**base, "HFDAV_HUB_TRANSPORT": "s3"})


def test_apply_hub_transport(tmp_path, monkeypatch):
    import os

    from huggingface_hub import constants

    from gateway.store.hub import apply_hub_transport

    for name in ("HF_HUB_DISABLE_XET", "HF_XET_CACHE", "HF_HUB_DISABLE_TELEMETRY"):
        monkeypatch.setenv(name, "")  # so that the test's changes are undone
        monkeypatch.delenv(name)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", False)
    apply_hub_transport("xet", tmp_path)
    assert constants.HF_HUB_DISABLE_XET is False and constants.HF_HUB_DISABLE_TELEMETRY is True
    assert os.environ["HF_XET_CACHE"].startswith(str(tmp_path / ".cache" / "hf"))
    apply_hub_transport("lfs", tmp_path)
    assert constants.HF_HUB_DISABLE_XET is True
