"""The ``hfdav`` command: ``serve`` and the maintenance commands. Thin: parses, then calls down."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from gateway import __version__
from gateway.config import ConfigError, load_settings, parse_size
from gateway.errors import HfdavError, HubUnreachable
from gateway.progress import human_size, parse_duration

log = logging.getLogger("hfdav")


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"not a share between 0 and 1: {text!r} (examples: 0.05, 0.5, 1)")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hfdav", description="WebDAV gateway over chunked storage.")
    p.add_argument("--version", action="version", version=f"hfdav {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the WebDAV server")
    serve.add_argument("--host", help="listen address (HFDAV_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (HFDAV_PORT, default 8000)")
    serve.add_argument("--data-dir", help="data directory (HFDAV_DATA_DIR, default ./data)")
    serve.add_argument("--database-url", help="SQLAlchemy URL (HFDAV_DATABASE_URL)")
    serve.add_argument("--chunk-size", type=_size, help="chunk size, e.g. 50MiB (HFDAV_CHUNK_SIZE)")
    serve.add_argument("--prefix", help="URL prefix of the share (HFDAV_PREFIX, default /)")
    serve.add_argument("--threads", type=int, help="request threads (HFDAV_THREADS, default 32)")
    serve.add_argument(
        "--server", choices=("cheroot", "gunicorn"), default="cheroot", help="HTTP server (default cheroot)"
    )
    serve.add_argument("--local", action="store_true",
                       help="keep the drive on this disk even with HF_TOKEN set (HFDAV_MODE=local)")  # fmt: skip

    check = sub.add_parser("check-config", help="validate the settings and exit")
    check.add_argument("--data-dir")
    check.add_argument("--local", action="store_true", help="local mode (HFDAV_MODE=local)")
    check.add_argument("--online", action="store_true",
                       help="also ask the Hub whether HF_TOKEN is accepted and may write to the repo, "
                            "and check that the data dir is writable")  # fmt: skip

    gc = sub.add_parser("gc", help="purge old trash, pack small files, repack, delete unreferenced objects")
    gc.add_argument("--data-dir")
    gc.add_argument("--grace", type=_duration, default=None,
                    help="how long an unreferenced object is kept, e.g. 3600, 90m, 6h, 2d (default 6h)")  # fmt: skip
    gc.add_argument(
        "--squash", action="store_true", help="Hub backend: also squash the repo history (frees deleted files' quota)"
    )
    gc.add_argument("--yes", action="store_true", help="--squash: do not ask for confirmation")
    gc.add_argument("--no-repack", action="store_true", help="do not rewrite sparse packs")

    rebuild = sub.add_parser("rebuild", help="rebuild the metadata database from the dataset repo alone")
    rebuild.add_argument("--data-dir")
    rebuild.add_argument("--force", action="store_true", help="replace an existing database (stop the server first)")
    rebuild.add_argument("--into", metavar="DIR",
                         help="build a new data dir DIR instead (works while the server runs)")  # fmt: skip

    fsck = sub.add_parser("fsck", help="check the metadata against itself and the store")
    fsck.add_argument("--data-dir")
    fsck.add_argument("--repair", action="store_true", help="repair what can be repaired")
    fsck.add_argument("--verify", type=_share, default=0.0, metavar="SHARE",
                      help="also read and hash this share of the local objects (0 to 1; 1 = all)")  # fmt: skip
    fsck.add_argument("--json", action="store_true", help="machine-readable output")
    verify = sub.add_parser("verify", help="read objects back from the dataset repo (or local store) and hash them")
    verify.add_argument("--data-dir")
    verify.add_argument("--sample", type=_share, default=1.0, metavar="SHARE",
                        help="share of objects to read (0 to 1; default 1 = all)")  # fmt: skip
    verify.add_argument("--json", action="store_true", help="machine-readable output")

    trash = sub.add_parser("trash", help="list, restore or purge deleted files")
    trash.add_argument("--data-dir")
    trash.add_argument("action", choices=("list", "restore", "purge"))
    trash.add_argument("path", nargs="?", help="restore: the trash path shown by 'list'")
    trash.add_argument("--to", help="restore: another destination")
    trash.add_argument("--all", action="store_true", help="purge: everything, whatever its age")
    trash.add_argument("--json", action="store_true", help="machine-readable output")

    fversions = sub.add_parser("versions", help="list or restore the earlier versions of a file")
    fversions.add_argument("--data-dir")
    fversions.add_argument("action", choices=("list", "restore"))
    fversions.add_argument("path", help="the file, e.g. /docs/report.odt")
    fversions.add_argument("n", nargs="?", type=int, default=1, help="restore: the version number shown by 'list'")
    fversions.add_argument("--json", action="store_true", help="machine-readable output")

    locks = sub.add_parser("locks", help="list or break WebDAV locks (works while the server runs)")
    locks.add_argument("--data-dir")
    locks.add_argument("--database-url", help="SQLAlchemy URL (HFDAV_DATABASE_URL)")
    locks.add_argument("action", choices=("list", "break", "break-path"))
    locks.add_argument("target", nargs="?", help="break: the lock token; break-path: the locked path")
    locks.add_argument("--all", action="store_true", help="break-path: also every lock below the path")

    stats = sub.add_parser("stats", help="print counts and sizes")
    stats.add_argument("--data-dir")
    stats.add_argument("--json", action="store_true", help="machine-readable output (sizes in bytes)")

    sync = sub.add_parser("sync", help="Hub backend: what waits for an upload or a commit")
    sync.add_argument("action", choices=("status",))
    sync.add_argument("--data-dir")
    sync.add_argument("--json", action="store_true", help="machine-readable output")

    backup = sub.add_parser("backup", help="back the metadata database up to WEBDAV_URL now")
    backup.add_argument("--data-dir")
    backup.add_argument("--list", action="store_true", help="list the generations on the server instead")

    restore = sub.add_parser("restore", help="restore the metadata database from the newest WEBDAV_URL backup")
    restore.add_argument("--data-dir")
    restore.add_argument(
        "--force", action="store_true", help="replace an existing database (stop the server first)"
    )
    return p


def _overrides(args: argparse.Namespace) -> dict:
    keys = ("host", "port", "data_dir", "database_url", "chunk_size", "prefix", "threads")
    over = {k: getattr(args, k, None) for k in keys}
    over["mode"] = "local" if getattr(args, "local", False) else None
    return over


def _hub_refusal(settings, exc: Exception) -> str | None:
    """The line for a Hub error no retry changes (401, 403), else None. (No Hub client was
    loaded, so no Hub error, in local mode: the module is not imported for it.)"""
    hub = sys.modules.get("gateway.store.hub")
    if hub is None or not isinstance(exc, hub.HubError):
        return None
    from gateway.startup import hub_refusal

    return hub_refusal(settings, exc.status)


def _config_line(exc: ConfigError) -> str:
    """One problem: one line; several: the list."""
    return exc.problems[0] if len(exc.problems) == 1 else str(exc)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(overrides=_overrides(args))
    except ConfigError as exc:
        print(f"hfdav: {_config_line(exc)}", file=sys.stderr)
        return 2

    from gateway.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    try:
        return _dispatch(args, settings)
    except ConfigError as exc:  # found once storage is open: wrong key, unwritable data dir, ...
        print(f"hfdav: {_config_line(exc)}", file=sys.stderr)
        return 2
    except PermissionError as exc:  # a data dir of another user, read-only files
        print(f"hfdav: permission denied: {exc.filename or exc}: this user cannot write in the data dir "
              f"{settings.data_dir} (HFDAV_DATA_DIR or --data-dir)", file=sys.stderr)  # fmt: skip
        return 2
    except HubUnreachable as exc:  # a first start while the Hub does not answer
        print(f"hfdav: {exc}", file=sys.stderr)
        return 2
    except HfdavError as exc:  # e.g. another process holds the data dir
        if (line := _hub_refusal(settings, exc)) is not None:  # a rejected token, a foreign repo
            print(f"hfdav: {line}", file=sys.stderr)
            return 2
        print(f"hfdav: {exc}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace, settings) -> int:
    if args.command == "check-config":
        return _check_config(settings, args.online)
    if args.command == "serve":
        return _serve(settings, args.server)
    if args.command == "restore":
        return _restore(settings, args.force)
    if args.command == "backup" and args.list:
        return _backup_list(settings)
    if args.command == "rebuild" and not args.into:
        return _rebuild_here(settings, args.force)
    if args.command == "locks":
        if missing := _no_drive(settings):
            return _fail(missing)
        return _locks(settings, args)
    missing = _no_drive(settings)
    if missing and args.command != "rebuild":
        return _fail(missing)
    if args.command == "gc" and args.squash:
        if not settings.hub_enabled:
            return _fail("--squash needs the Hub backend (HF_DATASET_REPO)")
        if not _confirm_squash(settings, args.yes):
            return 2
    return _maintain(args, settings)


def _check_config(settings, online: bool) -> int:
    from gateway.startup import data_dir_problem, online_report

    if online:
        lines, problem = online_report(settings)
    else:
        lines, problem = [], data_dir_problem(settings, create=False)
    if problem is not None:
        return _fail(f"NOT OK: {problem}")
    for line in lines:
        print(line)
    mode = f"hub ({settings.hf_dataset_repo})" if settings.hub_enabled else "local"
    print(f"settings OK: {mode} mode, data dir {settings.data_dir}, prefix {settings.prefix}")
    return 0


def _fail(message: str, code: int = 2) -> int:
    print(f"hfdav: {message}", file=sys.stderr)
    return code


def _no_drive(settings) -> str | None:
    """Why the data dir holds no drive (None: it does, or its database is elsewhere)."""
    where = settings.data_dir
    if not where.is_dir():
        return f"no drive in {where} (no such directory; the data dir is HFDAV_DATA_DIR or --data-dir)"
    prefix = "sqlite:///"
    url = settings.database_url
    if url.startswith(prefix) and not os.path.exists(url[len(prefix) :]):
        return f"no drive in {where} (no database {url[len(prefix):]}; the data dir is HFDAV_DATA_DIR or --data-dir)"
    return None


def _confirm_squash(settings, yes: bool) -> bool:
    what = f"squash the history of {settings.hf_dataset_repo or 'the dataset repo'} into one commit"
    if yes:
        return True
    if not sys.stdin.isatty():
        print(f"hfdav: gc --squash would {what}: pass --yes to confirm (no terminal to ask on)", file=sys.stderr)
        return False
    answer = input(f"{what} (older revisions are gone for good)? [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        print("hfdav: not squashed", file=sys.stderr)
        return False
    return True


def _call(args: argparse.Namespace) -> tuple[str, str, dict]:
    """The admin API call of a maintenance command: (method, endpoint, query)."""
    c = args.command
    if c == "stats":
        return "GET", "stats", {}
    if c == "fsck":
        return "POST", "fsck", {"repair": int(args.repair), "verify": args.verify}
    if c == "verify":
        return "POST", "verify", {"sample": args.sample}
    if c == "gc":
        return "POST", "gc", {"grace": args.grace, "no_repack": int(args.no_repack), "squash": int(args.squash)}
    if c == "trash":
        if args.action == "list":
            return "GET", "trash", {}
        if args.action == "restore":
            return "POST", "trash/restore", {"path": args.path or "", "to": args.to}
        return "POST", "trash/purge", {"all": int(args.all)}
    if c == "versions":
        if args.action == "list":
            return "GET", "versions", {"path": args.path}
        return "POST", "versions/restore", {"path": args.path, "n": args.n}
    if c == "sync":
        return "GET", "sync", {}
    if c == "backup":
        return "POST", "backup", {}
    if c == "rebuild":
        return "POST", "rebuild", {"into": str(Path(args.into).expanduser().resolve())}
    raise AssertionError(c)


def _direct(args: argparse.Namespace, gateway) -> dict:
    """The same operation as :func:`_call`, on the open gateway of this process."""
    from gateway import operations as ops

    c, tty = args.command, sys.stderr.isatty()
    if c == "stats":
        return ops.stats(gateway)
    if c == "fsck":
        return ops.fsck(gateway, repair=args.repair, verify=args.verify, tty=tty)
    if c == "verify":
        return ops.verify(gateway, sample=args.sample, tty=tty)
    if c == "gc":
        return ops.gc(gateway, grace_s=args.grace, repack=not args.no_repack, squash=args.squash, tty=tty)
    if c == "trash":
        if args.action == "list":
            return ops.trash_list(gateway)
        if args.action == "restore":
            return ops.trash_restore(gateway, args.path or "", args.to)
        return ops.trash_purge(gateway, everything=args.all)
    if c == "versions":
        from gateway import versions as fv

        if args.action == "list":
            return fv.versions_list(gateway, args.path)
        return fv.versions_restore(gateway, args.path, args.n)
    if c == "sync":
        return ops.sync_status(gateway)
    raise AssertionError(c)


def _maintain(args: argparse.Namespace, settings) -> int:
    """Run the command through the server's admin API when a server serves the data dir, else
    on the data dir in this process (the Hub backend's lock refuses a second process)."""
    from gateway.admin_client import ServerRefused, find_server
    from gateway.errors import AlreadyExists, NotFound
    from gateway.operations import OperationRefused

    server = find_server(settings)
    try:
        if server is not None:
            log.debug("a server serves %s at %s: asking it", settings.data_dir, server.url)
            result = server.call(*_call(args))
        elif args.command == "rebuild":
            result = _rebuild_into(settings, args.into)
        elif args.command == "backup":  # the database file alone: no gateway to open
            from gateway import operations as ops

            result = ops.backup_now(settings, tty=sys.stderr.isatty())
        else:
            result = _with_gateway(settings, args, lambda gw: _direct(args, gw))
    except ServerRefused as exc:
        return _fail(str(exc), 2 if exc.status < 500 else 1)  # 4xx: a mistake in the command
    except (OperationRefused, NotFound, AlreadyExists) as exc:
        return _fail(str(exc))
    return _show(args, result)


def _with_gateway(settings, args, work):
    from gateway.app import build_gateway

    # a report may look at a data dir whose database lost its contents; a repair may not (it
    # would register every stored object as unreferenced, and the collector would delete them)
    refuse_lost = not (args.command in ("fsck", "verify", "stats") and not getattr(args, "repair", False))
    gateway = build_gateway(settings, refuse_lost_metadata=refuse_lost)
    try:
        return work(gateway)
    finally:
        gateway.close()


def _rebuild_into(settings, into: str) -> dict:
    import dataclasses

    from gateway.rebuild import rebuild

    target = Path(into).expanduser().resolve()
    if (target / "meta.sqlite3").exists():
        from gateway.operations import OperationRefused

        raise OperationRefused(f"{target / 'meta.sqlite3'} exists; give an empty or new directory")
    new = dataclasses.replace(settings, data_dir=target, database_url=f"sqlite:///{target / 'meta.sqlite3'}")
    r = rebuild(new)
    return {"data_dir": str(target), "nodes": r.nodes, "files": r.files, "bytes": r.bytes}


def _rebuild_here(settings, force: bool) -> int:
    from gateway.admin_client import find_server
    from gateway.rebuild import rebuild

    server = find_server(settings)
    if server is not None:
        return _fail(f"a server serves {settings.data_dir} at {server.url}: rebuild into a new data dir "
                     "with --into DIR, or stop the server first")  # fmt: skip
    r = rebuild(settings, force=force)
    print(f"rebuilt from the dataset repo: {r.nodes} files and folders ({r.files} files, {human_size(r.bytes)})")
    return 0


# -- output --------------------------------------------------------------------------------


def _show(args: argparse.Namespace, result: dict) -> int:
    problems = result.get("unrepaired", 0)
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2, sort_keys=True))
        return 1 if problems else 0
    c = args.command
    if c == "stats":
        _show_stats(result)
    elif c in ("fsck", "verify"):
        _show_report(result)
    elif c == "gc":
        _show_gc(result)
    elif c == "trash":
        _show_trash(args.action, result)
    elif c == "versions":
        from gateway import versions as fv

        fv.show(args.action, result)
    elif c == "sync":
        for key, value in sorted(result.items()):
            print(f"{key}: {value}")
    elif c == "backup":
        print(f"backed up as {result['generation']}" if result["generation"] else "unchanged since the newest backup")
    elif c == "rebuild":
        print(f"rebuilt {result['data_dir']} from the dataset repo: {result['nodes']} files and folders "
              f"({result['files']} files, {human_size(result['bytes'])})")  # fmt: skip
    return 1 if problems else 0


