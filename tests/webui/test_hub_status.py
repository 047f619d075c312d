"""The file manager's status corner with the Hub backend (the emulator): an upload made through
the web front is reported pending, then committed, with the commit's id."""

from __future__ import annotations

import time

import requests

from tests.hub_fixtures import PASSWORD, emulator_fixture, hub_env, in_process_gateway  # noqa: F401
from tests.inprocess import serving

UI = "/.hfdav-ui"


def test_status_reports_hub_sync_of_a_web_upload(emulator, tmp_path):
    with in_process_gateway(hub_env(emulator, tmp_path / "data")) as gw, serving(gw.wsgi_app) as base:
        s = requests.Session()
        r = s.post(base + UI + "/api/login", json={"user": "admin", "password": PASSWORD})
        s.headers["X-CSRF-Token"] = r.json()["csrf"]
        before = s.get(base + UI + "/api/status").json()
        assert before["healthy"] is True and "pending_changes" in before["sync"]
        up = s.post(base + UI + "/api/uploads", json={"path": "/hub.txt", "size": 5}).json()["id"]
        s.patch(base + UI + "/api/uploads/" + up, data=b"hello", headers={"Upload-Offset": "0"})
        assert s.post(base + UI + f"/api/uploads/{up}/finish").status_code == 200
        deadline = time.monotonic() + 60
        while True:
            status = s.get(base + UI + "/api/status").json()
            if status["sync"]["pending_changes"] == 0 and status["sync"]["head"] != before["sync"]["head"]:
                break
            assert time.monotonic() < deadline, f"the upload was never committed: {status}"
            time.sleep(0.2)
        assert status["sync"]["last_error"] is None and status["used"] == 5
        assert emulator.head("testuser/store") == status["sync"]["head"]
