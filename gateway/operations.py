"""The maintenance operations, each on an open :class:`gateway.app.Gateway`, returning plain
JSON-able dicts. The admin API (:mod:`gateway.admin_api`) runs them inside the server; ``hfdav``
runs the same functions on the data dir when no server does (:mod:`gateway.cli`), and prints the
same dicts.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from gateway import metrics
from gateway.errors import HfdavError
from gateway.fsck import Fsck, FsckReport
from gateway.progress import Progress

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class OperationRefused(HfdavError):
    """The operation cannot run with this data dir or these arguments (a user mistake)."""


def refuse(message: str):
    raise OperationRefused(message)


def hub_sync(gateway):
    """The Hub backend's sync (uploader and committer) of ``gateway``, or None in local mode."""
    return next((t for t in gateway.background if hasattr(t, "committer")), None)


def stats(gateway) -> dict:
    repo = gateway.repo
    out = {
        "data_dir": str(gateway.settings.data_dir),
        "backend": "hub" if gateway.settings.hub_enabled else "local",
        "nodes": repo.count_nodes(),
        "bytes_in_files": repo.used_bytes(),
        "bytes_in_objects": repo.stored_bytes(),
        "trash_entries": len(gateway.files.trash.entries()) if gateway.files.trash is not None else None,
    }
    if gateway.settings.hub_enabled:
        out["repo"] = gateway.settings.hf_dataset_repo
        # this process's Hub requests by kind (the server's own when asked through the admin API)
        requests = metrics.by_label("hfdav_hub_requests_total", "kind")
        out["hub_requests"] = {k: int(v) for k, v in sorted(requests.items())}
    if gateway.settings.quota:
        out["quota_bytes"] = gateway.settings.quota
    return out


def report_dict(report: FsckReport, **extra) -> dict:
    return {
        "findings": [dataclasses.asdict(f) for f in report.findings],
        "objects_checked": report.objects_checked,
        "objects_hashed": report.objects_hashed,
        "bytes_hashed": getattr(report, "bytes_hashed", 0),
        "unrepaired": len(report.unrepaired()),
        **extra,
    }


def _object_counter(tty: bool):
    """A ``Fsck(progress=...)`` callback: the objects checked, as a bar or log lines."""
    bars: dict[str, Progress] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if phase != "checking objects" or not total:
            return
        bar = bars.get(phase) or bars.setdefault(phase, Progress(phase, total, tty=tty, unit="object"))
        bar.update(done - bar.done)
        if done >= total:
            bar.close()

    return progress


def fsck(gateway, *, repair: bool = False, verify: float = 0.0, tty: bool = False) -> dict:
    checker = Fsck(gateway.repo, gateway.store, object_hasher=gateway.files.object_hasher, bar=_bar(tty),
                   progress=_object_counter(tty))  # fmt: skip
    return report_dict(checker.run(repair=repair, verify=verify), copy="local")


def verify(gateway, *, sample: float = 1.0, tty: bool = False) -> dict:
    """Read back ``sample`` (0…1) of the objects from the copy that counts and hash them: with
    the Hub backend the dataset repo at the committed head (never the local cache; objects not
    committed yet are skipped and counted), else the local store."""
    sync = hub_sync(gateway)
    if sync is None:
        checker = Fsck(gateway.repo, gateway.store, object_hasher=gateway.files.object_hasher, bar=_bar(tty))
        return report_dict(checker.verify_only(sample), copy="local")
    from gateway.store.encrypted import EncryptedStore
    from gateway.store.hub import HubStore

    remote = HubStore(sync.client)
    remote.set_head(sync.committer.head or sync.client.head())
    view = EncryptedStore(remote, gateway.store.keyring) if isinstance(gateway.store, EncryptedStore) else remote
    checker = Fsck(gateway.repo, view, object_hasher=gateway.files.object_hasher, bar=_bar(tty))
    report = checker.verify_only(sample)
    copy = f"hub:{sync.client.repo_id}@{remote.head[:12]}"
    return report_dict(report, copy=copy, skipped_not_committed=checker.skipped)


def _bar(tty: bool):
    return lambda label, total: Progress(label, total, tty=tty)