def _show_stats(r: dict) -> None:
    print(f"data dir: {r['data_dir']} ({r['backend']}{': ' + r['repo'] if r.get('repo') else ''})")
    print(f"files and folders: {r['nodes']}")
    print(f"in files: {human_size(r['bytes_in_files'])} ({r['bytes_in_files']} bytes)")
    print(f"in stored objects: {human_size(r['bytes_in_objects'])} ({r['bytes_in_objects']} bytes)")
    if r.get("quota_bytes"):
        print(f"quota: {human_size(r['quota_bytes'])}")
    if r.get("trash_entries") is not None:
        print(f"in the trash: {r['trash_entries']}")
    if r.get("hub_requests"):
        print("Hub requests since the start: " + ", ".join(f"{k} {v}" for k, v in r["hub_requests"].items()))


def _show_report(r: dict) -> None:
    for f in r["findings"]:
        state = "repaired" if f["repaired"] else "NOT repaired"
        affected = f" affects: {', '.join(f['files'])}" if f["files"] else ""
        print(f"{f['kind']}: {f['subject']}: {f['detail']} ({state}){affected}")
    skipped = r.get("skipped_not_committed")
    print(
        f"{r['copy']}: checked {r['objects_checked']} objects, hashed {r['objects_hashed']} "
        f"({human_size(r['bytes_hashed'])}); {len(r['findings'])} findings, {r['unrepaired']} not repaired"
        + (f"; {skipped} not committed yet, skipped" if skipped else "")
    )


