"""Drives hdav (the command-line client of Haskell's DAV library) through the steps of
tests/e2e/clients/scenario.py: a JSON plan on stdin, one JSON result per step on stdout.
Usage: python driver.py BASE_URL USER PASSWORD < plan.json

hdav takes URLs, so each plain share path is percent-encoded here (UTF-8, every reserved
character escaped). Its commands: ``makecollection``, ``put``, ``copy`` (the library reads
the source's properties and content and writes both to the target), ``move``, ``delete``,
``getprops`` (the multistatus XML after a banner, which this driver reads for ``list``). hdav cannot
download to a file and has no lock command: ``get`` reads the file with a plain HTTP GET to
check what copy and move made (the scenario runs no download case for hdav), and ``lock``,
``unlock`` and ``put_foreign`` are refused as unsupported.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.request
import xml.etree.ElementTree as ET
from urllib.parse import quote, unquote, urlsplit

DAV = "{DAV:}"
TIMEOUT_S = 60


def main() -> None:
    base, user, password = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
    auth = ["--username", user, "--password", password]
    source_auth = ["--source-username", user, "--source-password", password]
    target_auth = ["--target-username", user, "--target-password", password]

    def url(path: str) -> str:
        return base + quote(path, safe="/")

    def hdav(*args: str) -> str:
        proc = subprocess.run(["hdav", *args], capture_output=True, text=True, timeout=TIMEOUT_S)
        if proc.returncode != 0:
            raise StepError(f"hdav {args[0]} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
        return proc.stdout

    def listing(path: str) -> list[dict]:
        out = hdav("getprops", url(path) + "/", "--depth", "1", *auth)
        root = ET.fromstring(out[out.index("<?xml") :])  # after hdav's banner
        items = []
        for resp in root.iter(f"{DAV}response"):
            href = unquote(urlsplit(resp.findtext(f"{DAV}href") or "").path)
            if href.rstrip("/") == path.rstrip("/"):
                continue
            is_dir = resp.find(f".//{DAV}resourcetype/{DAV}collection") is not None
            size = resp.findtext(f".//{DAV}getcontentlength") or "0"
            items.append({"name": href.rstrip("/").rsplit("/", 1)[-1], "size": int(size), "dir": is_dir})
        return items

    def plain_get(path: str, file: str) -> int:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req = urllib.request.Request(url(path), headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r, open(file, "wb") as out:
            data = r.read()
            out.write(data)
        return len(data)

    ops = {
        "mkdir": lambda s: hdav("makecollection", url(s["path"]), *auth),
        "put": lambda s: hdav("put", s["file"], url(s["path"]), *auth),
        "copy": lambda s: hdav("copy", url(s["from"]), url(s["to"]), *source_auth, *target_auth),
        "move": lambda s: hdav("move", url(s["from"]), url(s["to"]), *auth),
        "delete": lambda s: hdav("delete", url(s["path"]), *auth),
        "list": lambda s: listing(s["path"]),
        "get": lambda s: plain_get(s["path"], s["file"]),
    }
    results = []
    for step in json.load(sys.stdin):
        op = ops.get(step["op"])
        if op is None:
            results.append({"ok": False, "status": None, "error": f"hdav has no {step['op']}"})
            continue
        try:
            value = op(step)
            results.append({"ok": True, "value": value if step["op"] in ("list", "get") else None})
        except (StepError, OSError, ET.ParseError) as exc:
            results.append({"ok": False, "status": getattr(exc, "code", None), "error": str(exc)})
    json.dump(results, sys.stdout)


class StepError(Exception):
    pass


if __name__ == "__main__":
    main()
