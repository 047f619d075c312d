"""Start-up of ``hfdav``: the mode (a token without a repo), the summary, ``check-config
--online``, and every everyday mistake ending in one line on stderr and exit code 2.

The command runs as a real subprocess (``python -m gateway.cli``), as a user would run it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hub_emulator import HubEmulator
from tests.hub_fixtures import (  # noqa: F401  (emulator_fixture provides the emulator fixture)
    REPO,
    TOKEN,
    emulator_fixture,
    hub_env,
)

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "a-long-admin-password"
READ_TOKEN = "hf_read_only"
FOREIGN = "someoneelse"
_OURS = ("HFDAV_", "HF_", "SYS_TOKEN", "WEBDAV_", "SYNC_INTERVAL")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    env.update(HFDAV_DATA_DIR=str(tmp_path / "d"), SYS_TOKEN=PASSWORD, HFDAV_CHUNK_SIZE="1MiB",
               PYTHONPATH=str(ROOT), HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_XET="1",
               HFDAV_HUB_TRANSPORT="lfs", HF_HUB_DISABLE_TELEMETRY="1")  # fmt: skip
    env.update(extra)
    return env


def hfdav(env: dict[str, str], *argv: str, user: int | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    prefix = []
    if user is not None:
        prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    return subprocess.run([*prefix, sys.executable, "-m", "gateway.cli", *argv], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=str(ROOT), stdin=subprocess.DEVNULL)  # fmt: skip


def one_line(proc: subprocess.CompletedProcess) -> str:
    """The only line on stderr of a command that exited 2 without a traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def _hub(emu: HubEmulator, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = hub_env(emu, tmp_path / "d", HF_HOME=str(tmp_path / "hf-home"))
    return {**_env(tmp_path), **env, **extra}


@pytest.fixture
def strict_emulator(tmp_path, monkeypatch):
    """The Hub emulator with a read-only token and a namespace the user may not write to."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    with HubEmulator(tmp_path / "hub-emulator", token=TOKEN, read_tokens=(READ_TOKEN,),
                     foreign_namespaces=(FOREIGN,)) as emu:  # fmt: skip
        yield emu


def _unprivileged_user() -> int | None:
    """A uid without write access to a root-owned 0555 directory (root writes everywhere)."""
    if os.geteuid() != 0:
        return None
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop the right to write everywhere")
    return 65534


@pytest.fixture
def read_only_dir():
    """A 0555 directory that an unprivileged user can reach (pytest's own tmp dirs are 0700)."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="hfdav-startup-"))
    base.chmod(0o755)
    ro = base / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    for parent in base.parents:
        if parent.stat().st_mode & 0o001 == 0:
            pytest.skip(f"{parent} is not searchable by other users: cannot test an unwritable data dir")
    yield ro
    ro.chmod(0o755)
    shutil.rmtree(base, ignore_errors=True)


# -- 3. the mode: a token without a repo ---------------------------------------------------------


def test_token_without_repo_stops_start_up(tmp_path):
    line = one_line(hfdav(_env(tmp_path, HF_TOKEN="hf_something"), "serve"))
    assert "HF_TOKEN is set but HF_DATASET_REPO is not" in line and "HFDAV_MODE=local" in line
    assert not (tmp_path / "d").exists()


def test_local_mode_asked_for_runs_with_a_token(tmp_path):
    env = _env(tmp_path, HF_TOKEN="hf_something")
    ok = hfdav({**env, "HFDAV_MODE": "local"}, "check-config")
    assert ok.returncode == 0 and "local mode" in ok.stdout, ok.stderr
    ok = hfdav(env, "check-config", "--local")
    assert ok.returncode == 0 and "local mode" in ok.stdout, ok.stderr


def test_hub_mode_without_token_or_repo_is_one_line(tmp_path):
    line = one_line(hfdav(_env(tmp_path, HFDAV_MODE="hub"), "serve"))
    assert "HFDAV_MODE=hub needs HF_TOKEN and HF_DATASET_REPO" in line
    line = one_line(hfdav(_env(tmp_path, HFDAV_MODE="hub", HF_TOKEN="hf_x"), "serve"))
    assert "HFDAV_MODE=hub needs HF_DATASET_REPO" in line
    line = one_line(hfdav(_env(tmp_path, HFDAV_MODE="cloud"), "check-config"))
    assert "HFDAV_MODE='cloud'" in line


def test_mode_settings(tmp_path):
    from gateway.config import load_settings

    base = {"HFDAV_DATA_DIR": str(tmp_path)}
    assert load_settings(base).mode == "local"
    hub = load_settings({**base, "HF_TOKEN": "t", "HF_DATASET_REPO": "me/drive"})
    assert hub.mode == "hub" and hub.hub_enabled
    local = load_settings({**base, "HF_TOKEN": "t", "HF_DATASET_REPO": "me/drive", "HFDAV_MODE": "local"})
    assert local.mode == "local" and not local.hub_enabled
    assert load_settings({**base, "HF_TOKEN": "t"}, {"mode": "local"}).mode == "local"


# -- 4. everyday mistakes: one line, exit code 2 ----------------------------------------------------


@pytest.fixture
def taken_port():
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.mark.parametrize("server", ["cheroot", "gunicorn"])
def test_port_in_use(tmp_path, taken_port, server):
    proc = hfdav(_env(tmp_path), "serve", "--port", str(taken_port), "--server", server)
    line = one_line(proc)
    assert line == (f"hfdav: cannot listen on 127.0.0.1:{taken_port}: the address is already in use (is another "
                    "server running there?); choose another with --host/--port (HFDAV_HOST, HFDAV_PORT)")  # fmt: skip
    assert "serving" not in proc.stdout + proc.stderr


def test_unwritable_data_dir(tmp_path, read_only_dir):
    user = _unprivileged_user()
    ro = read_only_dir
    env = _env(tmp_path, HFDAV_DATA_DIR=str(ro / "d"))
    line = one_line(hfdav(env, "serve", user=user))
    assert line.startswith(f"hfdav: the data dir {ro / 'd'} is not writable (Permission denied)"), line
    proc = hfdav(env, "check-config", user=user)
    assert "NOT OK" in one_line(proc) and str(ro / "d") in proc.stderr


def test_existing_read_only_data_dir_is_not_ok(tmp_path, read_only_dir):
    user = _unprivileged_user()
    ro = read_only_dir
    env = _env(tmp_path, HFDAV_DATA_DIR=str(ro))
    line = one_line(hfdav(env, "check-config", "--online", user=user))
    assert line.startswith(f"hfdav: NOT OK: the data dir {ro} is not writable"), line
    line = one_line(hfdav(env, "serve", user=user))
    assert line.startswith(f"hfdav: the data dir {ro} is not writable"), line


def test_maintenance_command_on_a_data_dir_of_another_user(tmp_path, read_only_dir):
    user = _unprivileged_user()
    env = _env(tmp_path, HFDAV_DATA_DIR=str(read_only_dir))
    read_only_dir.chmod(0o755)
    from gateway.app import build_gateway
    from gateway.config import load_settings

    build_gateway(load_settings({**env, "HFDAV_DATA_DIR": str(read_only_dir)})).close()  # a drive, made by root
    if user is None:
        read_only_dir.chmod(0o555)
    line = one_line(hfdav(env, "stats", user=user))
    assert line.startswith(f"hfdav: permission denied: {read_only_dir}/"), line
    assert f"this user cannot write in the data dir {read_only_dir}" in line


def test_rejected_token(emulator, tmp_path):
    env = _hub(emulator, tmp_path, HF_TOKEN="hf_revoked")
    line = one_line(hfdav(env, "serve", "--port", "0"))
    assert line.startswith(f"hfdav: the Hub at {emulator.url} rejected HF_TOKEN (HTTP 401)"), line
    assert not emulator.repo_exists(REPO)


def test_foreign_repo(strict_emulator, tmp_path):
    repo = f"{FOREIGN}/their-drive"
    env = _hub(strict_emulator, tmp_path, HF_DATASET_REPO=repo)
    line = one_line(hfdav(env, "serve", "--port", "0"))
    assert f"HF_TOKEN (of testuser) cannot write to the dataset repo {repo}" in line, line
    assert not strict_emulator.repo_exists(repo)


def test_foreign_repo_refused_by_the_hub_itself(strict_emulator, tmp_path, monkeypatch, capsys):
    """Past the whoami check (the Hub may know better): the 403 of the repo's creation."""
    from gateway import startup
    from gateway.cli import main

    monkeypatch.setattr(startup, "judge_access", lambda info, repo: startup.TokenAccess("testuser", "write", None))
    repo = f"{FOREIGN}/their-drive"
    for name, value in _hub(strict_emulator, tmp_path, HF_DATASET_REPO=repo).items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert f"hfdav: HF_TOKEN cannot write to the dataset repo {repo} (HTTP 403 from the Hub)" in err, err
    assert "Traceback" not in err
    assert main(["stats"]) == 2  # a maintenance command opening the drive: the same line
    assert f"cannot write to the dataset repo {repo} (HTTP 403" in capsys.readouterr().err


def test_read_only_token(strict_emulator, tmp_path):
    env = _hub(strict_emulator, tmp_path, HF_TOKEN=READ_TOKEN)
    line = one_line(hfdav(env, "serve", "--port", "0"))
    assert "HF_TOKEN is a read-only token (of testuser)" in line, line


def test_data_dir_typo_for_a_read_only_command(tmp_path):
    env = _env(tmp_path)
    typo = tmp_path / "dta"
    for argv in (["stats"], ["fsck"], ["trash", "list"]):
        line = one_line(hfdav(env, *argv, "--data-dir", str(typo)))
        assert line.startswith(f"hfdav: no drive in {typo} (no such directory;"), line
    assert not typo.exists()


# -- 2. check-config --online --------------------------------------------------------------------


def test_check_config_online_ok(emulator, tmp_path):
    proc = hfdav(_hub(emulator, tmp_path), "check-config", "--online")
    assert proc.returncode == 0, proc.stderr
    assert f"HF_TOKEN: accepted by {emulator.url} (testuser, write token)" in proc.stdout
    assert f"dataset repo {REPO}: does not exist yet; it will be created (private) at start" in proc.stdout
    assert f"settings OK: hub ({REPO}) mode" in proc.stdout
    emulator.create_repo(REPO)
    proc = hfdav(_hub(emulator, tmp_path), "check-config", "--online")
    assert f"dataset repo {REPO}: exists, writable" in proc.stdout, proc.stdout + proc.stderr


def test_check_config_online_rejected_token(emulator, tmp_path):
    env = _hub(emulator, tmp_path, HF_TOKEN="hf_revoked")
    assert hfdav(env, "check-config").returncode == 0  # offline the token looks fine
    line = one_line(hfdav(env, "check-config", "--online"))
    assert line.startswith(f"hfdav: NOT OK: the Hub at {emulator.url} rejected HF_TOKEN (HTTP 401)"), line


def test_check_config_online_foreign_and_read_only(strict_emulator, tmp_path):
    line = one_line(hfdav(_hub(strict_emulator, tmp_path, HF_DATASET_REPO=f"{FOREIGN}/x"), "check-config", "--online"))
    assert line.startswith("hfdav: NOT OK: HF_TOKEN (of testuser) cannot write to the dataset repo someoneelse/x")
    line = one_line(hfdav(_hub(strict_emulator, tmp_path, HF_TOKEN=READ_TOKEN), "check-config", "--online"))
    assert line.startswith("hfdav: NOT OK: HF_TOKEN is a read-only token"), line


def test_check_config_online_without_a_hub(tmp_path):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    env = _env(tmp_path, HF_TOKEN="hf_x", HF_DATASET_REPO="me/drive", HF_ENDPOINT=f"http://127.0.0.1:{port}")
    line = one_line(hfdav(env, "check-config", "--online"))
    assert line.startswith(f"hfdav: NOT OK: the Hub at http://127.0.0.1:{port} did not answer: checking HF_TOKEN: ")


def test_check_config_online_local_mode(tmp_path):
    proc = hfdav(_env(tmp_path), "check-config", "--online")
    assert proc.returncode == 0 and "local mode: nothing to check on the Hub" in proc.stdout, proc.stderr
    assert not (tmp_path / "d").exists()  # checking creates nothing


def _token(role: str, **extra) -> dict:
    return {"accessToken": {"role": role, **extra}}


def _scoped(entity_type: str, name: str, *permissions: str) -> dict:
    return _token("fineGrained", fineGrained={"scoped": [
        {"entity": {"type": entity_type, "name": name}, "permissions": list(permissions)}]})  # fmt: skip


@pytest.mark.parametrize(
    ("repo", "info", "problem"),
    [
        ("me/drive", {"name": "me", "auth": _token("write")}, None),
        ("team/drive", {"name": "me", "orgs": [{"name": "team", "roleInOrg": "write"}], "auth": _token("write")}, None),
        ("team/drive", {"name": "me", "orgs": [{"name": "team", "roleInOrg": "read"}], "auth": _token("write")},
         "me has the read role in team"),
        ("me/drive", {"name": "me", "auth": _token("read")}, "read-only token"),
        ("me/drive", {"name": "other", "auth": _token("write")}, "me is neither other nor one of their organizations"),
        ("me/drive", {"name": "me", "auth": _scoped("user", "me", "repo.content.read", "repo.write")}, None),
        ("team/drive", {"name": "me", "auth": _scoped("dataset", "team/drive", "repo.write")}, None),
        ("me/drive", {"name": "me", "auth": _scoped("user", "me", "repo.content.read")}, "no write permission"),
        ("team/drive", {"name": "me"}, None),  # no role: not ours to judge, the first write decides
    ],
)  # fmt: skip
def test_judge_access(repo, info, problem):
    from gateway.startup import judge_access

    got = judge_access(info, repo).problem
    if problem is None:
        assert got is None
    else:
        assert problem in (got or ""), got


# -- 1. the start-up summary ---------------------------------------------------------------------


def _serve_until(env: dict[str, str], needle: str, *argv: str, timeout: float = 60) -> str:
    """Start ``hfdav serve``, wait for ``needle`` on stderr, stop it; the stderr until then."""
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--port", "0", *argv], env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=str(ROOT))  # fmt: skip
    seen = []
    try:
        deadline = time.monotonic() + timeout
        for line in proc.stderr:
            seen.append(line)
            if needle in line or time.monotonic() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = "".join(seen)
    assert needle in text, text
    return text


def _summary(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if " hfdav.startup: " in line:
            key, _, value = line.split(" hfdav.startup: ", 1)[1].partition(": ")
            out[key] = value
    return out


def test_summary_local_and_the_password_on_a_second_start(tmp_path):
    env = _env(tmp_path, HFDAV_USERS="alice:alice-long-password:ro,bob:bob-long-password")
    del env["SYS_TOKEN"]
    first = _serve_until(env, "hfdav serving")
    password_file = tmp_path / "d" / "admin-password"
    summary = _summary(first)
    assert summary["backend"] == f"local, chunks in {tmp_path / 'd' / 'objects'}"
    assert summary["encryption"] == "off; chunk size: 1.0 MiB"
    assert summary["users"] == "admin (rw), alice (ro), bob (rw)"
    assert summary["admin password"] == f"generated now, kept in {password_file}"
    assert summary["share"].startswith("http://127.0.0.1:") and summary["share"].endswith("/")
    second = _serve_until(env, "hfdav serving")
    assert _summary(second)["admin password"] == f"kept in {password_file}"
    assert password_file.read_text().strip() not in second
    for secret in ("alice-long-password", "bob-long-password"):
        assert secret not in first + second


def test_summary_hub_mode(emulator, tmp_path, hub_transport):
    env = _hub(emulator, tmp_path, HFDAV_ENCRYPTION_KEY="passphrase:a long passphrase for the test",
               HFDAV_DURABILITY="sync")  # fmt: skip
    text = _serve_until(env, "hfdav serving")
    summary = _summary(text)
    assert summary["backend"] == f"hub, dataset repo {REPO} on {emulator.url}, transport {hub_transport}, durability sync"
    assert summary["encryption"] == "on; chunk size: 1.0 MiB"
    assert summary["admin password"] == "from SYS_TOKEN"
    assert summary["HF_TOKEN"] == "testuser's write token"
    assert "a long passphrase" not in text and PASSWORD not in text


def test_summary_under_gunicorn(tmp_path):
    text = _serve_until(_env(tmp_path), "Booting worker", "--server", "gunicorn")
    summary = _summary(text)
    assert summary["backend"].startswith("local") and summary["share"].startswith("http://127.0.0.1:")
    assert text.index("hfdav.startup: share:") < text.index("hfdav serving")


# -- 5. one log format -------------------------------------------------------------------------


def test_gunicorn_logs_in_the_same_format(tmp_path):
    text = _serve_until(_env(tmp_path), "Booting worker", "--server", "gunicorn")
    gunicorn_lines = [line for line in text.splitlines() if "gunicorn" in line and "Booting worker" in line]
    assert gunicorn_lines, text
    # "2026-01-01 12:00:00,123 INFO gunicorn.error: Booting worker with pid: 42", as hfdav's own lines
    date, clock, level, name = gunicorn_lines[0].split(" ")[:4]
    assert level == "INFO" and name == "gunicorn.error:" and len(date) == 10 and "," in clock, gunicorn_lines[0]
    assert "[INFO]" not in text


def test_json_log_format(tmp_path):
    text = _serve_until(_env(tmp_path, HFDAV_LOG_FORMAT="json"), "Booting worker", "--server", "gunicorn")
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    loggers = {r["logger"] for r in records}
    assert {"hfdav.startup", "gunicorn.error"} <= loggers, text
    assert all({"time", "level", "logger", "message", "pid"} <= set(r) for r in records)
    assert not [line for line in text.splitlines() if line[:4].isdigit()], "a text line among JSON lines"


def test_json_formatter_keeps_the_exception():
    from gateway.logs import JsonFormatter

    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info())
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "failed here" and "ValueError: boom" in out["exception"] and out["level"] == "ERROR"


def test_bad_log_format_is_refused(tmp_path):
    assert "HFDAV_LOG_FORMAT" in one_line(hfdav(_env(tmp_path, HFDAV_LOG_FORMAT="xml"), "check-config"))


def test_gunicorn_access_lines_go_through_hfdav_logging_with_the_client_address(capsys):
    import datetime

    from gunicorn.config import Config

    from gateway.logs import GunicornLogger, setup_logging

    setup_logging("INFO")
    cfg = Config()
    cfg.set("accesslog", "-")  # turned on
    logger = GunicornLogger(cfg)

    class Response:
        status, response_length, headers, sent = "200 OK", 5, [], 5

    class Request:
        headers, method, path, query, version, uri = [], "GET", "/dav/x", "", (1, 1), "/dav/x"

    environ = {"REMOTE_ADDR": "127.0.0.1", "hfdav.client": "203.0.113.9", "RAW_URI": "/dav/x",
               "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_METHOD": "GET", "PATH_INFO": "/dav/x",
               "QUERY_STRING": ""}  # fmt: skip
    capsys.readouterr()
    logger.access(Response(), Request(), environ, datetime.timedelta(seconds=0.1))
    err = capsys.readouterr().err
    assert " INFO gunicorn.access: 203.0.113.9 - - [" in err and '"GET /dav/x HTTP/1.1" 200 5' in err, err
    assert logging.getLogger("gunicorn.access").handlers == []  # gunicorn's own handler is gone


def test_nginx_error_log_lines_are_relayed_in_hfdav_format(caplog):
    import io

    import boot

    stream = io.BytesIO(b"2026/12/04 18:00:00 [warn] 12#12: *3 an upstream response is buffered, client: 1.2.3.4\n"
                        b"2026/12/04 18:00:01 [emerg] 12#12: bind() to 0.0.0.0:7860 failed (98: Address in use)\n"
                        b"nginx: [alert] could not open error log file\n\n")  # fmt: skip
    with caplog.at_level(logging.DEBUG, logger="hfdav.nginx"):
        boot.relay_nginx_log(stream)
    got = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert got == [
        ("hfdav.nginx", "WARNING", "an upstream response is buffered, client: 1.2.3.4"),
        ("hfdav.nginx", "CRITICAL", "bind() to 0.0.0.0:7860 failed (98: Address in use)"),
        ("hfdav.nginx", "WARNING", "nginx: [alert] could not open error log file"),
    ]


def test_summary_hides_the_database_password(tmp_path):
    from gateway.config import load_settings
    from gateway.startup import summary_lines

    settings = load_settings({"HFDAV_DATA_DIR": str(tmp_path), "SYS_TOKEN": PASSWORD,
                              "HFDAV_DATABASE_URL": "postgresql+psycopg://hfdav:s3cret@db:5432/drive",
                              "HFDAV_ANONYMOUS": "ro"})  # fmt: skip
    lines = summary_lines(settings, share_url="http://h/", password="admin password: from SYS_TOKEN")
    text = "\n".join(lines)
    assert "s3cret" not in text and PASSWORD not in text
    assert "database: postgresql+psycopg://hfdav:***@db:5432/drive" in text
    assert "users: admin (rw); anonymous: ro" in text