def _show_gc(r: dict) -> None:
    print(
        f"trash folders purged: {r['trash_purged']}; small objects packed: {r['packed']}; "
        f"packs rewritten: {r['repacked']}; unreferenced objects deleted: {r['objects_deleted']}"
    )
    if "committed" in r:
        print(
            f"repo objects unknown to the metadata, deleted: {r['repo_orphans_deleted']}; "
            f"everything committed: {'yes' if r['committed'] else 'no'}; "
            f"history squashed: {'yes' if r['squashed'] else 'no'}"
        )


def _show_trash(action: str, r: dict) -> None:
    if action == "list":
        if not r["entries"]:
            print("trash is empty")
        for e in r["entries"]:
            kind = "folder" if e["is_dir"] else "file"
            size = human_size(e["size"])
            print(f"{e['deleted_at']}  {kind:6} {size:>10}  {e['original_path']}  ->  {e['trash_path']}")
    elif action == "restore":
        print(f"restored to {r['restored_to']}")
    else:
        print(f"purged {r['purged']} trash folders")


def _announce_password(settings, generated: bool) -> None:
    if generated:
        print(
            f"hfdav: no SYS_TOKEN set; generated a password for user 'admin': {settings.admin_password}\n"
            f"hfdav: it is kept in {settings.data_dir / 'admin-password'} (shown only this once)",
            file=sys.stderr,
            flush=True,
        )


