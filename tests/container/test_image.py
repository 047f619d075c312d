"""The image, built from the Dockerfile unchanged and run with podman on the host network.

The main container runs the way a Space runs it, only stricter: uid 1000 and a read-only root
file system where only $HOME, /tmp and the /data volume are writable. Through nginx on 7860:
the home page, every litmus test, rclone and a davfs2 mount round-tripping data, 1 GiB PUT/GET
with Range and bounded memory. Other containers (on other ports) cover the metadata backup
against a WebDAV server started here and, in Hub mode against the project's Hub emulator, a
restart with a wiped disk.

Skipped, with the reason printed, where podman cannot build or run (see tests/container/podman.py).
"""

from __future__ import annotations

import hashlib
import shutil
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from tests.container.podman import Podman, PodmanUnavailable
from tests.container.support import (
    ONLINE_BANNER,
    REPO_ROOT,
    Davfs2Mount,
    MiB,
    WebDavTarget,
    cmdline,
    descendants,
    make_random_file,
    one_gib_round_trip,
    require_davfs2,
    run_litmus,
    sha256_file,
)
from tests.e2e.support import Rclone, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

IMAGE = "localhost/hfdav-test"
PUBLIC_PORT = 7860
BOOT_TIMEOUT_S = 180
#: Strictest form of the Space rules: nothing writable but $HOME, /tmp (tmpfs here) and /data.
READ_ONLY = ("--read-only", "--read-only-tmpfs=true", "--tmpfs", "/home/user:rw,mode=1777")


