"""cadaver, scripted through stdin with credentials in ``$HOME/.netrc``. cadaver exits 0 whatever
happens, so the outcome of each command is read from its output."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import requests

from tests.e2e.support import BOTH_SERVERS, MiB, require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.requires_tool("cadaver")]

PROMPT_RE = re.compile(r"^dav:[^\n]*?> ", re.MULTILINE)
CADAVER_TIMEOUT_S = 120


def _run_cadaver(server, home, script: list[str], cwd) -> str:
    exe = require_tool("cadaver")
    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [exe, server.url], input="\n".join([*script, "quit"]) + "\n", capture_output=True, text=True,
        cwd=cwd, env={**os.environ, "HOME": str(home)}, timeout=CADAVER_TIMEOUT_S,
    )  # fmt: skip
    return proc.stdout + proc.stderr


def _netrc(home, user: str, password: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / ".netrc").write_text(f"machine 127.0.0.1\nlogin {user}\npassword {password}\n")
    (home / ".netrc").chmod(0o600)


def _outcomes(output: str) -> dict[str, str]:
    """Map each command typed at a ``dav:/…>`` prompt to the text cadaver printed for it."""
    result = {}
    for block in PROMPT_RE.split(output)[1:]:
        command, _, text = block.partition("\n")
        result[command.strip()] = text
    return result


@BOTH_SERVERS
def test_cadaver_session(server, tmp_path):
    data = os.urandom(3 * MiB + 99)
    (tmp_path / "r.bin").write_bytes(data)
    home = tmp_path / "home"
    _netrc(home, server.user, server.password)
    ok_commands = [
        "mkcol cadtest",
        "cd cadtest",
        "put r.bin",
        "ls",
        "get r.bin back.bin",
        "move r.bin moved.bin",
        "copy moved.bin copied.bin",
        "propset moved.bin myprop hello-cadaver",
        "lock moved.bin",
        "unlock moved.bin",
        "delete copied.bin",
        "mkcol sub",
        "rmcol sub",
    ]
    script = [*ok_commands, "propget moved.bin myprop", "get nothere.bin nothere.bin"]
    output = _run_cadaver(server, home, script, tmp_path)
    outcomes = _outcomes(output)
    for command in ok_commands:
        if command.startswith("cd "):
            continue
        text = outcomes.get(command, "")
        assert "succeeded." in text and "failed" not in text, f"{command!r}:\n{output}"
    assert "Value of myprop is: hello-cadaver" in outcomes["propget moved.bin myprop"], output
    # the failure is visible in the output (this is how the checks above can fail)
    assert "404" in outcomes["get nothere.bin nothere.bin"] and "failed" in outcomes["get nothere.bin nothere.bin"]

    assert (tmp_path / "back.bin").read_bytes() == data
    get = requests.get(server.url_for("cadtest/moved.bin"), auth=server.auth, timeout=60)
    assert get.status_code == 200 and get.content == data
    for gone in ("cadtest/r.bin", "cadtest/copied.bin", "cadtest/sub"):
        assert requests.get(server.url_for(gone), auth=server.auth, timeout=60).status_code == 404, gone
    props = requests.request("PROPFIND", server.url_for("cadtest/moved.bin"), auth=server.auth,
                             headers={"Depth": "0"}, timeout=60)  # fmt: skip
    assert props.status_code == 207 and b"hello-cadaver" in props.content


def test_cadaver_wrong_password_is_refused(server, tmp_path):
    (tmp_path / "r.bin").write_bytes(b"should not arrive")
    home = tmp_path / "home"
    _netrc(home, server.user, "wrong-password")
    output = _run_cadaver(server, home, ["put r.bin", "ls"], tmp_path)
    assert "succeeded." not in output, output
    assert "Could not authenticate" in output or "Authentication aborted" in output, output
    assert requests.get(server.url_for("r.bin"), auth=server.auth, timeout=60).status_code == 404