#: Seconds gunicorn lets in-flight requests finish after SIGTERM (``hfdav serve``).
GRACEFUL_TIMEOUT_S = 60


def gunicorn_command(settings, *, graceful_timeout: int = GRACEFUL_TIMEOUT_S,
                     fd: int | None = None) -> tuple[list[str], dict[str, str]]:  # fmt: skip
    """argv and environment that run the gateway under gunicorn (one worker of
    :class:`gateway.gunicorn_worker.ThreadWorker`, gthread with a head gate).

    Connection limits from the settings: idle keep-alive timeout, listen backlog, connections
    at once (beyond them gunicorn stops accepting; the kernel queues them), and request lines
    and header lines of at most 8190 bytes each (gunicorn's largest), 100 headers. ``fd``: a
    socket already listening (inherited; gunicorn then binds nothing itself).

    After SIGTERM the worker finishes in-flight requests, then its ``worker_exit`` hook closes
    the gateway (background uploads and commits drain); all of that within ``graceful_timeout``
    seconds.
    """
    env = dict(os.environ)
    env.update(
        HFDAV_DATA_DIR=str(settings.data_dir),
        HFDAV_DATABASE_URL=settings.database_url,
        HFDAV_CHUNK_SIZE=str(settings.chunk_size),
        HFDAV_PREFIX=settings.prefix,
        SYS_TOKEN=settings.admin_password or "",
        HFDAV_MODE=settings.mode,
    )
    argv = [
        sys.executable, "-m", "gunicorn",
        "--worker-class", "gateway.gunicorn_worker.ThreadWorker", "--workers", "1", "--threads", str(settings.threads),
        "--bind", f"fd://{fd}" if fd is not None else f"{settings.host}:{settings.port}", "--timeout", "3600",
        "--graceful-timeout", str(graceful_timeout),
        "--keep-alive", str(settings.idle_timeout), "--backlog", str(settings.listen_backlog),
        "--worker-connections", str(settings.max_connections),
        "--limit-request-line", "8190", "--limit-request-field_size", "8190", "--limit-request-fields", "100",
        "--no-control-socket", "--logger-class", "gateway.logs.GunicornLogger",
        "--config", "python:gateway.wsgi",  # its worker_exit hook drains uploads and commits
        "gateway.wsgi:create_app()",
    ]  # fmt: skip
    return argv, env