class Container:
    """A running container of the image; quacks like tests.e2e.support.Server for the helpers."""

    def __init__(self, podman: Podman, *, port: int = PUBLIC_PORT, env: dict[str, str] | None = None,
                 volume: str | None = None, extra: tuple[str, ...] = (), password: str | None = None):  # fmt: skip
        self.podman = podman
        self.name = f"hfdav-test-{uuid.uuid4().hex[:8]}"
        self.port = port
        self.user = "admin"
        self.password = password or "pw-" + uuid.uuid4().hex[:12]
        full_env = {"SYS_TOKEN": self.password, "PORT": str(port), "HFDAV_PORT": str(free_port()),
                    "HFDAV_THREADS": "16", **(env or {})}  # fmt: skip
        mounts = ("-v", f"{volume}:/data") if volume else ()
        podman.run(IMAGE, self.name, env=full_env, extra=(*extra, *mounts))
        self._wait_online()

    base = property(lambda self: f"http://127.0.0.1:{self.port}")
    url = property(lambda self: f"{self.base}/dav/")
    auth = property(lambda self: (self.user, self.password))

    def url_for(self, path: str) -> str:
        return self.url + quote(path.lstrip("/"), safe="/")

    def logs(self) -> str:
        return self.podman.logs(self.name)

    def _wait_online(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while ONLINE_BANNER not in self.logs():
            if not self.podman.inspect(self.name)["State"]["Running"] or time.monotonic() > deadline:
                logs = self.logs()
                self.podman.remove(self.name)
                pytest.fail(f"container {self.name} never came online:\n{logs[-5000:]}")
            time.sleep(0.5)

    def stop(self) -> int:
        return self.podman.stop(self.name)

    def remove(self) -> None:
        self.podman.remove(self.name)


@pytest.fixture(scope="module")
def podman():
    try:
        return Podman()
    except PodmanUnavailable as exc:
        pytest.skip(f"image tests skipped: {exc}")


@pytest.fixture(scope="module")
def image(podman):
    started = time.monotonic()
    podman.build(REPO_ROOT, IMAGE)
    size = podman.call("image", "inspect", IMAGE, "--format", "{{.Size}}").stdout.strip()
    print(f"\nimage built in {time.monotonic() - started:.0f}s, size {int(size) / 1e6:.0f} MB")
    return IMAGE


@pytest.fixture(scope="module")
def container(podman, image):
    volume = f"hfdav-test-{uuid.uuid4().hex[:8]}"
    c = Container(podman, volume=volume, extra=READ_ONLY)
    yield c
    status = c.stop()
    logs = c.logs()
    c.remove()
    podman.remove_volume(volume)
    assert status == 0, logs[-3000:]
    assert "stopped" in logs


def test_image_config_meets_space_rules(podman, image):
    config = podman.inspect(image)["Config"]
    assert config["User"] == "user"
    assert "7860/tcp" in config["ExposedPorts"]
    assert config["Cmd"] == ["python", "/app/boot.py"]


def test_processes_run_as_uid_1000_on_a_read_only_root(podman, container):
    root = podman.pid(container.name)
    procs = [root, *descendants(root)]
    names = {cmdline(p).split()[0] for p in procs if cmdline(p)}
    assert any("nginx" in n for n in names) and any("python" in n for n in names), names
    for pid in procs:
        uids = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[:2]
        assert uids == ["1000", "1000"], (pid, cmdline(pid), uids)
    # writes work on /data although the root file system is read-only
    r = requests.put(container.url_for("rw-check.txt"), data=b"ok", auth=container.auth, timeout=30)
    assert r.status_code == 201


def test_home_page_and_health_on_7860(container):
    home = requests.get(f"http://127.0.0.1:{PUBLIC_PORT}/", timeout=10)
    assert home.status_code == 200 and "hfdav" in home.text and 'href="/dav/"' in home.text
    health = requests.get(f"http://127.0.0.1:{PUBLIC_PORT}/healthz", timeout=10).json()
    assert health["status"] == "ok"
    assert requests.request("PROPFIND", container.url, timeout=10).status_code == 401


def test_litmus_through_nginx_in_the_container(container, tmp_path):
    run_litmus(container.url, container.user, container.password, tmp_path)


def test_rclone_round_trip(container, tmp_path):
    up = tmp_path / "up"
    up.mkdir()
    for i in range(3):
        make_random_file(up / f"r{i}.bin", (i + 1) * 7 * MiB, seed=i + 10)
    rclone = Rclone(container, tmp_path / "rclone")
    rclone.run("copy", str(up), f"{rclone.REMOTE}rclone-test")
    rclone.run("check", "--download", str(up), f"{rclone.REMOTE}rclone-test")
    down = tmp_path / "down"
    rclone.run("copy", f"{rclone.REMOTE}rclone-test", str(down))
    for f in up.iterdir():
        assert sha256_file(down / f.name) == sha256_file(f)


def test_davfs2_mount_round_trip(container, tmp_path):
    require_davfs2()
    source = tmp_path / "davfs.bin"
    digest = make_random_file(source, 40 * MiB, seed=7)
    mount = Davfs2Mount(container)
    try:
        mount.mount()
        try:
            (mount.mountpoint / "davfs-test").mkdir()
            shutil.copyfile(source, mount.mountpoint / "davfs-test" / "davfs.bin")
        finally:
            mount.umount()  # waits for davfs2's pending upload
        r = requests.get(container.url_for("davfs-test/davfs.bin"), auth=container.auth, timeout=120)
        assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == digest
        mount.clear_cache()
        mount.mount()
        try:
            assert sha256_file(mount.mountpoint / "davfs-test" / "davfs.bin") == digest
        finally:
            mount.umount()
    finally:
        mount.close()


def test_one_gib_put_get_range_with_bounded_memory(podman, container, tmp_path):
    # nginx's temp folders inside the container, as its open files name them
    spool = tuple(Path(f"/tmp/hfdav-nginx-{PUBLIC_PORT}", d) for d in ("client_body", "proxy"))
    result = one_gib_round_trip(container, tmp_path, podman.pid(container.name), spool)
    print(f"\ncontainer, 1 GiB through nginx: {result.summary()}")
    result.assert_bounded()


def test_backup_loop_and_restore_in_the_container(podman, image, tmp_path):
    """The loop uploads on its own (SYNC_INTERVAL), stop takes a final backup, and a data
    volume whose database was lost gets it back from the WebDAV server at the next start."""
    target = WebDavTarget(tmp_path / "remote").start()
    volume = f"hfdav-test-{uuid.uuid4().hex[:8]}"
    env = {"WEBDAV_URL": f"{target.url}hfdav-backup/", "SYNC_INTERVAL": "10", "HFDAV_CHUNK_SIZE": "1MiB"}
    port = free_port()
    first = Container(podman, port=port, env=env, volume=volume)
    try:
        s = requests.Session()
        s.auth = first.auth
        assert s.put(first.url_for("one.bin"), data=b"1" * 3_000_000).status_code == 201
        deadline = time.monotonic() + 90
        while not target.files("hfdav-backup"):
            assert time.monotonic() < deadline, f"no backup from the loop:\n{first.logs()[-3000:]}"
            time.sleep(1)
        assert s.put(first.url_for("two.bin"), data=b"2" * 2_000_000).status_code == 201
        assert first.stop() == 0
        assert "final metadata backup: hfdav-meta-" in first.logs()
        assert len(target.files("hfdav-backup")) >= 2
    finally:
        first.remove()
    try:
        podman.run_once(IMAGE, "-c", "rm -f /data/meta.sqlite3*", extra=("-v", f"{volume}:/data", "--entrypoint", "sh"))
        second = Container(podman, port=port, env=env, volume=volume, password=first.password)
        try:
            assert "metadata: restored from WebDAV backup" in second.logs()
            for name, body in (("one.bin", b"1" * 3_000_000), ("two.bin", b"2" * 2_000_000)):
                r = requests.get(second.url_for(name), auth=second.auth, timeout=60)
                assert r.status_code == 200 and r.content == body, name
        finally:
            assert second.stop() == 0
            second.remove()
    finally:
        podman.remove_volume(volume)
        target.stop()


def test_hub_mode_restart_with_wiped_disk_keeps_committed_files(podman, image, tmp_path):
    """Hub mode against the Hub emulator on the host; containers without a volume, so each
    start has an empty disk (a Space without persistent storage)."""
    from tests.hub_emulator import HubEmulator

    with HubEmulator(tmp_path / "hub") as emu:
        repo = f"{emu.config.username}/drive"
        env = {"HF_ENDPOINT": emu.url, "HF_TOKEN": emu.token, "HF_HUB_DISABLE_XET": "1", "HFDAV_HUB_TRANSPORT": "lfs", "HF_DATASET_REPO": repo,
               "HFDAV_CHUNK_SIZE": "1MiB"}  # fmt: skip
        port = free_port()
        first = Container(podman, port=port, env=env)
        files = {f"hub/f{i}.bin": hashlib.sha256(bytes([i])).digest() * (i * 60_000 + 7) for i in range(5)}
        try:
            s = requests.Session()
            s.auth = first.auth
            assert s.request("MKCOL", first.url + "hub/").status_code == 201
            for name, body in files.items():
                assert s.put(first.url_for(name), data=body).status_code == 201
            assert first.stop() == 0, first.logs()[-3000:]
        finally:
            first.remove()
        assert emu.commit_count(repo) > 0
        second = Container(podman, port=port, env=env, password=first.password)
        try:
            assert "the gateway restores it from the dataset repo" in second.logs(), second.logs()[-3000:]
            for name, body in files.items():
                r = requests.get(second.url_for(name), auth=second.auth, timeout=60)
                assert r.status_code == 200 and r.content == body, name
        finally:
            assert second.stop() == 0
            second.remove()


def test_maintenance_of_the_live_hub_drive_with_podman_exec(podman, image, tmp_path):
    """``podman exec … hfdav stats|fsck|trash restore|gc --squash --yes`` on a running container
    in Hub mode: they find /data themselves, go through the server's admin API, change the live
    drive, and no second drive (or writer) appears."""
    from tests.hub_emulator import HubEmulator

    with HubEmulator(tmp_path / "hub") as emu:
        repo = f"{emu.config.username}/drive"
        env = {"HF_ENDPOINT": emu.url, "HF_TOKEN": emu.token, "HF_HUB_DISABLE_XET": "1", "HF_DATASET_REPO": repo,
               "HFDAV_CHUNK_SIZE": "1MiB", "HFDAV_COMMIT_INTERVAL": "1"}  # fmt: skip
        c = Container(podman, port=free_port(), env=env)

        def hfdav(*args: str):
            # uid:gid, not the name: podman looks names up in the rootfs, mounted in another namespace here
            return podman.call("exec", "--user", "1000:1000", c.name, "hfdav", *args, check=False, timeout=300)

        try:
            s = requests.Session()
            s.auth = c.auth
            make_random_file(tmp_path / "big.bin", 3 * MiB)
            body = (tmp_path / "big.bin").read_bytes()
            assert s.put(c.url_for("big.bin"), data=body).status_code == 201
            assert s.put(c.url_for("note.txt"), data=b"keep me").status_code == 201
            assert s.delete(c.url_for("note.txt")).status_code == 204

            stats = hfdav("stats")
            assert stats.returncode == 0, stats.stderr
            assert "data dir: /data (hub: " in stats.stdout and "in files: 3.0 MiB" in stats.stdout, stats.stdout
            fsck = hfdav("fsck")
            assert fsck.returncode == 0 and "0 findings" in fsck.stdout, fsck
            listing = hfdav("trash", "list")
            assert listing.returncode == 0 and "/note.txt" in listing.stdout, listing
            restored = hfdav("trash", "restore", listing.stdout.split("->")[1].strip())
            assert restored.returncode == 0, restored
            assert s.get(c.url_for("note.txt")).content == b"keep me"

            refused = hfdav("gc", "--squash")  # podman exec without -t: no terminal
            assert refused.returncode == 2 and "--yes" in refused.stderr, refused
            squashes = emu.stats["super_squashes"]
            gc = hfdav("gc", "--squash", "--yes")
            assert gc.returncode == 0 and "history squashed: yes" in gc.stdout, gc
            assert emu.stats["super_squashes"] == squashes + 1 and emu.commit_count(repo) == 1
            assert s.get(c.url_for("big.bin")).content == body
            assert s.put(c.url_for("after.txt"), data=b"new").status_code == 201

            home = podman.call("exec", "--user", "1000:1000", c.name, "ls", "/home/user/data", check=False)
            assert home.returncode != 0  # no second data dir next to /data
            logs = c.logs()
            for endpoint in ("stats", "fsck", "trash/restore", "gc"):
                assert f"/.hfdav-admin/{endpoint}" in logs, endpoint
        finally:
            assert c.stop() == 0, c.logs()[-3000:]
            c.remove()
