"""The deployment files agree with the code: every setting .env.example names exists, the
compose file publishes the port, keeps /data in a volume and waits long enough on stop."""

from __future__ import annotations

import re

import yaml

from tests.container.support import REPO_ROOT

#: Variables read by huggingface_hub itself, not by hfdav.
CLIENT_LIBRARY_SETTINGS = {"HF_HUB_DISABLE_XET"}


def _known_settings() -> str:
    return (REPO_ROOT / "gateway" / "config.py").read_text() + (REPO_ROOT / "boot.py").read_text()


def test_env_example_names_only_real_settings():
    names = re.findall(r"^#?([A-Z][A-Z0-9_]+)=", (REPO_ROOT / ".env.example").read_text(), re.MULTILINE)
    assert len(names) > 20
    known = _known_settings()
    unknown = [n for n in names
               if n not in CLIENT_LIBRARY_SETTINGS and f'"{n}"' not in known and f"``{n}``" not in known]
    assert not unknown, f".env.example names settings nothing reads: {unknown}"


def test_compose_file_publishes_7860_keeps_data_and_waits_for_the_drain():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["hfdav"]
    assert "7860:7860" in service["ports"]
    volume = next(v for v in service["volumes"] if v.endswith(":/data"))
    assert volume.split(":")[0] in compose["volumes"]
    grace = int(service["stop_grace_period"].rstrip("s"))
    boot = (REPO_ROOT / "boot.py").read_text()
    drain = int(re.search(r"^DEFAULT_DRAIN_TIMEOUT_S = (\d+)", boot, re.MULTILINE).group(1))
    assert grace > drain, "Docker would kill the container before the drain and the final backup"
    assert service["env_file"][0]["path"] == ".env"
