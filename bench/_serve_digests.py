"""``hfdav serve`` with the content checksums computed one given way.

A diagnostic for ``bench_checksums.py`` only, never a way to run the product. The first
argument says how: ``pool`` (the product: big blocks hashed in a pool thread), ``inline`` (in
the request thread) or ``off`` (not at all: the baseline). ``--no-fsync`` as a second argument
also turns the local store's fsync off (then a PUT is CPU-bound: the worst case for the ratio).
"""

from __future__ import annotations

import sys
from pathlib import Path

from gateway import files
from gateway.meta.repo import NO_CHECKSUMS

MODES = ("pool", "inline", "off")


def _apply(mode: str) -> None:
    if mode == "inline":
        original = files.FileService.__init__

        def init_inline(self, *args, **kwargs):
            original(self, *args, **kwargs)
            self.digest_pool.shutdown()
            self.digest_pool = None

        files.FileService.__init__ = init_inline
    elif mode == "off":
        files.ContentDigests.update = lambda self, data: None
        files.ContentDigests.result = lambda self: NO_CHECKSUMS


if __name__ == "__main__":
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode not in MODES:
        sys.exit(f"mode must be one of {MODES}")
    _apply(mode)
    if rest[:1] == ["--no-fsync"]:
        rest = rest[1:]
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import _serve_nofsync  # noqa: F401  (patches the local store on import)
    from gateway.cli import main

    sys.exit(main(rest))
