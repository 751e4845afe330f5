"""Prune steps: check newest manifests, publish the catalogue, delete backups, clean the spool."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from errors import AccessDeniedError, InvalidInputError, PermanentSystemError
from errors.s3 import s3_errors
from tasks.recovery.catalogue import (
    BackupRecord,
    BackupStore,
    check_manifest,
    list_backups,
    newest_first,
)
from tasks.recovery.retention import Decision, RetentionPolicy, plan_retention

_DELETE_BATCH = 1000  # S3 DeleteObjects accepts at most 1000 keys per request


def verify_newest(client: Any, bucket: str, records: Sequence[BackupRecord]) -> list[BackupRecord]:
    """Check the manifest of the newest backup of each database against its data object.

    The newest backup is the one retention never deletes; a faulty manifest there (not valid,
    another backup's, or a size that is not the data object's) makes the record incomplete,
    so retention freezes that database instead of trusting it. Older manifests are not read
    (a catalogue may hold thousands of backups).

    Args:
        client: a boto3 S3 client.
        bucket: the bucket.
        records: the catalogue.

    Returns:
        The same records, the newest of each database marked when its manifest is faulty.
    """
    newest: dict[str, BackupRecord] = {}
    for record in newest_first(r for r in records if not r.legacy):  # legacy: no manifest
        newest.setdefault(record.database, record)
    checked: dict[str, BackupRecord] = {}
    for record in newest.values():
        if record.complete:
            checked[record.label] = check_manifest(client, bucket, record)[0]
    return [checked.get(r.label, r) for r in records]


LEGACY_KEPT = "legacy archive (made before veza-ops): kept, prune_legacy is off"


def split_legacy(
    records: Sequence[BackupRecord], *, prune_legacy: bool
) -> tuple[list[BackupRecord], list[Decision]]:
    """Take legacy archives out of retention unless ``prune_legacy``.

    Legacy archives (the deployment guide's ``pg_dump -Fc | gpg`` files) may be all that is
    left of some months: the prune keeps every one unless told. With ``prune_legacy`` they
    take part in the retention like any complete backup that is not a veza-ops full: kept
    as the newest backup of a kept day, week or month that has no full, deleted otherwise.

    Args:
        records: the catalogue.
        prune_legacy: let retention decide about legacy archives too.

    Returns:
        (the records retention plans, a keep decision for each legacy archive left out).
    """
    if prune_legacy:
        return list(records), []
    kept = [Decision(r, keep=True, reasons=[LEGACY_KEPT])
            for r in newest_first(r for r in records if r.legacy)]
    return [r for r in records if not r.legacy], kept


def plan_with_legacy(
    records: Sequence[BackupRecord], policy: RetentionPolicy, now: datetime, *,
    prune_legacy: bool = False,
) -> list[Decision]:
    """:func:`~tasks.recovery.retention.plan_retention` with legacy archives kept unless told.

    Args:
        records: the catalogue.
        policy: the retention policy.
        now: the current time (timezone-aware).
        prune_legacy: see :func:`split_legacy`.

    Returns:
        One decision per record: the planned ones, then the legacy archives kept.
    """
    planned, kept = split_legacy(records, prune_legacy=prune_legacy)
    return (plan_retention(planned, policy, now) if planned else []) + kept


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"  # pragma: no cover - loop always returns


def catalogue_markdown(records: Iterable[BackupRecord], *, title: str = "Backup catalogue") -> str:
    """Render the catalogue as a markdown table.

    Args:
        records: the catalogue.
        title: heading of the document.

    Returns:
        Markdown text: one row per backup (database, id, kind, started, size, complete).
    """
    rows = [
        {
            "database": r.database,
            "backup": r.backup_id,
            "kind": r.kind,
            "started (UTC)": f"{r.started_at:%Y-%m-%d %H:%M}",
            "size": _size(r.data_size),
            "complete": "yes" if r.complete else f"no ({r.missing})",
        }
        for r in records
    ]
    if not rows:
        return f"# {title}\n\nNo backups found.\n"
    headers = list(rows[0])
    lines = [f"# {title}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row[h] for h in headers) + " |" for row in rows]
    return "\n".join(lines) + "\n"


@task(name="list-backups", cache_policy=NO_CACHE)
def list_backups_task(store: BackupStore, *, database: str | None = None) -> list[BackupRecord]:
    """Prefect task: list the backups of a store block (see :func:`list_backups`).

    Args:
        store: the S3 backup store block.
        database: one database, or None for all.

    Returns:
        The backups.
    """
    records = list_backups(store.get_client(), store.bucket, store.prefix, database=database)
    get_run_logger().info(
        "found %d backups (%d complete) in bucket %s",
        len(records),
        sum(r.complete for r in records),
        store.bucket,
    )
    return records


@task(name="verify-newest-backups", cache_policy=NO_CACHE)
def verify_newest_task(store: BackupStore, records: list[BackupRecord]) -> list[BackupRecord]:
    """Prefect task: see :func:`verify_newest`; logs each faulty manifest found.

    Args:
        store: the S3 backup store block.
        records: the catalogue.

    Returns:
        The catalogue with faulty newest manifests marked.
    """
    checked = verify_newest(store.get_client(), store.bucket, records)
    for record in checked:
        if record.manifest_problem:
            get_run_logger().warning("newest backup %s: %s", record.label, record.manifest_problem)
    return checked


@task(name="publish-catalogue", cache_policy=NO_CACHE)
def publish_catalogue_task(records: Sequence[BackupRecord], *, key: str) -> None:
    """Prefect task: publish the catalogue as a markdown artifact.

    Args:
        records: the catalogue.
        key: artifact key (see :func:`artifact_key`).
    """
    create_markdown_artifact(
        markdown=catalogue_markdown(records),
        key=key,
        description=f"{len(records)} backups, {sum(r.complete for r in records)} complete",
    )


def _delete_keys(client: Any, bucket: str, keys: Sequence[str], *, backup: str) -> None:
    for start in range(0, len(keys), _DELETE_BATCH):
        batch = keys[start : start + _DELETE_BATCH]
        with s3_errors(action=f"delete backup {backup}", bucket=bucket):
            response = client.delete_objects(
                Bucket=bucket,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            code = str(first.get("Code", ""))
            message = (
                f"could not delete {len(errors)} object(s) of backup {backup}: "
                f"{first.get('Key')} ({code})"
            )
            if code == "AccessDenied":
                raise AccessDeniedError(
                    "S3", message, hint="grant s3:DeleteObject on the store's prefix"
                )
            raise PermanentSystemError("S3", message, hint="run the prune again")


def delete_backup(client: Any, bucket: str, record: BackupRecord) -> list[str]:
    """Delete a whole backup: its manifest FIRST, then its data and any other object of it.

    Deleting the manifest first means an interrupted delete leaves an incomplete backup,
    never a manifest pointing at nothing.

    Args:
        client: a boto3 S3 client.
        bucket: the bucket.
        record: the backup.

    Returns:
        The keys deleted.

    Raises:
        ExternalSystemError: when S3 refuses a delete (DeleteObjects errors are checked).
    """
    label = f"{record.database}/{record.backup_id}"
    keys = list(record.keys) or [k for k in (record.manifest_key, record.data_key) if k]
    if record.manifest_key is not None:
        _delete_keys(client, bucket, [record.manifest_key], backup=label)
    rest = [k for k in keys if k != record.manifest_key]
    if rest:
        _delete_keys(client, bucket, rest, backup=label)
    return keys


@task(name="delete-backups", cache_policy=NO_CACHE)
def delete_backups_task(store: BackupStore, records: Sequence[BackupRecord]) -> list[str]:
    """Prefect task: delete whole backups, manifest first (see :func:`delete_backup`).

    Args:
        store: the S3 backup store block.
        records: the backups to delete.

    Returns:
        The labels ``database/backup_id`` deleted.
    """
    logger = get_run_logger()
    client = store.get_client()
    done: list[str] = []
    for record in records:
        delete_backup(client, store.bucket, record)
        logger.info("deleted backup %s of %s", record.backup_id, record.database)
        done.append(record.label)
    return done


# --- local spool: stray files older than N days in a configured directory -----------


@dataclass(frozen=True)
class SpoolCleanup:
    """Files found too old in the spool, and which of them were removed."""

    directory: str
    stale: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def check_spool(directory: str, *, max_age_days: int) -> Path:
    """Validate the spool parameters before anything is touched.

    Args:
        directory: the spool directory (absolute).
        max_age_days: files older than this many days are stray.

    Returns:
        The spool as a resolved path.

    Raises:
        InvalidInputError: naming ``local_spool`` or ``spool_max_age_days`` and the fix.
    """
    if max_age_days < 0:
        raise InvalidInputError(
            "spool_max_age_days", f"must not be negative, got {max_age_days}", fix="pass 0 or more"
        )
    path = Path(directory)
    if not path.is_absolute():
        raise InvalidInputError(
            "local_spool",
            f"{directory!r} is not an absolute path",
            fix="pass an absolute directory",
        )
    if not path.is_dir():
        raise InvalidInputError(
            "local_spool",
            f"{directory!r} is not a directory",
            fix="create it, or leave local_spool empty to skip the spool cleanup",
        )
    resolved = path.resolve()
    if resolved == Path(resolved.anchor):
        raise InvalidInputError(
            "local_spool", "is the file system root", fix="pass the backup spool directory itself"
        )
    return resolved


def stale_files(directory: Path, *, max_age_days: int, now: datetime) -> list[Path]:
    """Regular files under ``directory`` (recursively) last modified more than N days ago.

    Symbolic links are neither followed nor listed.

    Args:
        directory: the spool.
        max_age_days: the age limit in days.
        now: the current time (timezone-aware).

    Returns:
        The stale files, sorted.
    """
    cutoff = (now - timedelta(days=max_age_days)).timestamp()
    found: list[Path] = []
    for root, _dirs, files in os.walk(directory, followlinks=False):
        for name in files:
            path = Path(root) / name
            info = path.lstat()
            if path.is_symlink() or not path.is_file():
                continue
            if info.st_mtime < cutoff:
                found.append(path)
    return sorted(found)


def clean_spool(directory: str, *, max_age_days: int, now: datetime, dry_run: bool) -> SpoolCleanup:
    """Remove (or, in a dry run, only list) stray spool files older than N days.

    Args:
        directory: the spool directory.
        max_age_days: the age limit in days.
        now: the current time (timezone-aware).
        dry_run: list only.

    Returns:
        What was found and removed.

    Raises:
        InvalidInputError: on a bad directory or age.
        PermanentSystemError: when a file cannot be removed.
    """
    spool = check_spool(directory, max_age_days=max_age_days)
    stale = stale_files(spool, max_age_days=max_age_days, now=now)
    removed: list[str] = []
    if not dry_run:
        for path in stale:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise PermanentSystemError(
                    "spool", f"cannot remove {path}: {exc.strerror}", hint="fix its permissions"
                ) from None
            removed.append(str(path))
    return SpoolCleanup(directory=str(spool), stale=[str(p) for p in stale], removed=removed)


@task(name="clean-local-spool", cache_policy=NO_CACHE)
def clean_spool_task(
    directory: str, *, max_age_days: int, now: datetime, dry_run: bool
) -> SpoolCleanup:
    """Prefect task: see :func:`clean_spool`.

    Args:
        directory: the spool directory.
        max_age_days: the age limit in days.
        now: the current time.
        dry_run: list only.

    Returns:
        What was found and removed.
    """
    result = clean_spool(directory, max_age_days=max_age_days, now=now, dry_run=dry_run)
    get_run_logger().info(
        "spool %s: %d stale file(s), %d removed",
        result.directory,
        len(result.stale),
        len(result.removed),
    )
    return result
