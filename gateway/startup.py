"""What the servers check and say as they start (``hfdav serve``, gunicorn, boot.py), and
``hfdav check-config --online``.

* :func:`check_data_dir`: the data dir exists (or can be made) and this user may write in it.
* :func:`hub_refusal`: the one line for a Hub answer that no retry will change (a rejected token,
  a repo the token cannot write to).
* :func:`token_access`: what the Hub says about the token (whoami), and whether it may write to
  the dataset repo.
* :func:`summary_lines`: the start-up summary: backend, repo and endpoint, transport,
  durability, encryption, chunk size, users and their rights (never a password), where the
  admin password comes from, the share's URL.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

from gateway.app import ADMIN_PASSWORD_FILE
from gateway.bandwidth import MIN_BURST
from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.progress import human_size

log = logging.getLogger("hfdav.startup")

DEFAULT_ENDPOINT = "https://huggingface.co"


def endpoint_of(settings: Settings) -> str:
    return (settings.hf_endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


# -- the data dir ---------------------------------------------------------------------------


def data_dir_problem(settings: Settings, *, create: bool = True) -> str | None:
    """Why the data dir cannot hold the drive (None: it can). Creates it if missing (with
    ``create``; else its nearest existing parent must be writable) and writes and removes a
    probe file: permissions, read-only mounts and full disks all show."""
    where = settings.data_dir
    if not create and not where.exists():
        parent = next((p for p in where.parents if p.exists()), where.anchor)
        if os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK):
            return None
        return (f"the data dir {where} cannot be created ({parent} is not a writable directory): give a "
                "directory this user may write to (HFDAV_DATA_DIR or --data-dir)")  # fmt: skip
    try:
        where.mkdir(parents=True, exist_ok=True)
        probe = where / f".hfdav-write-probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return (f"the data dir {where} is not writable ({reason}): give a directory this user may write "
                "to (HFDAV_DATA_DIR or --data-dir)")  # fmt: skip
    return None


def check_data_dir(settings: Settings) -> None:
    """ConfigError (one problem) if the data dir cannot hold the drive."""
    if (problem := data_dir_problem(settings)) is not None:
        raise ConfigError([problem])


# -- the Hub ----------------------------------------------------------------------------------


def hub_refusal(settings: Settings, status: int | None) -> str | None:
    """The line for a Hub answer that no retry changes; None for any other."""
    if status == 401:
        return (f"the Hub at {endpoint_of(settings)} rejected HF_TOKEN (HTTP 401): it is wrong, expired or "
                f"revoked; create a write token at {endpoint_of(settings)}/settings/tokens")  # fmt: skip
    if status == 403:
        return (f"HF_TOKEN cannot write to the dataset repo {settings.hf_dataset_repo} (HTTP 403 from the Hub): "
                "use a repo in your own namespace (or an organization's you may write to), or a token with "
                "write access to it")  # fmt: skip
    return None


@dataclass(frozen=True)
class TokenAccess:
    """What whoami said: ``user``; ``role`` of the token (``read``, ``write``, ``fineGrained``);
    ``problem``: why it cannot write to the repo (None: it can, or nothing says it cannot)."""

    user: str
    role: str
    problem: str | None


def _fine_grained_may_write(token: dict, namespace: str, repo_id: str) -> bool:
    grained = token.get("fineGrained") or {}
    for scope in grained.get("scoped") or []:
        entity = scope.get("entity") or {}
        if entity.get("name") in (namespace, repo_id) and "repo.write" in (scope.get("permissions") or []):
            return True
    return False


def judge_access(info: dict, repo_id: str) -> TokenAccess:
    """Whether the token whoami described as ``info`` may write to ``repo_id``: a read token
    may not, nor a write token outside the user's namespace and its organizations (unless it is
    a member with more than the read role), nor a fine-grained one without ``repo.write`` on the
    namespace or the repo. Anything else (another role, no role) is taken as allowed: the Hub
    decides at the first write."""
    user = str(info.get("name") or "?")
    token = (info.get("auth") or {}).get("accessToken") or {}
    role = str(token.get("role") or "unknown")
    namespace = repo_id.split("/")[0]
    if role == "read":
        return TokenAccess(user, role, f"HF_TOKEN is a read-only token (of {user}): the drive needs a write token")
    if role == "fineGrained":
        if not _fine_grained_may_write(token, namespace, repo_id):
            return TokenAccess(user, role, f"HF_TOKEN (fine-grained, of {user}) has no write permission on "
                                           f"{namespace} or {repo_id}")  # fmt: skip
        return TokenAccess(user, role, None)
    if role != "write":  # a server that answers whoami in some other way: its first write decides
        return TokenAccess(user, role, None)
    orgs = {o.get("name"): str(o.get("roleInOrg") or "") for o in info.get("orgs") or []}
    if namespace != user and namespace not in orgs:
        return TokenAccess(user, role, f"HF_TOKEN (of {user}) cannot write to the dataset repo {repo_id}: "
                                       f"{namespace} is neither {user} nor one of their organizations")  # fmt: skip
    if namespace in orgs and orgs[namespace] == "read":
        return TokenAccess(user, role, f"HF_TOKEN (of {user}) cannot write to the dataset repo {repo_id}: "
                                       f"{user} has the read role in {namespace}")  # fmt: skip
    return TokenAccess(user, role, None)


def token_access(settings: Settings) -> TokenAccess:
    """whoami on the Hub, judged for the dataset repo; raises HubError when the Hub fails."""
    from gateway.store.hub import HubClient, translate

    client = HubClient(settings.hf_dataset_repo, token=settings.hf_token, endpoint=settings.hf_endpoint)
    try:
        info = client.api.whoami()
    except Exception as exc:
        raise translate(exc, "checking HF_TOKEN") from exc
    return judge_access(info, settings.hf_dataset_repo)


def repo_state(settings: Settings) -> str:
    """``exists`` or ``missing`` (it will be created, private); raises HubError otherwise."""
    from gateway.store.hub import REPO_TYPE, HubClient, HubError, translate

    client = HubClient(settings.hf_dataset_repo, token=settings.hf_token, endpoint=settings.hf_endpoint)
    try:
        client.api.repo_info(settings.hf_dataset_repo, repo_type=REPO_TYPE)
    except Exception as exc:
        error = exc if isinstance(exc, HubError) else translate(exc, f"reading {settings.hf_dataset_repo}")
        if error.status == 404:
            return "missing"
        raise error from exc
    return "exists"


def check_hub_access(settings: Settings) -> None:
    """At start in Hub mode: ConfigError (one line) when the Hub says the token is rejected or
    cannot write to the repo. A Hub that cannot be reached does not stop the start (the gateway
    retries its own calls); it is logged."""
    from gateway.store.hub import HubError

    try:
        access = token_access(settings)
    except HubError as exc:
        if (line := hub_refusal(settings, exc.status)) is not None:
            raise ConfigError([line]) from exc
        log.warning("could not check HF_TOKEN: %s", exc)
        return
    if access.problem is not None:
        raise ConfigError([access.problem])
    log.info("HF_TOKEN: %s's %s token", access.user, access.role)


def online_report(settings: Settings) -> tuple[list[str], str | None]:
    """``check-config --online``: (lines of what was checked, the first problem or None)."""
    from gateway.store.hub import HubError

    lines: list[str] = []
    if (problem := data_dir_problem(settings, create=False)) is not None:
        return lines, problem
    lines.append(f"data dir {settings.data_dir}: writable")
    if not settings.hub_enabled:
        lines.append("local mode: nothing to check on the Hub")
        return lines, None
    endpoint, repo = endpoint_of(settings), settings.hf_dataset_repo
    try:
        access = token_access(settings)
        if access.problem is not None:
            return lines, access.problem
        lines.append(f"HF_TOKEN: accepted by {endpoint} ({access.user}, {access.role} token)")
        state = repo_state(settings)
    except HubError as exc:
        return lines, hub_refusal(settings, exc.status) or f"the Hub at {endpoint} did not answer: {exc}"
    lines.append(f"dataset repo {repo}: " + ("exists, writable" if state == "exists" else
                                            "does not exist yet; it will be created (private) at start"))  # fmt: skip
    return lines, None


# -- the summary ------------------------------------------------------------------------------

_URL_PASSWORD_RE = re.compile(r"(://[^/:@]+):[^/@]*@")


def password_source(settings: Settings, generated: bool, from_env: bool) -> str:
    where = settings.data_dir / ADMIN_PASSWORD_FILE
    if from_env:
        return "admin password: from SYS_TOKEN"
    if generated:
        return f"admin password: generated now, kept in {where}"
    return f"admin password: kept in {where}"


def summary_lines(settings: Settings, *, share_url: str, password: str) -> list[str]:
    """The start-up summary (``password``: a line of :func:`password_source`). No secret in it."""
    if settings.hub_enabled:
        backend = (f"backend: hub, dataset repo {settings.hf_dataset_repo} on {endpoint_of(settings)}, "
                   f"transport {settings.hub_transport}, durability {settings.durability}")  # fmt: skip
    else:
        backend = f"backend: local, chunks in {settings.data_dir / 'objects'}"
    database = _URL_PASSWORD_RE.sub(r"\1:***@", settings.database_url)
    users = ["admin (rw)"] + [f"{u.name} ({'rw' if u.can_write else 'ro'})" for u in settings.users]
    anonymous = f"; anonymous: {settings.anonymous}" if settings.anonymous != "none" else ""
    return [
        backend,
        f"data dir: {settings.data_dir}; database: {database}",
        f"encryption: {'on' if settings.encryption_key is not None else 'off'}; "
        f"chunk size: {human_size(settings.chunk_size)}",
        f"users: {', '.join(users)}{anonymous}",
        *bandwidth_lines(settings),
        password,
        f"share: {share_url}",
    ]


def bandwidth_lines(settings: Settings) -> list[str]:
    """The remote traffic limits, when any is set."""
    if settings.upload_limit is None and settings.download_limit is None:
        return []

    def one(limit: int | None) -> str:
        if limit is None:
            return "unlimited"
        burst = settings.bandwidth_burst or max(limit, MIN_BURST)
        return f"{human_size(limit)}/s (bursts of {human_size(burst)})"

    return [f"bandwidth: upload {one(settings.upload_limit)}, download {one(settings.download_limit)}"]


def log_summary(settings: Settings, *, share_url: str, password: str) -> None:
    for line in summary_lines(settings, share_url=share_url, password=password):
        log.info("%s", line)


def mode_name(settings: Settings) -> str:
    """The mode for the online banner: ``hub mode (dataset repo ns/name)`` or ``local mode``."""
    return f"hub mode (dataset repo {settings.hf_dataset_repo})" if settings.hub_enabled else "local mode"


# -- the listening socket ---------------------------------------------------------------------


def listen_line(host: str, port: int, exc: OSError) -> str:
    import errno

    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        why = "the address is already in use (is another server running there?)"
    elif exc.errno == errno.EACCES:
        why = "permission denied (ports below 1024 need privileges)"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = "no network interface has this address"
    else:
        why = exc.strerror or str(exc)
    return f"cannot listen on {where}: {why}; choose another with --host/--port (HFDAV_HOST, HFDAV_PORT)"


def bind_listener(host: str, port: int, backlog: int):
    """A listening socket on ``host:port`` (inheritable, for gunicorn's ``fd://``); ConfigError
    (one line) if it cannot be bound."""
    import socket

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host.strip("[]"), port), family=family, backlog=backlog)
    except socket.gaierror as exc:
        raise ConfigError([f"cannot listen on {host}:{port}: {exc.strerror or exc}"]) from exc
    except OSError as exc:
        raise ConfigError([listen_line(host, port, exc)]) from exc
    sock.set_inheritable(True)
    return sock


def check_listen(host: str, port: int) -> None:
    """ConfigError (one line) if ``host:port`` cannot be bound now (tried and released)."""
    bind_listener(host, port, 1).close()
