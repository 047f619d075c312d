"""The Hub emulator in a process of its own, for the Hub benchmark (its CPU is not the
driver's or the gateway's). Prints ``URL <endpoint>``; then answers lines on stdin:
``stats`` → the emulator's counters as JSON, ``commits <repo>`` → commits in the repo's history,
``quit``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.hub_emulator import HubEmulator  # noqa: E402


def main() -> int:
    # HUB_EMULATOR_XET_VERIFY=0: Xet files are not re-read against their sha256 when their shard arrives
    emu = HubEmulator(sys.argv[1], xet_verify_files=os.environ.get("HUB_EMULATOR_XET_VERIFY") != "0").start()
    print(f"URL {emu.url}", flush=True)
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "stats":
            print(json.dumps(emu.stats), flush=True)
        elif cmd == "commits":
            print(json.dumps(emu.commit_count(arg) if emu.repo_exists(arg) else 0), flush=True)
        elif cmd == "quit":
            break
    emu.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
