"""Operators' view of the store: per database, its backups, RPO, debris and the next prune's plan.

The data behind ``veza-ops backups info`` (like pgBackRest's ``info``). Nothing here
redefines "complete" or retention: the records come from :mod:`tasks.recovery.catalogue`,
the newest of each database has its manifest checked exactly as the prune does
(:func:`tasks.recovery.pruning.verify_newest`), and the plan is
:func:`tasks.recovery.retention.plan_retention`'s.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from errors import InvalidInputError
from errors.s3 import s3_errors
from tasks.recovery.catalogue import (
    BackupRecord,
    latest_complete,
    list_backups,
    newest_first,
)
from tasks.recovery.manifest import Manifest
from tasks.recovery.naming import check_database_name
from tasks.recovery.pruning import plan_with_legacy, verify_newest
from tasks.recovery.retention import Decision, RetentionPolicy, alarms, freezes


@dataclass(frozen=True)
class PendingUpload:
    """An S3 multipart upload started and neither completed nor aborted.

    Either a backup running now, or the debris of one killed before it could abort (its
    parts are billed until the bucket's lifecycle rule or an operator aborts it).
    """

    database: str
    key: str
    upload_id: str
    initiated: datetime


@dataclass(frozen=True)
class DatabaseInfo:
    """One database's backups as an operator needs to see them.

    Attributes:
        database: the database name (a key segment of the store).
        backups: every backup listed, complete or not.
        complete: how many are complete (by listing; the newest one's manifest checked).
        total_bytes: bytes of the data objects of the complete backups.
        incomplete_bytes: bytes of the data objects of the incomplete backups.
        oldest: the oldest complete backup (its manifest is not read).
        newest: the newest complete backup, its manifest read and checked.
        newest_finished_at: when ``newest`` finished (from its manifest).
        rpo: the age of ``newest`` now (``now - finished_at``, as the restore test
            measures it); None when there is no complete backup.
        rpo_objective: the objective the RPO is judged against.
        orphans: backups whose objects have no (sound) manifest: in flight, failed or
            half-deleted; each record says what it lacks.
        legacy: legacy archives (made by the deployment guide's script before veza-ops;
            date from the name, size, no checksum), newest first. They are not counted in
            ``backups``, ``complete`` or the sizes, and the prune keeps them unless told.
        uploads: multipart uploads in progress under this database's prefix.
        decisions: what the prune would decide now (newest first).
        frozen: why the prune would delete nothing of this database, if it would not.
        alarm: set when the prune would fail on this database (fulls stopped).
    """

    database: str
    backups: int
    complete: int
    total_bytes: int
    incomplete_bytes: int
    oldest: BackupRecord | None
    newest: BackupRecord | None
    newest_finished_at: datetime | None
    rpo: timedelta | None
    rpo_objective: timedelta
    orphans: list[BackupRecord] = field(default_factory=list)
    legacy: list[BackupRecord] = field(default_factory=list)
    uploads: list[PendingUpload] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    frozen: str | None = None
    alarm: str | None = None

    @property
    def rpo_met(self) -> bool:
        """True when there is a complete backup no older than the RPO objective."""
        return self.rpo is not None and self.rpo <= self.rpo_objective

    @property
    def to_delete(self) -> list[Decision]:
        """The decisions the next prune would delete."""
        return [d for d in self.decisions if not d.keep]


@dataclass(frozen=True)
class StoreInfo:
    """The whole answer: where, when, with which policy, and one entry per database."""

    bucket: str
    prefix: str
    now: datetime
    policy: RetentionPolicy
    databases: list[DatabaseInfo]


def _root(prefix: str, database: str | None = None) -> str:
    parts = [p.strip("/") for p in (prefix, database or "") if p.strip("/")]
    return "/".join(parts) + "/" if parts else ""


def list_pending_uploads(
    client: Any, bucket: str, prefix: str, *, database: str | None = None
) -> list[PendingUpload]:
    """List the multipart uploads in progress under the store's prefix (paginated).

    Uploads whose key is not ``{prefix}/{db}/...`` are ignored (not ours).

    Args:
        client: a boto3 S3 client.
        bucket: the bucket.
        prefix: the store's key prefix.
        database: one database, or None for all.

    Returns:
        The uploads, oldest first.

    Raises:
        AccessDeniedError: the credentials lack ``s3:ListBucketMultipartUploads``.
        ExternalSystemError: S3 refused otherwise or could not be reached.
    """
    root = _root(prefix)
    found: list[PendingUpload] = []
    with s3_errors(action="list multipart uploads", bucket=bucket):
        paginator = client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=bucket, Prefix=_root(prefix, database)):
            for upload in page.get("Uploads", []):
                key = str(upload["Key"])
                db, sep, _rest = key[len(root) :].partition("/")
                if key.startswith(root) and db and sep:
                    found.append(
                        PendingUpload(db, key, str(upload["UploadId"]), upload["Initiated"])
                    )
    return sorted(found, key=lambda u: (u.initiated, u.key))


def list_databases(client: Any, bucket: str, prefix: str) -> list[str]:
    """The databases that have a folder under the store's prefix (one delimiter listing).

    Args:
        client: a boto3 S3 client.
        bucket: the bucket.
        prefix: the store's key prefix.

    Returns:
        The names, sorted.
    """
    root = _root(prefix)
    names: set[str] = set()
    with s3_errors(action="list databases", bucket=bucket):
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=root, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                names.add(str(common["Prefix"])[len(root) :].strip("/"))
    return sorted(n for n in names if n)


def summarise_database(
    database: str,
    records: Sequence[BackupRecord],
    uploads: Sequence[PendingUpload],
    newest: Manifest | None,
    *,
    policy: RetentionPolicy,
    now: datetime,
    rpo_objective: timedelta = timedelta(hours=1),
) -> DatabaseInfo:
    """Summarise one database (pure: the listing, manifest and clock are passed in).

    Args:
        database: the database.
        records: its backups, as listed and with the newest's manifest checked
            (:func:`tasks.recovery.pruning.verify_newest`).
        uploads: its multipart uploads in progress.
        newest: the manifest of its newest complete backup
            (:func:`tasks.recovery.catalogue.latest_complete`), or None.
        policy: the retention policy the prune runs with.
        now: the current time (timezone-aware).
        rpo_objective: the RPO objective (guide: 1 h).

    Returns:
        The summary, with the prune's decisions for exactly these records.
    """
    decisions = plan_with_legacy(records, policy, now)
    legacy = newest_first(r for r in records if r.legacy)
    records = [r for r in records if not r.legacy]
    complete = [r for r in records if r.complete]
    orphans = newest_first(r for r in records if not r.complete)
    newest_record = (
        next((r for r in complete if r.backup_id == newest.backup_id), None) if newest else None
    )
    oldest = min(complete, key=lambda r: (r.started_at, r.backup_id)) if complete else None
    return DatabaseInfo(
        database=database,
        backups=len(records),
        complete=len(complete),
        total_bytes=sum(r.data_size or 0 for r in complete),
        incomplete_bytes=sum(r.data_size or 0 for r in orphans),
        oldest=oldest,
        newest=newest_record,
        newest_finished_at=newest.finished_at if newest else None,
        rpo=(now - newest.finished_at) if newest else None,
        rpo_objective=rpo_objective,
        orphans=orphans,
        legacy=legacy,
        uploads=list(uploads),
        decisions=decisions,
        frozen=freezes(decisions).get(database),
        alarm=alarms(decisions).get(database),
    )


def store_info(
    client: Any,
    bucket: str,
    prefix: str,
    *,
    database: str | None = None,
    policy: RetentionPolicy | None = None,
    now: datetime | None = None,
    rpo_objective: timedelta = timedelta(hours=1),
) -> StoreInfo:
    """Read the store and summarise every database (or one) for an operator.

    Reads: one listing of the keys, one of the multipart uploads, and the manifest of each
    database's newest backup (the one the prune checks) and of its newest complete one.
    Nothing is written.

    Args:
        client: a boto3 S3 client.
        bucket: the bucket.
        prefix: the store's key prefix.
        database: one database, or None for every database found.
        policy: the retention policy of the prune (default: the guide's numbers, which the
            ``prune-backups/daily`` deployment uses).
        now: the current time (timezone-aware; default: now).
        rpo_objective: the RPO objective (guide: 1 h).

    Returns:
        The summary, databases sorted by name.

    Raises:
        InvalidInputError: ``database`` is not a plain name, or has nothing in the store
            (the error lists the databases that do).
        ExternalSystemError: S3 refused or could not be reached.
    """
    if database is not None:
        check_database_name(database)
    policy = policy or RetentionPolicy()
    now = (now or datetime.now(UTC)).astimezone(UTC)
    records = verify_newest(
        client, bucket, list_backups(client, bucket, prefix, database=database)
    )
    uploads = list_pending_uploads(client, bucket, prefix, database=database)
    by_db: dict[str, list[BackupRecord]] = defaultdict(list)
    for record in records:
        by_db[record.database].append(record)
    uploads_by_db: dict[str, list[PendingUpload]] = defaultdict(list)
    for upload in uploads:
        uploads_by_db[upload.database].append(upload)
    names = sorted(set(by_db) | set(uploads_by_db))
    if database is not None and database not in names:
        known = list_databases(client, bucket, prefix)
        where = f"s3://{bucket}/{_root(prefix)}"
        raise InvalidInputError(
            "database",
            f"no backup of {database!r} under {where} (databases there: "
            f"{', '.join(known) or 'none'})",
            fix="name one of those databases, or check the store block's bucket and prefix",
        )
    summaries = [
        summarise_database(
            name,
            by_db[name],
            uploads_by_db[name],
            latest_complete(client, bucket, by_db[name]),
            policy=policy,
            now=now,
            rpo_objective=rpo_objective,
        )
        for name in names
    ]
    return StoreInfo(bucket=bucket, prefix=prefix, now=now, policy=policy, databases=summaries)


def _time(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def _record(record: BackupRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "backup_id": record.backup_id,
        "kind": record.kind,
        "started_at": _time(record.started_at),
        "size_bytes": record.data_size,
    }


def _decision(decision: Decision) -> dict[str, Any]:
    return {
        "backup_id": decision.record.backup_id,
        "kind": decision.record.kind,
        "complete": decision.record.complete,
        "action": "keep" if decision.keep else "delete",
        "reasons": list(decision.reasons),
    }


def database_dict(info: DatabaseInfo) -> dict[str, Any]:
    """One database's summary as JSON-ready data (times in ISO 8601 UTC, ages in seconds).

    Args:
        info: the summary.

    Returns:
        A dict of plain values.
    """
    return {
        "database": info.database,
        "backups": info.backups,
        "complete": info.complete,
        "total_bytes": info.total_bytes,
        "incomplete_bytes": info.incomplete_bytes,
        "oldest_complete": _record(info.oldest),
        "newest_complete": _record(info.newest),
        "newest_finished_at": _time(info.newest_finished_at),
        "rpo_seconds": info.rpo.total_seconds() if info.rpo is not None else None,
        "rpo_objective_seconds": info.rpo_objective.total_seconds(),
        "rpo_met": info.rpo_met,
        "without_manifest": [
            {"backup_id": r.backup_id, "missing": r.missing, "keys": list(r.keys),
             "size_bytes": r.data_size}
            for r in info.orphans
        ],
        "legacy": [
            {"backup_id": r.backup_id, "key": r.data_key, "started_at": _time(r.started_at),
             "size_bytes": r.data_size, "checksum": None}
            for r in info.legacy
        ],
        "incomplete_uploads": [
            {"key": u.key, "upload_id": u.upload_id, "initiated": _time(u.initiated)}
            for u in info.uploads
        ],
        "prune": {
            "keep": sum(d.keep for d in info.decisions),
            "delete": len(info.to_delete),
            "frozen": info.frozen,
            "alarm": info.alarm,
            "decisions": [_decision(d) for d in info.decisions],
        },
    }


def store_dict(info: StoreInfo) -> dict[str, Any]:
    """The whole summary as JSON-ready data (what ``veza-ops backups info --json`` prints).

    Args:
        info: the summary.

    Returns:
        ``{"bucket", "prefix", "now", "policy", "databases": [...]}``.
    """
    policy = {
        name: getattr(info.policy, name)
        for name in ("daily", "weekly", "monthly", "hourly_hours", "incomplete_grace_hours",
                     "delete_incomplete", "max_full_age_h")
    }
    return {
        "bucket": info.bucket,
        "prefix": info.prefix,
        "now": _time(info.now),
        "policy": policy,
        "databases": [database_dict(d) for d in info.databases],
    }

