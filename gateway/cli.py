"""The ``hfdav`` command: ``serve`` and the maintenance commands. Thin: parses, then calls down."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

from gateway import __version__
from gateway.config import ConfigError, load_settings, parse_size
from gateway.errors import HfdavError

log = logging.getLogger("hfdav")


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


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

    check = sub.add_parser("check-config", help="validate the settings and exit")
    check.add_argument("--data-dir")

    gc = sub.add_parser("gc", help="purge old trash, pack small files, repack, delete unreferenced objects")
    gc.add_argument("--data-dir")
    gc.add_argument("--grace", type=float, default=None, help="seconds an orphan is kept (default 6 h)")
    gc.add_argument(
        "--squash", action="store_true", help="Hub backend: also squash the repo history (frees deleted files' quota)"
    )

    rebuild = sub.add_parser("rebuild", help="rebuild the metadata database from the dataset repo alone")
    rebuild.add_argument("--data-dir")
    rebuild.add_argument("--force", action="store_true", help="replace an existing database (stop the server first)")
    gc.add_argument("--no-repack", action="store_true", help="do not rewrite sparse packs")

    fsck = sub.add_parser("fsck", help="check the metadata against itself and the store")
    fsck.add_argument("--data-dir")
    fsck.add_argument("--repair", action="store_true", help="repair what can be repaired")
    fsck.add_argument("--verify", type=float, default=0.0, metavar="SHARE",
                      help="read and hash this share of the objects (0…1; 1 = all)")  # fmt: skip
    verify = sub.add_parser("verify", help="fsck --verify 1: read and hash every object")
    verify.add_argument("--data-dir")
    verify.add_argument("--sample", type=float, default=1.0, help="share of objects to read (default 1)")

    trash = sub.add_parser("trash", help="list, restore or purge deleted files")
    trash.add_argument("--data-dir")
    trash.add_argument("action", choices=("list", "restore", "purge"))
    trash.add_argument("path", nargs="?", help="restore: the trash path shown by 'list'")
    trash.add_argument("--to", help="restore: another destination")
    trash.add_argument("--all", action="store_true", help="purge: everything, whatever its age")

    locks = sub.add_parser("locks", help="list or break WebDAV locks (works while the server runs)")
    locks.add_argument("--data-dir")
    locks.add_argument("--database-url", help="SQLAlchemy URL (HFDAV_DATABASE_URL)")
    locks.add_argument("action", choices=("list", "break", "break-path"))
    locks.add_argument("target", nargs="?", help="break: the lock token; break-path: the locked path")
    locks.add_argument("--all", action="store_true", help="break-path: also every lock below the path")

    stats = sub.add_parser("stats", help="print counts and sizes")
    stats.add_argument("--data-dir")

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
    return {k: getattr(args, k, None) for k in keys}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(overrides=_overrides(args))
    except ConfigError as exc:
        print(f"hfdav: {exc}", file=sys.stderr)
        return 2

    from gateway.logs import setup_logging

    setup_logging(settings.log_level)
    try:
        return _dispatch(args, settings)
    except ConfigError as exc:  # found once storage is open: wrong key, foreign repo, ...
        print(f"hfdav: {exc}", file=sys.stderr)
        return 2
    except HfdavError as exc:  # e.g. another process holds the data dir
        print(f"hfdav: {exc}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace, settings) -> int:
    if args.command == "check-config":
        print(f"settings OK: data dir {settings.data_dir}, prefix {settings.prefix}")
        return 0
    if args.command == "serve":
        return _serve(settings, args.server)
    if args.command == "gc":
        return _gc(settings, args.grace, not args.no_repack, args.squash)
    if args.command in ("fsck", "verify"):
        share = args.sample if args.command == "verify" else args.verify
        return _fsck(settings, getattr(args, "repair", False), share)
    if args.command == "trash":
        return _trash(settings, args)
    if args.command == "stats":
        return _stats(settings)
    if args.command == "locks":
        return _locks(settings, args)
    if args.command == "rebuild":
        return _rebuild(settings, args.force)
    if args.command == "backup":
        return _backup(settings, args.list)
    if args.command == "restore":
        return _restore(settings, args.force)
    return 2


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


def gunicorn_command(settings, *, graceful_timeout: int = GRACEFUL_TIMEOUT_S) -> tuple[list[str], dict[str, str]]:
    """argv and environment that run the gateway under gunicorn (gthread, one worker).

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
    )
    argv = [
        sys.executable, "-m", "gunicorn",
        "--worker-class", "gthread", "--workers", "1", "--threads", str(settings.threads),
        "--bind", f"{settings.host}:{settings.port}", "--timeout", "3600",
        "--graceful-timeout", str(graceful_timeout),
        "--no-control-socket",
        "--config", "python:gateway.wsgi",  # its worker_exit hook drains uploads and commits
        "gateway.wsgi:create_app()",
    ]  # fmt: skip
    return argv, env


