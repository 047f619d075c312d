#!/usr/bin/env bash
# The project's one test command. Works on a fresh clone on a fresh Debian machine:
#   - creates .venv if it is missing and installs the project with its test extras;
#   - as root with apt-get, installs the external clients the end-to-end tests drive
#     (litmus rclone davfs2 cadaver fuse3 nginx; curl; lftp; restic duplicity; nodejs npm libhttp-dav-perl hdav davix for
#     the client libraries) and podman for the image tests; a failing
#     apt-get is reported, not fatal;
#   - says which tools are still missing (their tests are skipped, with the reason);
#   - runs pytest with the arguments given (scripts/test.sh -k litmus), printing skip reasons,
#     and exits with pytest's exit code.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2

say() { printf '[test.sh] %s\n' "$*" >&2; }

# -- Python environment ---------------------------------------------------------------------
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $PYTHON"
    if ! "$PYTHON" -m venv .venv; then
        say "could not create .venv (on Debian: apt-get install python3-venv)"
        exit 2
    fi
fi
say "installing the project and its test dependencies into .venv"
if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'; then
    if .venv/bin/python -c 'import gateway, pytest, requests' 2>/dev/null; then
        say "pip install -e '.[test]' failed; continuing with what .venv already has"
    else
        say "pip install -e '.[test]' failed and .venv lacks the project or pytest"
        exit 2
    fi
fi

# -- external tools -------------------------------------------------------------------------
# command to look for -> Debian package providing it
declare -A TOOLS=(
    [litmus]=litmus
    [rclone]=rclone
    [mount.davfs]=davfs2
    [cadaver]=cadaver
    [fusermount3]=fuse3
    [nginx]=nginx
    [curl]=curl
    [podman]=podman
    [node]=nodejs
    [npm]=npm
    [dave]=libhttp-dav-perl
    [hdav]=hdav
    [davix-put]=davix
    [htpasswd]=apache2-utils
    [lftp]=lftp
    [restic]=restic
    [duplicity]=duplicity
    [chromium]=chromium
    [chromedriver]=chromium-driver
    [aria2c]=aria2
    [axel]=axel
    [wget]=wget
    [ffprobe]=ffmpeg
    [gio]=libglib2.0-bin
    [dbus-run-session]=dbus-daemon
    [/usr/libexec/gvfsd]=gvfs-daemons
    [/usr/libexec/gvfsd-dav]=gvfs-backends
    [git]=git
    [sqlite3]=sqlite3
)

have() { PATH="$PATH:/usr/sbin:/sbin" command -v "$1" >/dev/null 2>&1; }

missing_packages() {
    local tool
    for tool in "${!TOOLS[@]}"; do
        have "$tool" || printf '%s\n' "${TOOLS[$tool]}"
    done | sort -u
}

mapfile -t MISSING < <(missing_packages)
if [ "${#MISSING[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing Debian packages: ${MISSING[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null 2>&1 || say "apt-get update failed; trying to install anyway"
        # one at a time, so a package missing from the archive does not stop the others
        for pkg in "${MISSING[@]}"; do
            apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1 \
                || say "apt-get install $pkg failed"
        done
    else
        say "not root or no apt-get: not installing ${MISSING[*]}"
    fi
fi

mapfile -t STILL_MISSING < <(missing_packages)
if [ "${#STILL_MISSING[@]}" -gt 0 ]; then
    say "MISSING tools (their end-to-end tests will be skipped): ${STILL_MISSING[*]}"
    say "  install with: apt-get install ${STILL_MISSING[*]}"
else
    say "all external tools present: ${!TOOLS[*]}"
fi
if [ "$(id -u)" != 0 ]; then
    say "not root: the davfs2 mount test will be skipped"
fi

# The image tests build the Dockerfile on the base it names. Where no registry serves it, the
# sandbox helper next to the project makes a local stand-in from Debian's packages (about a
# minute, once per machine); without podman or the helper the image tests skip with the reason.
PODMAN_HERE="$ROOT/../shared/container/podman-here.sh"
if have podman && [ "$(id -u)" = 0 ] && [ -x "$PODMAN_HERE" ]; then
    if ! "$PODMAN_HERE" base >/tmp/hfdav-podman-base.log 2>&1; then
        say "could not make the container base image (see /tmp/hfdav-podman-base.log): image tests will skip"
    fi
fi

# -- tests ----------------------------------------------------------------------------------
# Two pytest workers by default (HFDAV_TEST_WORKERS=0 runs in one process): most tests wait on
# servers, clients and subprocesses, so two workers halve the run on a 2-core machine. Every
# test takes its own ports, folders and PostgreSQL schema, so the workers never collide.
WORKERS="${HFDAV_TEST_WORKERS:-2}"
PARALLEL=()
if [ "$WORKERS" != 0 ]; then
    PARALLEL=(-n "$WORKERS")
fi
say "running: python -m pytest -rs ${PARALLEL[*]} $*"
.venv/bin/python -m pytest -rs "${PARALLEL[@]}" "$@"
status=$?
say "pytest exit code: $status"
exit "$status"
