"""podman for the image tests, with the flags that let it run in sandboxes without a Docker
engine: as root, every call in a private mount namespace without the cgroup v2 hybrid mount
(crun refuses it), builds with chroot isolation, containers without cgroups, on the host
network, with rlimits no higher than the usual 1024. The same flags work on an ordinary host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

#: The base image the Dockerfile names. The tests do not pull it (they may run without a registry).
BASE_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
BUILD_TIMEOUT_S = 1800


class PodmanUnavailable(Exception):
    """podman cannot build or run here; the message says why (the tests skip with it)."""


class Podman:
    def __init__(self):
        exe = shutil.which("podman")
        if exe is None:
            raise PodmanUnavailable("podman is not installed (apt-get install podman)")
        self._prefix: list[str] = [exe]
        if os.geteuid() == 0 and shutil.which("unshare") and Path("/sys/fs/cgroup/unified").is_dir():
            self._prefix = ["unshare", "-m", "sh", "-c", 'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$0" "$@"',
                            exe]  # fmt: skip
        probe = self.call("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False, timeout=60)
        if probe.returncode != 0:
            raise PodmanUnavailable(f"podman info failed: {probe.stderr.strip()[-300:]}")
        if self.call("image", "exists", BASE_IMAGE, check=False).returncode != 0:
            raise PodmanUnavailable(
                f"base image {BASE_IMAGE} is not present: `podman pull {BASE_IMAGE}`, or tag a local "
                "Debian bookworm image with python3, venv and pip under that name"
            )

    def call(self, *args: str, check: bool = True, timeout: float = 300, input: str | None = None
             ) -> subprocess.CompletedProcess:  # fmt: skip
        proc = subprocess.run([*self._prefix, *args], capture_output=True, text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def build(self, context: Path, tag: str) -> subprocess.CompletedProcess:
        return self.call("build", "--isolation", "chroot", "--network", "host", *LIMITS, "-t", tag, str(context),
                         timeout=BUILD_TIMEOUT_S)  # fmt: skip

    def run(self, image: str, name: str, *, env: dict[str, str] | None = None, extra: tuple[str, ...] = ()) -> str:
        """Start a detached container (kept after it exits, for its logs and exit code)."""
        args = ["run", "-d", "--name", name, "--cgroups=disabled", "--network", "host", *LIMITS, *extra]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        return self.call(*args, image).stdout.strip()

    def run_once(self, image: str, *args: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        """Run a throw-away container to completion (e.g. ``--entrypoint sh IMAGE -c ...``)."""
        return self.call("run", "--rm", "--cgroups=disabled", "--network", "host", *LIMITS, *extra, image, *args)

    def logs(self, name: str) -> str:
        proc = self.call("logs", name, check=False)
        return proc.stdout + proc.stderr

    def inspect(self, name: str) -> dict:
        return json.loads(self.call("inspect", name).stdout)[0]

    def pid(self, name: str) -> int:
        """Host pid of the container's first process (boot.py)."""
        return int(self.inspect(name)["State"]["Pid"])

    def stop(self, name: str, timeout: int = 120) -> int:
        """SIGTERM to boot.py, SIGKILL after ``timeout`` s; returns the exit code."""
        self.call("stop", "-t", str(timeout), name, check=False, timeout=timeout + 60)
        deadline = time.monotonic() + 30
        while self.inspect(name)["State"]["Running"] and time.monotonic() < deadline:
            time.sleep(0.2)
        return int(self.inspect(name)["State"]["ExitCode"])

    def remove(self, name: str) -> None:
        self.call("rm", "-f", name, check=False)

    def remove_volume(self, name: str) -> None:
        self.call("volume", "rm", "-f", name, check=False)
