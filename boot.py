#!/usr/bin/env python3
"""Container entry point: the gateway under gunicorn behind nginx, plus the metadata backup loop.

Start-up, in order (any failure stops here with a message and a non-zero exit):

1. Settings from the environment, checked all at once (the gateway's own, see
   ``gateway/config.py``, and the ones below). Defaults that differ from ``hfdav serve``:
   the share lives under ``HFDAV_PREFIX=/dav`` and the data dir is ``/data`` when it is
   writable (persistent storage on a Space, the volume under compose), else ``$HOME/data``.
2. With the Hub backend and no database yet, the dataset repo is created if it does not exist
   (a Hub that does not answer stops the start within HUB_START_DEADLINE_S, exit 2). A data dir
   that holds a database starts without asking the Hub: the gateway serves from it while the
   Hub is down and syncs once it answers.
3. When the metadata database is missing (fresh disk), it comes from whichever is newer: the
   dataset repo (the gateway rebuilds an empty database from the repo as it starts) or the
   newest WebDAV backup (restored here).
4. gunicorn (gthread, one worker) on ``127.0.0.1:HFDAV_PORT``, then nginx on ``PORT``
   (``nginx.conf`` rendered into a run directory under /tmp), then the backup loop.
5. The start-up summary in the log (backend, repo, transport, durability, encryption, chunk
   size, users, where the admin password is kept, the share's URL), and
   ``hfdav online: hub mode (dataset repo ns/name)`` or ``hfdav online: local mode`` on
   stdout once both answer ``/healthz``.

Every line of the container's log has one format: boot.py's own, gunicorn's (its logger class
is :class:`gateway.logs.GunicornLogger`) and nginx's error log (read from its stderr and
logged as ``hfdav.nginx``); ``HFDAV_LOG_FORMAT=json`` makes them all JSON.

On SIGTERM or SIGINT: nginx stops accepting connections and finishes the requests it has;
gunicorn finishes in-flight requests and its worker closes the gateway (background uploads and
commits drain), both within ``HFDAV_DRAIN_TIMEOUT``; then a final metadata backup; exit 0.
A second signal skips the waiting.

Settings of this script (besides the gateway's):

=======================  ===================================================================
``PORT``                 public port nginx listens on (default 7860, a Space's ``app_port``)
``HFDAV_DRAIN_TIMEOUT``  seconds allowed for draining uploads and commits at stop (default 300)
``HFDAV_HOME_DIR``       a directory nginx serves at ``/`` instead of the bundled home page
                         (a site of your own: it needs an ``index.html``)
=======================  ===================================================================
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from gateway.app import ensure_admin_password
from gateway.cli import gunicorn_command
from gateway.config import ConfigError, Settings, int_setting, load_settings
from gateway.dav.auth import WRITE_METHODS
from gateway.logs import setup_logging
from gateway.startup import check_data_dir, check_hub_access, hub_refusal, log_summary, mode_name, password_source
from gateway.sync.backup import BackupError, BackupKeyError, BackupLoop, MetadataBackup, sqlite_path

log = logging.getLogger("hfdav.boot")

#: The start of the line on stdout once everything answers; the mode follows.
ONLINE_BANNER = "hfdav online"
APP_DIR = Path(__file__).resolve().parent
NGINX_TEMPLATE = APP_DIR / "nginx.conf"
#: The bundled home page: a product page; ``{{PREFIX}}`` in its index.html is the share's path.
HOME_DIR = APP_DIR / "home"

#: Port a Hugging Face Space routes to (README front matter ``app_port``).
DEFAULT_PUBLIC_PORT = 7860
DEFAULT_PREFIX = "/dav"
#: Persistent storage of a Space (and the compose volume) is mounted here.
PERSISTENT_DIR = Path("/data")
#: Long enough to send a full staging area (2 GiB by default) to the Hub and commit it.
DEFAULT_DRAIN_TIMEOUT_S = 300
#: How long the gateway may take to answer /healthz: on a fresh disk in Hub mode it first
#: rebuilds the database from the dataset repo, which takes a while for a big tree.
GATEWAY_START_TIMEOUT_S = 1800
#: How long nginx may take to answer /healthz after it is started.
NGINX_START_TIMEOUT_S = 60
#: nginx finishes its last proxied responses once gunicorn is gone; this bounds the wait.
NGINX_STOP_TIMEOUT_S = 30
#: After a second stop signal, children get this long to exit before they are killed.
HURRY_TIMEOUT_S = 10
#: Attempts (and the pause between them) for the Hub calls made before the gateway starts.
HUB_ATTEMPTS = 5
HUB_RETRY_PAUSE_S = 5
#: No attempt starts after this many seconds: a Hub that never answers is reported within 30 s
#: (with the default API timeout of 20 s, one attempt).
HUB_START_DEADLINE_S = 25


class BootError(Exception):
    """Start-up cannot continue; the message says why. ``code``: the exit status (2: a
    mistake in the settings, such as a token the Hub rejects)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