def _serve(settings, server: str) -> int:
    from gateway.app import build_gateway, ensure_admin_password

    settings, generated = ensure_admin_password(settings)
    _announce_password(settings, generated)
    url = f"http://{settings.host}:{settings.port}{settings.prefix.rstrip('/')}/"
    if server == "gunicorn":
        argv, env = gunicorn_command(settings)
        print(f"hfdav serving {url} (gunicorn)", file=sys.stderr, flush=True)
        os.execve(sys.executable, argv, env)

    from cheroot import wsgi

    from gateway import cheroot_request, server_io

    gateway = build_gateway(settings)
    httpd = wsgi.Server(
        (settings.host, settings.port),
        gateway.wsgi_app,
        numthreads=settings.threads,
        server_name="hfdav",
        timeout=300,
    )
    httpd.ConnectionClass = cheroot_request.with_request_fixes(server_io.Connection)
    stop = threading.Event()

    def _stop(signum, _frame):
        log.info("signal %d: stopping", signum)
        stop.set()
        threading.Thread(target=httpd.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    httpd.prepare()
    host, port = httpd.bind_addr[:2]
    print(f"hfdav serving http://{host}:{port}{settings.prefix.rstrip('/')}/ (cheroot)", file=sys.stderr, flush=True)
    try:
        httpd.serve()
    finally:
        gateway.close()
    return 0


def _gc(settings, grace, repack: bool, squash: bool = False) -> int:
    from gateway.app import build_gateway
    from gateway.maintenance import collect

    gateway = build_gateway(settings)
    try:
        kwargs = {} if grace is None else {"grace_s": grace}
        r = collect(gateway, repack=repack, **kwargs)
        print(
            f"trash folders purged: {r.trash_purged}; small objects packed: {r.packed}; "
            f"packs rewritten: {r.repacked}; unreferenced objects deleted: {r.objects_deleted}"
        )
        _hub_gc(gateway, squash)
    finally:
        gateway.close()
    return 0


def _progress(phase: str, done: int, total: int) -> None:
    if sys.stderr.isatty():
        end = "\n" if total and done >= total else "\r"
        print(f"  {phase}: {done}/{total or '?'}", end=end, file=sys.stderr, flush=True)


def _fsck(settings, repair: bool, share: float) -> int:
    from gateway.app import build_gateway
    from gateway.maintenance import fsck

    gateway = build_gateway(settings)
    try:
        report = fsck(gateway, repair=repair, verify=share, progress=_progress)
    finally:
        gateway.close()
    for f in report.findings:
        state = "repaired" if f.repaired else "NOT repaired"
        affected = f" affects: {', '.join(f.files)}" if f.files else ""
        print(f"{f.kind}: {f.subject}: {f.detail} ({state}){affected}")
    print(
        f"checked {report.objects_checked} objects, hashed {report.objects_hashed}; "
        f"{len(report.findings)} findings, {len(report.unrepaired())} not repaired"
    )
    return 1 if report.unrepaired() else 0


def _trash(settings, args) -> int:
    from gateway.app import build_gateway
    from gateway.errors import HfdavError

    gateway = build_gateway(settings)
    trash = gateway.files.trash
    try:
        if trash is None:
            print("the trash is off (HFDAV_TRASH_DAYS=0)", file=sys.stderr)
            return 2
        if args.action == "list":
            for e in trash.entries():
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.deleted_at))
                kind = "folder" if e.is_dir else "file"
                print(f"{when}Z  {kind:6} {e.size:>14}  {e.original_path}  ->  {e.trash_path}")
        elif args.action == "restore":
            if not args.path:
                print("restore needs the trash path shown by 'hfdav trash list'", file=sys.stderr)
                return 2
            print(f"restored to {trash.restore(args.path, to=args.to)}")
        else:
            n = trash.purge(older_than_days=0 if args.all else None)
            print(f"purged {n} trash folders")
    except HfdavError as exc:
        print(f"hfdav: {exc}", file=sys.stderr)
        return 1
    finally:
        gateway.close()
    return 0