def gc(gateway, *, grace_s: float | None = None, repack: bool = True, squash: bool = False, tty: bool = False) -> dict:
    from gateway.maintenance import collect

    kwargs = {} if grace_s is None else {"grace_s": grace_s}
    sync = hub_sync(gateway)
    if squash and sync is None:
        raise OperationRefused("--squash needs the Hub backend (HF_DATASET_REPO)")
    steps = 2 + (gateway.packer is not None) * (1 + repack) + (sync is not None)
    with Progress("gc", steps, tty=tty, unit="step") as bar:
        r = collect(gateway, repack=repack, step=bar.step, **kwargs)
        out = {"trash_purged": r.trash_purged, "packed": r.packed, "repacked": r.repacked,
               "objects_deleted": r.objects_deleted}  # fmt: skip
        if sync is not None:
            from gateway.sync.hubgc import hub_maintenance

            bar.step("repo orphans, pending commits" + (", history squash" if squash else ""))
            h = hub_maintenance(sync, squash=squash)
            out.update(repo_orphans_deleted=h.orphans_queued, committed=h.drained, squashed=h.squashed)
    return out


def _trash(gateway):
    if gateway.files.trash is None:
        raise OperationRefused("the trash is off (HFDAV_TRASH_DAYS=0)")
    return gateway.files.trash


def trash_list(gateway) -> dict:
    return {
        "entries": [
            {"trash_path": e.trash_path, "original_path": e.original_path, "is_dir": e.is_dir, "size": e.size,
             "deleted_at": time.strftime(TIME_FORMAT, time.gmtime(e.deleted_at))}  # fmt: skip
            for e in _trash(gateway).entries()
        ]
    }


def trash_restore(gateway, trash_path: str, to: str | None = None) -> dict:
    if not trash_path:
        raise OperationRefused("restore needs the trash path shown by 'hfdav trash list'")
    return {"restored_to": _trash(gateway).restore(trash_path, to=to)}


def trash_purge(gateway, *, everything: bool = False) -> dict:
    return {"purged": _trash(gateway).purge(older_than_days=0 if everything else None)}


def sync_status(gateway) -> dict:
    sync = hub_sync(gateway)
    if sync is None:
        return {"backend": "local"}
    return {"backend": "hub", "repo": sync.client.repo_id, **sync.status()}


def backup_now(settings, *, tty: bool = False) -> dict:
    from gateway.sync.backup import BackupError, MetadataBackup

    backup = MetadataBackup.from_settings(settings)
    if backup is None:
        raise OperationRefused("nothing to do: WEBDAV_URL is not set, or the database is not SQLite")
    backup.folder.progress = _bar(tty)
    try:
        gen = backup.backup_once()
    except BackupError as exc:
        raise HfdavError(f"backup failed: {exc}") from exc
    finally:
        backup.close()
    return {"generation": gen.name if gen else None, "unchanged": gen is None}


def rebuild_into(gateway, target: Path) -> dict:
    """A new data dir ``target`` whose database is rebuilt from the dataset repo at the committed
    head (read only: nothing is written to the repo, the running drive is untouched). Serve it
    only after this server stopped: one server per repo."""
    from gateway.app import ENCRYPTION_SETTING
    from gateway.meta.repo import MetadataRepository
    from gateway.sync.hubsync import copy_metadata
    from gateway.sync.mirror import Mirror, RepoFiles

    sync = hub_sync(gateway)
    if sync is None:
        raise OperationRefused("rebuild needs the Hub backend: set HF_DATASET_REPO and HF_TOKEN")
    target = Path(target).expanduser().resolve()
    if target == gateway.settings.data_dir:
        raise OperationRefused(f"{target} is the running drive's data dir; give a new one")
    db = target / "meta.sqlite3"
    if db.exists():
        raise OperationRefused(f"{db} exists; give an empty or new directory")
    (target / "hub").mkdir(parents=True, exist_ok=True)
    head = sync.committer.head or sync.client.head()
    files = RepoFiles.list(sync.client, head)
    mirror = Mirror(target / "hub" / "mirror.sqlite3", sync.client.repo_id)
    try:
        mirror.catch_up(sync.client, head, files, sync.codec)
        fresh = MetadataRepository.open(f"sqlite:///{db}", journal_enabled=True)
        try:
            nodes = copy_metadata(mirror.repo, fresh, journal_base=(mirror.seq, head))
            record = gateway.repo.get_setting(ENCRYPTION_SETTING)
            if record:
                fresh.set_setting(ENCRYPTION_SETTING, record)
            files_ = [n for n in fresh.walk("") if not n.is_dir]
        finally:
            fresh.close()
    finally:
        mirror.close()
    return {"data_dir": str(target), "head": head, "nodes": nodes, "files": len(files_),
            "bytes": sum(n.size for n in files_)}  # fmt: skip