# -- settings -------------------------------------------------------------------------------


def boot_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment with this script's defaults filled in (explicit values win)."""
    env = dict(environ)
    for name, default in (("HFDAV_PREFIX", DEFAULT_PREFIX), ("HFDAV_HOST", "127.0.0.1"), ("HFDAV_PORT", "8000")):
        if not (env.get(name) or "").strip():  # set but empty counts as unset, as in gateway/config.py
            env[name] = default
    if not (env.get("HFDAV_DATA_DIR") or "").strip():
        if PERSISTENT_DIR.is_dir() and os.access(PERSISTENT_DIR, os.W_OK):
            env["HFDAV_DATA_DIR"] = str(PERSISTENT_DIR)
        else:
            env["HFDAV_DATA_DIR"] = str(Path(env.get("HOME") or Path.home()) / "data")
    return env


def load_boot_settings(env: Mapping[str, str]) -> tuple[Settings, int, int]:
    """(gateway settings, public port, drain timeout); raises ConfigError listing every problem."""
    problems: list[str] = []
    settings = None
    try:
        settings = load_settings(env)
    except ConfigError as exc:
        problems.extend(exc.problems)
    port = int_setting(env, "PORT", DEFAULT_PUBLIC_PORT, 1, 65535, problems)
    drain = int_setting(env, "HFDAV_DRAIN_TIMEOUT", DEFAULT_DRAIN_TIMEOUT_S, 1, 24 * 3600, problems)
    if not (env.get("HFDAV_PREFIX") or "").strip().strip("/"):
        problems.append("HFDAV_PREFIX=/: the home page needs / ; use a prefix such as /dav (or run `hfdav serve`)")
    gateway_port = (env.get("HFDAV_PORT") or "").strip()
    if gateway_port in ("0", str(port)):
        problems.append(f"HFDAV_PORT={gateway_port}: nginx needs a fixed port for the gateway, other than PORT")
    if nginx_binary() is None:
        problems.append("nginx is not installed (apt-get install nginx)")
    for needed in (NGINX_TEMPLATE, HOME_DIR / "index.html"):
        if not needed.exists():
            problems.append(f"{needed} is missing")
    if (own := (env.get("HFDAV_HOME_DIR") or "").strip()) and not (Path(own) / "index.html").is_file():
        problems.append(f"HFDAV_HOME_DIR={own}: no index.html there (a directory nginx serves at /)")
    if problems:
        raise ConfigError(problems)
    assert settings is not None
    return settings, port, drain


def nginx_binary() -> str | None:
    return shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


# -- Hub: repo exists, and when it last changed -----------------------------------------------


def _hub_call(what: str, call, settings: Settings):
    """Run a Hub call, retrying transient failures; BootError when it cannot succeed."""
    from gateway.store.hub import HubError, translate

    deadline = time.monotonic() + HUB_START_DEADLINE_S
    for attempt in range(1, HUB_ATTEMPTS + 1):
        try:
            return call()
        except HubError as exc:
            error = exc
        except Exception as exc:  # a foreign error from the client library: translated once, here
            error = translate(exc, what)
        if error.status in (401, 403):
            raise BootError(hub_refusal(settings, error.status) or str(error), code=2)
        if not error.transient:
            raise BootError(f"{what}: {error}")
        if attempt == HUB_ATTEMPTS or time.monotonic() + HUB_RETRY_PAUSE_S > deadline:
            raise BootError(f"{what}: the Hub does not answer ({' '.join(str(error).split())}); the data dir "
                            "holds no drive yet: check HF_ENDPOINT and the network, then start again",
                            code=2)  # fmt: skip
        log.warning("%s failed (attempt %d of %d): %s; retrying", what, attempt, HUB_ATTEMPTS, error)
        time.sleep(HUB_RETRY_PAUSE_S)
    raise AssertionError("unreachable")


