"""``hfdav serve`` with the local store's fsync turned off.

A diagnostic for the benchmark only (``bench.py --hfdav-no-fsync``): it shows how much of the
PUT cost is durability. Never a way to run the product.
"""

from __future__ import annotations

import sys

from gateway.store import local

_original_init = local.LocalStore.__init__


def _init_without_fsync(self, root, *, fsync: bool = True) -> None:
    _original_init(self, root, fsync=False)


local.LocalStore.__init__ = _init_without_fsync

if __name__ == "__main__":
    from gateway.cli import main

    sys.exit(main(sys.argv[1:]))
