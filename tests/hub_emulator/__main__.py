"""Run the Hub emulator standalone.

``python -m tests.hub_emulator --port 8765 --data-dir DIR [--commit-quota N]`` prints
``HUB EMULATOR LISTENING http://127.0.0.1:PORT`` once both origins accept connections, then serves
until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from .server import HubEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hub_emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="directory holding the repos (kept across restarts)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="API port (0: any free port)")
    parser.add_argument("--storage-port", type=int, default=0, help="LFS storage port (0: any free port)")
    parser.add_argument("--token", default="hf_test", help="the only accepted Bearer token")
    parser.add_argument("--commit-quota", type=int, default=None, help="commits allowed per sliding hour")
    parser.add_argument("--page-size", type=int, default=1000, help="tree page size")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    emulator = HubEmulator(
        args.data_dir,
        host=args.host,
        port=args.port,
        storage_port=args.storage_port,
        token=args.token,
        commit_quota_per_hour=args.commit_quota,
        page_size=args.page_size,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    emulator.start()
    print(f"HUB EMULATOR LISTENING {emulator.url}", flush=True)
    try:
        stop.wait()
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