def ensure_dataset_repo(settings: Settings) -> datetime | None:
    """Create the (private) dataset repo unless it exists; return when it last changed."""
    from gateway.app import hub_client
    from gateway.store.hub import REPO_TYPE

    client = hub_client(settings)
    what = f"dataset repo {settings.hf_dataset_repo}"
    _hub_call(f"creating {what}", client.ensure_repo, settings)
    info = _hub_call(f"reading {what}", lambda: client.api.repo_info(client.repo_id, repo_type=REPO_TYPE), settings)
    return info.last_modified


def has_database(settings: Settings) -> bool:
    """Whether the data dir already holds its (SQLite) database: the gateway then starts from
    it without the Hub. Another database (PostgreSQL) is the gateway's to judge."""
    db_path = sqlite_path(settings.database_url)
    return db_path is None or db_path.exists()


# -- metadata restore -------------------------------------------------------------------------


def restore_metadata(settings: Settings, backup: MetadataBackup | None, repo_changed: datetime | None) -> str:
    """Fill a missing metadata database from the newer of the dataset repo and the WebDAV backup.

    The repo needs nothing from here: the gateway restores an empty database from the repo as
    it starts. So the backup is restored only when it is newer than the repo's last commit (or
    there is no repo). Returns what was done, for the log. Only the SQLite database can be
    missing on a fresh disk; PostgreSQL lives elsewhere and is left alone.
    """
    db_path = sqlite_path(settings.database_url)
    if db_path is None:
        return "database is not SQLite: nothing to restore"
    if db_path.exists():
        return f"database present at {db_path}"
    from_repo = "the database is missing: the gateway restores it from the dataset repo as it starts"
    if backup is None:
        return from_repo if settings.hub_enabled else "no database yet: starting empty"
    if not settings.hub_enabled and not _has_local_objects(settings):
        log.warning("the WebDAV backup is not restored: the local chunks it refers to are gone too "
                    "(`hfdav restore` restores it anyway)")  # fmt: skip
        return "no database yet: starting empty"
    try:
        generations = backup.generations()
    except BackupError as exc:
        log.error("cannot list WebDAV backups: %s", exc)
        generations = []
    if not generations:
        return from_repo if settings.hub_enabled else "no backup yet: starting empty"
    if repo_changed is not None and repo_changed >= generations[0].taken_at:
        log.info("the dataset repo (changed %s) is newer than the newest backup (%s)",
                 repo_changed.isoformat(), generations[0].taken_at.isoformat())  # fmt: skip
        return from_repo
    try:
        gen = backup.restore_latest(db_path)
    except BackupKeyError as exc:  # starting without the metadata would hide it, then prune it
        raise BootError(f"the WebDAV metadata backup cannot be restored: {exc}") from exc
    except BackupError as exc:
        log.error("restore from the WebDAV backup failed: %s", exc)
        return from_repo if settings.hub_enabled else "starting empty"
    return f"restored from WebDAV backup {gen.name}" if gen else "starting empty"


def _has_local_objects(settings: Settings) -> bool:
    objects = settings.data_dir / "objects"
    return objects.is_dir() and any(objects.iterdir())


# -- processes ----------------------------------------------------------------------------------


#: nginx's connections per worker at most, and the open files it keeps for other uses.
MAX_WORKER_CONNECTIONS = 16384
NGINX_RESERVED_FILES = 64


