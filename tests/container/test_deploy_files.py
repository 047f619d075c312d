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


# -- the home page at / ------------------------------------------------------------------------

#: Wording of a page that pretends to be somebody else's site.
DISGUISE_WORDS = ("decoy", "disguise", "sketchbook", "portfolio", "mira okafor", "fake_site")


def test_home_page_says_what_it_is_and_where_the_drive_is():
    index = (REPO_ROOT / "home" / "index.html").read_text()
    assert "hfdav" in index and "WebDAV" in index and "Hugging Face dataset repo" in index
    assert 'href="{{PREFIX}}/"' in index  # boot.py fills in the share's path
    assert re.findall(r"\{\{(\w+)\}\}", index) == ["PREFIX"] * index.count("{{")
    assert (REPO_ROOT / "home" / "404.html").exists() and (REPO_ROOT / "home" / "style.css").exists()
    assert not (REPO_ROOT / "fake_site").exists()


def test_nothing_disguises_the_service():
    for name in ("Dockerfile", "nginx.conf", "boot.py", "README.md", "docs/DEPLOY.md",
                 "home/index.html", "home/404.html"):  # fmt: skip
        text = (REPO_ROOT / name).read_text().lower()
        found = [w for w in DISGUISE_WORDS if w in text]
        assert not found, f"{name}: {found}"


def test_the_image_ships_the_home_page_and_the_setting_to_replace_it_is_documented():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY home /app/home$", dockerfile, re.MULTILINE)
    boot = (REPO_ROOT / "boot.py").read_text()
    assert 'HOME_DIR = APP_DIR / "home"' in boot and '"HFDAV_HOME_DIR"' in boot
    assert "HFDAV_HOME_DIR" in (REPO_ROOT / "docs" / "DEPLOY.md").read_text()
    assert "HFDAV_HOME_DIR" in (REPO_ROOT / "README.md").read_text()
    assert "root {{SITE_DIR}};" in (REPO_ROOT / "nginx.conf").read_text()


def test_bundled_home_page_gets_the_share_path(tmp_path):
    import boot

    site = boot.home_site({}, tmp_path, "/files")
    index = (site / "index.html").read_text()
    assert 'href="/files/"' in index and "{{" not in index
    own = tmp_path / "mine"
    own.mkdir()
    assert boot.home_site({"HFDAV_HOME_DIR": str(own)}, tmp_path, "/files") == own.resolve()


def test_readme_states_the_hub_terms():
    readme = (REPO_ROOT / "README.md").read_text()
    assert "https://huggingface.co/terms-of-service" in readme
    assert "https://huggingface.co/content-policy" in readme