def _hub_gc(gateway, squash: bool) -> None:
    """The Hub backend's part of ``hfdav gc``: repo orphans, pending commits, history squash."""
    from gateway.sync.hubgc import hub_maintenance

    sync = next((t for t in gateway.background if hasattr(t, "committer")), None)
    if sync is None:
        if squash:
            print("hfdav: --squash needs the Hub backend (HF_DATASET_REPO)", file=sys.stderr)
        return
    r = hub_maintenance(sync, squash=squash)
    print(
        f"repo objects unknown to the metadata, deleted: {r.orphans_queued}; "
        f"everything committed: {'yes' if r.drained else 'no'}; history squashed: {'yes' if r.squashed else 'no'}"
    )


def _rebuild(settings, force: bool) -> int:
    from gateway.errors import HfdavError
    from gateway.rebuild import rebuild

    try:
        r = rebuild(settings, force=force)
    except HfdavError as exc:
        print(f"hfdav: {exc}", file=sys.stderr)
        return 1
    print(f"rebuilt from the dataset repo: {r.nodes} files and folders ({r.files} files, {r.bytes} bytes)")
    return 0


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


def _stats(settings) -> int:
    from gateway.app import build_gateway

    gateway = build_gateway(settings)
    try:
        repo = gateway.repo
        print(f"nodes: {repo.count_nodes()}")
        print(f"bytes in files: {repo.used_bytes()}")
        print(f"bytes in objects: {repo.stored_bytes()}")
    finally:
        gateway.close()
    return 0


def _backup_target(settings):
    from gateway.sync.backup import MetadataBackup

    backup = MetadataBackup.from_settings(settings)
    if backup is None:
        print("hfdav: nothing to do: WEBDAV_URL is not set, or the database is not SQLite", file=sys.stderr)
    return backup


def _backup(settings, list_only: bool) -> int:
    from gateway.sync.backup import BackupError

    backup = _backup_target(settings)
    if backup is None:
        return 2
    try:
        if list_only:
            for gen in backup.generations():
                print(f"{gen.seq:6d}  {gen.taken_at:%Y-%m-%d %H:%M:%S}Z  {gen.name}")
            return 0
        gen = backup.backup_once()
        print(f"backed up as {gen.name}" if gen else "unchanged since the newest backup")
        return 0
    except BackupError as exc:
        print(f"hfdav: backup failed: {exc}", file=sys.stderr)
        return 1
    finally:
        backup.close()


def _restore(settings, force: bool) -> int:
    from gateway.sync.backup import BackupError

    backup = _backup_target(settings)
    if backup is None:
        return 2
    try:
        if backup.db_path.exists() and not force:
            print(f"hfdav: {backup.db_path} exists; stop the server and pass --force to replace it", file=sys.stderr)
            return 1
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