def open_files_limit() -> int:
    """The open-files limit, raised to the hard limit first (nginx and gunicorn inherit it)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return MAX_WORKER_CONNECTIONS + NGINX_RESERVED_FILES if soft == resource.RLIM_INFINITY else soft


def expect_challenge(anonymous: str) -> str:
    """The map line of nginx.conf's ``$expect_needs_login``: which requests with ``Expect:
    100-continue`` and no ``Authorization`` nginx answers 401 itself (all of them, the writing
    methods with read-only anonymous access, none with read-write anonymous access)."""
    if anonymous == "rw":
        return ""
    methods = "" if anonymous == "none" else "(" + "|".join(sorted(WRITE_METHODS)) + ")$"
    return f'"~*^100-continue::{methods}" 1;'


def home_site(env: Mapping[str, str], run_dir: Path, prefix: str) -> Path:
    """The directory nginx serves at ``/``: ``HFDAV_HOME_DIR`` as it is, or the bundled home
    page written into ``run_dir/home`` with the share's path filled in."""
    own = (env.get("HFDAV_HOME_DIR") or "").strip()
    if own:
        return Path(own).resolve()
    site = run_dir / "home"
    site.mkdir(parents=True, exist_ok=True)
    for page in HOME_DIR.iterdir():
        if page.is_file():
            text = page.read_text()
            (site / page.name).write_text(text.replace("{{PREFIX}}", prefix.rstrip("/")))
    return site


def s3_location(s3_prefix: str | None) -> str:
    """The nginx location of the S3 API (a comment when it is off)."""
    if not s3_prefix:
        return "        # (the S3 API is off: HFDAV_S3_PREFIX=off)"
    prefix = s3_prefix.rstrip("/")
    return (f"        location ^~ {prefix}/ {{\n"
            "            client_max_body_size 0;\n"
            "            proxy_request_buffering off;\n"
            "            proxy_buffering off;\n"
            "            proxy_pass http://hfdav_gateway;\n"
            "        }\n"
            f"        location = {prefix} {{\n"
            "            proxy_pass http://hfdav_gateway;\n"
            "        }")  # fmt: skip


def render_nginx_conf(*, port: int, gateway: str, prefix: str, run_dir: Path, settings: Settings | None = None,
                      open_files: int = 1024, site_dir: Path = HOME_DIR) -> str:  # fmt: skip
    """nginx.conf with its placeholders filled in; the limits from ``settings`` (defaults if None);
    ``site_dir``: what nginx serves at ``/``."""
    settings = settings or Settings(data_dir=run_dir, database_url="sqlite://")
    open_files = min(open_files, MAX_WORKER_CONNECTIONS + NGINX_RESERVED_FILES)
    values = {
        "OPEN_FILES": str(open_files),
        "WORKER_CONNECTIONS": str(max(256, open_files - NGINX_RESERVED_FILES)),
        "HEADER_TIMEOUT": str(settings.header_timeout),
        "HEADER_BUFFER": f"{max(1, settings.max_header_bytes // 4 // 1024)}k",
        "IDLE_TIMEOUT": str(settings.idle_timeout),
        "BODY_TIMEOUT": str(settings.body_timeout),
        "BACKLOG": str(settings.listen_backlog),
        "LISTEN_PORT": str(port),
        "GATEWAY_ADDR": gateway,
        "PREFIX": prefix.rstrip("/"),
        "S3_LOCATION": s3_location(settings.s3_prefix),
        "EXPECT_CHALLENGE": expect_challenge(settings.anonymous),
        "RUN_DIR": str(run_dir),
        "SITE_DIR": str(site_dir),
        # nginx switches workers to `nobody` when started as root; only root may say who to be
        "USER_DIRECTIVE": "user root;" if os.geteuid() == 0 else "",
    }
    text = NGINX_TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        raise BootError(f"nginx.conf has an unknown placeholder near: {text[text.index('{{'):][:40]!r}")
    return text


_NGINX_LINE_RE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] (?:\d+#\d+: )?(?:\*\d+ )?(.*)$")
_NGINX_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": logging.INFO, "warn": logging.WARNING,
                 "error": logging.ERROR, "crit": logging.CRITICAL, "alert": logging.CRITICAL,
                 "emerg": logging.CRITICAL}  # fmt: skip