#: Open files kept for the database, the store and logs besides the connections.
RESERVED_FILES = 64


def _within_open_files(limits):
    """``limits`` with at most as many connections as this process may open files (the soft
    limit is raised to the hard one first, as far as needed)."""
    import dataclasses
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limits.max_connections + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning("HFDAV_MAX_CONNECTIONS=%d is above what the open-files limit (%d) allows: using %d",
                    limits.max_connections, soft, soft - RESERVED_FILES)  # fmt: skip
        limits = dataclasses.replace(limits, max_connections=max(1, soft - RESERVED_FILES))
    return limits


def _serve(settings, server: str) -> int:
    from gateway.app import build_gateway, ensure_admin_password
    from gateway.startup import bind_listener, check_data_dir, check_hub_access, log_summary, password_source

    check_data_dir(settings)  # before anything is written there (the password, the database)
    if server == "gunicorn":
        listener = bind_listener(settings.host, settings.port, settings.listen_backlog)
    else:
        bind_listener(settings.host, settings.port, 1).close()  # taken? say so before the drive opens
    if settings.hub_enabled:
        check_hub_access(settings)
    from_env = bool(settings.admin_password)
    settings, generated = ensure_admin_password(settings)
    _announce_password(settings, generated)
    password = password_source(settings, generated, from_env)
    if server == "gunicorn":
        host, port = listener.getsockname()[:2]
        log_summary(settings, share_url=_share_url(host, port, settings.prefix), password=password)
        argv, env = gunicorn_command(settings, fd=listener.fileno())
        print(f"hfdav serving {_share_url(host, port, settings.prefix)} (gunicorn)", file=sys.stderr, flush=True)
        os.execve(sys.executable, argv, env)

    from gateway.admin_api import remove_server_record, server_url, write_server_record
    from gateway.server_front import Limits, Server
    from gateway.startup import listen_line

    limits = _within_open_files(Limits.from_settings(settings))
    gateway = build_gateway(settings)
    httpd = Server((settings.host, settings.port), gateway.wsgi_app, limits=limits,
                   numthreads=settings.threads, server_name="hfdav")  # fmt: skip
    stop = threading.Event()

    def _stop(signum, _frame):
        log.info("signal %d: stopping", signum)
        stop.set()
        threading.Thread(target=httpd.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        httpd.prepare()
    except OSError as exc:  # taken since the check above
        gateway.close()
        raise ConfigError([listen_line(settings.host, settings.port, exc)]) from exc
    host, port = httpd.bind_addr[:2]
    log_summary(settings, share_url=_share_url(host, port, settings.prefix), password=password)
    print(f"hfdav serving {_share_url(host, port, settings.prefix)} (cheroot)", file=sys.stderr, flush=True)
    write_server_record(settings.data_dir, server_url(host, port))  # ``hfdav gc`` & co. call it there
    try:
        httpd.serve()
    finally:
        remove_server_record(settings.data_dir)
        gateway.close()
    return 0


def _share_url(host: str, port: int, prefix: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{prefix.rstrip('/')}/"


def _locks(settings, args) -> int:
    """Only the database is opened (no store, no data-dir lock): the server may be running."""
    from gateway.admin_api import lock_info, lock_root_for
    from gateway.meta.repo import MetadataRepository

    if args.action != "list" and not args.target:
        print(f"hfdav: locks {args.action} needs a {'token' if args.action == 'break' else 'path'}", file=sys.stderr)
        return 2
    repo = MetadataRepository.open(settings.database_url)
    try:
        if args.action == "list":
            now = time.time()
            for lock in repo.all_locks():
                i = lock_info(lock, now)
                print(f"{i['token']}  {i['path']}  depth={i['depth']} {i['scope']}  user={i['user'] or '-'}  "
                      f"expires in {i['expires_in']}s")  # fmt: skip
            return 0
        if args.action == "break":
            if not repo.delete_lock(args.target):
                print(f"hfdav: no lock {args.target}", file=sys.stderr)
                return 1
            print(f"broke {args.target}")
            return 0
        gone = repo.delete_locks_below(lock_root_for(args.target), recursive=args.all)
        for lock in gone:
            print(f"broke {lock.token}  {lock_info(lock, time.time())['path']}")
        print(f"{len(gone)} locks broken")
        return 0
    finally:
        repo.close()


def _backup_list(settings) -> int:
    from gateway.sync.backup import BackupError

    backup = _backup_target(settings)
    if backup is None:
        return 2
    try:
        for gen in backup.generations():
            print(f"{gen.seq:6d}  {gen.taken_at:%Y-%m-%d %H:%M:%S}Z  {gen.name}")
        return 0
    except BackupError as exc:
        print(f"hfdav: backup failed: {exc}", file=sys.stderr)
        return 1
    finally:
        backup.close()


def _backup_target(settings):
    from gateway.sync.backup import MetadataBackup

    backup = MetadataBackup.from_settings(settings)
    if backup is None:
        print("hfdav: nothing to do: WEBDAV_URL is not set, or the database is not SQLite", file=sys.stderr)
    return backup


def _restore(settings, force: bool) -> int:
    from gateway.admin_client import find_server
    from gateway.progress import Progress
    from gateway.sync.backup import BackupError

    if (server := find_server(settings)) is not None:
        return _fail(f"a server serves {settings.data_dir} at {server.url}: stop it before restoring its database")
    backup = _backup_target(settings)
    if backup is None:
        return 2
    try:
        if backup.db_path.exists() and not force:
            print(f"hfdav: {backup.db_path} exists; stop the server and pass --force to replace it", file=sys.stderr)
            return 1
        backup.folder.progress = lambda label, total: Progress(label, total)
        gen = backup.restore_latest()
        if gen is None:
            print("hfdav: the backup folder holds no generation", file=sys.stderr)
            return 1
        print(f"restored {gen.name}")
        return 0
    except BackupError as exc:
        print(f"hfdav: restore failed: {exc}", file=sys.stderr)
        return 1
    finally:
        backup.close()


if __name__ == "__main__":
    sys.exit(main())
