"""Hugging Face Hub emulator for tests: speaks the HTTP protocol of ``huggingface_hub`` 2.4, classic LFS and
Xet (``hf_xet`` 1.8, see xet.py).

Usage::

    with HubEmulator(tmp_path / "hub") as emu:
        api = HfApi(endpoint=emu.url, token=emu.token)
        emu.faults.add(method="POST", path=r"/commit/", kind="status", status=503)
"""

from .context import Config
from .faults import CommitQuota, FaultInjector, FaultRule
from .server import HubEmulator

__all__ = ["CommitQuota", "Config", "FaultInjector", "FaultRule", "HubEmulator"]