def relay_nginx_log(stream) -> None:
    """nginx's error log (its stderr), line by line, into the log as ``hfdav.nginx``: one
    format for the whole container. Its own time stamp and pid are dropped; the level kept."""
    logger = logging.getLogger("hfdav.nginx")
    for raw in stream:
        line = raw.decode("utf-8", errors="replace").rstrip()
        if not line:
            continue
        m = _NGINX_LINE_RE.match(line)
        level, message = (_NGINX_LEVELS.get(m.group(1), logging.WARNING), m.group(2)) if m else (logging.WARNING, line)
        logger.log(level, "%s", message)


def wait_answering(url: str, proc: subprocess.Popen, what: str, timeout: float) -> None:
    """Wait until ``url`` (a /healthz) answers; BootError if ``proc`` exits or time runs out.

    A 503 counts as an answer: the server is up and says what is wrong (the Hub may be
    unreachable for a while); that is logged, and start-up goes on.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BootError(f"{what} exited with status {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError as exc:
            if exc.code == 503:
                log.warning("%s is up but not healthy yet: %s", what, exc.read(2000).decode(errors="replace"))
                return
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise BootError(f"{what} did not answer within {timeout:.0f}s ({last})")


class Supervisor:
    """Owns the child processes and the backup loop; runs the stop sequence once."""

    def __init__(self, settings: Settings, env: Mapping[str, str], port: int, drain: int,
                 backup: MetadataBackup | None):  # fmt: skip
        self.settings = settings
        self.env = env
        self.port = port
        self.drain = drain
        self.backup = backup
        self.loop: BackupLoop | None = None
        self.gunicorn: subprocess.Popen | None = None
        self.nginx: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self.hurried_at: float | None = None
        self.run_dir = Path(tempfile.gettempdir()) / f"hfdav-nginx-{port}"

    def start(self) -> None:
        open_files = open_files_limit()  # before the children start: they inherit it
        argv, genv = gunicorn_command(self.settings, graceful_timeout=self.drain)
        # own process groups: a Ctrl-C in a terminal reaches this script only, which stops the
        # children in the right order
        self.gunicorn = subprocess.Popen(argv, env=genv, stdin=subprocess.DEVNULL, process_group=0)
        gateway = f"{self.settings.host}:{self.settings.port}"
        wait_answering(f"http://{gateway}/healthz", self.gunicorn, "the gateway (gunicorn)", GATEWAY_START_TIMEOUT_S)

        for sub in ("", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.run_dir / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        conf = self.run_dir / "nginx.conf"
        site = home_site(self.env, self.run_dir, self.settings.prefix)
        conf.write_text(render_nginx_conf(port=self.port, gateway=gateway, prefix=self.settings.prefix,
                                          run_dir=self.run_dir, settings=self.settings,
                                          open_files=open_files, site_dir=site))  # fmt: skip
        self.nginx = subprocess.Popen([nginx_binary(), "-p", str(self.run_dir), "-c", str(conf), "-e", "stderr"],
                                      stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, process_group=0)  # fmt: skip
        threading.Thread(target=relay_nginx_log, args=(self.nginx.stderr,), name="nginx-log", daemon=True).start()
        wait_answering(f"http://127.0.0.1:{self.port}/healthz", self.nginx, "nginx", NGINX_START_TIMEOUT_S)

        if self.backup is not None:
            self.loop = BackupLoop(self.backup, self.settings.sync_interval).start()
            log.info("metadata backup every %ds to %s", self.settings.sync_interval, self.backup.folder.url)

    def on_signal(self, signum, _frame) -> None:
        if self.stopping.is_set():
            log.warning("signal %d again: stopping without waiting for drains", signum)
            self.hurried_at = time.monotonic()
            for proc, sig in ((self.gunicorn, signal.SIGQUIT), (self.nginx, signal.SIGTERM)):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(sig)
        self.stopping.set()

    def wait(self) -> int:
        """Block until a signal or a child's death; then stop everything. Returns the exit status."""
        crashed = None
        while not self.stopping.wait(1.0):
            for name, proc in (("gunicorn", self.gunicorn), ("nginx", self.nginx)):
                if proc is not None and proc.poll() is not None:
                    crashed = f"{name} exited unexpectedly with status {proc.returncode}"
                    break
            if crashed:
                log.error("%s: stopping", crashed)
                break
        self.stop()
        return 1 if crashed else 0

    def stop(self) -> None:
        self.stopping.set()
        log.info("stopping: no new connections; finishing requests, uploads and commits (up to %ds)", self.drain)
        if self.nginx is not None and self.nginx.poll() is None:
            self.nginx.send_signal(signal.SIGQUIT)  # graceful: stop listening, finish what it has
        if self.gunicorn is not None:
            if self.gunicorn.poll() is None:
                self.gunicorn.send_signal(signal.SIGTERM)
            self._reap(self.gunicorn, "gunicorn", self.drain + 30)
        if self.nginx is not None:
            self._reap(self.nginx, "nginx", NGINX_STOP_TIMEOUT_S)
        if self.loop is not None:
            self.loop.stop()
        if self.backup is not None:
            try:
                gen = self.backup.backup_once()
                log.info("final metadata backup: %s", gen.name if gen else "unchanged since the last one")
            except BackupError as exc:
                log.error("final metadata backup FAILED: %s", exc)
            self.backup.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        log.info("stopped")

    def _reap(self, proc: subprocess.Popen, name: str, timeout: float) -> None:
        """Wait for ``proc`` to exit, at most ``timeout`` s (or HURRY_TIMEOUT_S after a second
        signal); then kill it."""
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            limit = deadline if self.hurried_at is None else min(deadline, self.hurried_at + HURRY_TIMEOUT_S)
            if time.monotonic() >= limit:
                log.error("%s did not stop in time: killing it", name)
                proc.kill()
                proc.wait()
                return
            time.sleep(0.2)


def main() -> int:
    env = boot_environment(os.environ)
    try:
        settings, port, drain = load_boot_settings(env)
    except ConfigError as exc:
        print(f"boot: {exc.problems[0] if len(exc.problems) == 1 else exc}", file=sys.stderr, flush=True)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    try:
        check_data_dir(settings)
        if settings.hub_enabled:
            check_hub_access(settings)
    except ConfigError as exc:
        print(f"boot: {exc.problems[0] if len(exc.problems) == 1 else exc}", file=sys.stderr, flush=True)
        return 2
    from_env = bool(settings.admin_password)
    settings, generated = ensure_admin_password(settings)
    if generated:
        print(f"boot: no SYS_TOKEN set; generated a password for user 'admin': {settings.admin_password}\n"
              f"boot: it is kept in {settings.data_dir / 'admin-password'} (shown only this once)",
              file=sys.stderr, flush=True)  # fmt: skip

    backup = MetadataBackup.from_settings(settings)
    if settings.webdav_url and backup is None:
        log.warning("WEBDAV_URL is set but the database is not SQLite: the metadata backup loop covers "
                    "the SQLite default only; back PostgreSQL up with its own tools")  # fmt: skip
    supervisor = Supervisor(settings, env, port, drain, backup)
    signal.signal(signal.SIGTERM, supervisor.on_signal)
    signal.signal(signal.SIGINT, supervisor.on_signal)
    # a Space names its public host in SPACE_HOST
    public = f"https://{env['SPACE_HOST']}" if env.get("SPACE_HOST") else f"http://localhost:{port}"
    log_summary(settings, share_url=f"{public}{settings.prefix}/",
                password=password_source(settings, generated, from_env))  # fmt: skip
    try:
        repo_changed = ensure_dataset_repo(settings) if settings.hub_enabled and not has_database(settings) else None
        log.info("metadata: %s", restore_metadata(settings, backup, repo_changed))
        supervisor.start()
    except BootError as exc:
        log.error("cannot start: %s", exc)
        supervisor.stop()
        return exc.code
    if supervisor.stopping.is_set():
        supervisor.stop()
        return 0
    print(f"{ONLINE_BANNER}: {mode_name(settings)}", flush=True)
    log.info("WebDAV share at %s%s/ (data dir %s)", public, settings.prefix, settings.data_dir)
    return supervisor.wait()


if __name__ == "__main__":
    sys.exit(main())
