"""The one model of backups in the store: records, listing, "complete", manifests, selection."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from errors import IntegrityError, InvalidInputError, NotFoundError
from errors.s3 import s3_errors
from tasks.logs import ModuleLogger
from tasks.recovery.manifest import (
    DATA_NAME,
    MANIFEST_NAME,
    BackupKind,
    Manifest,
    backup_prefix,
    parse_backup_id,
)
from tasks.recovery.naming import (
    artifact_key as artifact_key,  # noqa: PLC0414 (re-exported for its callers)
)
from tasks.recovery.naming import (
    check_database_name,
)

logger = ModuleLogger(__name__)  # run logger inside a run: lines reach the UI


class BackupStore(Protocol):
    """What the catalogue needs from a store block (``blocks.s3.S3BackupStore`` fits)."""

    bucket: str
    prefix: str

    def get_client(self) -> Any:
        """Return a boto3 S3 client."""


@dataclass(frozen=True)
class BackupRecord:
    """One backup found in the store: its objects and whether it is complete.

    A backup is complete when its data object exists AND its manifest exists and is sound
    (valid, about this backup, naming this data object with its size; see
    :func:`manifest_problem`). The manifest is uploaded last, so a backup without one is in
    flight, failed, or half-deleted. Listing only sees which keys exist; a manifest found
    faulty later is recorded in ``manifest_problem`` (see :func:`check_manifest`).
    """

    database: str
    backup_id: str
    kind: BackupKind
    started_at: datetime
    data_key: str | None
    data_size: int | None
    manifest_key: str | None
    keys: tuple[str, ...] = field(default=())
    manifest_problem: str | None = None

    @property
    def complete(self) -> bool:
        """True when the data object and a manifest (not found faulty) are both present."""
        return (
            self.data_key is not None
            and self.manifest_key is not None
            and self.manifest_problem is None
        )

    @property
    def missing(self) -> str:
        """What an incomplete backup lacks, in words ("" when complete)."""
        lacks = [
            what
            for what, key in (("no manifest", self.manifest_key), ("no data", self.data_key))
            if key is None
        ]
        if self.manifest_problem:
            lacks.append(self.manifest_problem)
        return ", ".join(lacks)

    @property
    def label(self) -> str:
        """``database/backup_id``."""
        return f"{self.database}/{self.backup_id}"


def newest_first(records: Iterable[BackupRecord]) -> list[BackupRecord]:
    """The records sorted newest first (start time, then id)."""
    return sorted(records, key=lambda r: (r.started_at, r.backup_id), reverse=True)


def _root(prefix: str, database: str | None = None) -> str:
    parts = [p.strip("/") for p in (prefix, database or "") if p.strip("/")]
    return "/".join(parts) + "/" if parts else ""


def _check_database(database: str | None) -> None:
    if database is not None:
        check_database_name(database)


def check_bucket(client: Any, bucket: str) -> None:
    """Fail early (before any change) when the bucket is missing or forbidden.

    Args:
        client: boto3 S3 client.
        bucket: the bucket.

    Raises:
        NotFoundError: the bucket does not exist.
        AccessDeniedError: the credentials may not use it.
    """
    with s3_errors(action="check bucket", bucket=bucket):
        client.head_bucket(Bucket=bucket)
        client.list_objects_v2(Bucket=bucket, MaxKeys=1)


def _list_keys(client: Any, bucket: str, root: str, page_size: int | None) -> list[tuple[str, int]]:
    keys: list[tuple[str, int]] = []
    config = {"PageSize": page_size} if page_size else {}
    with s3_errors(action="list backups", bucket=bucket):
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=root, PaginationConfig=config):
            keys.extend((obj["Key"], int(obj["Size"])) for obj in page.get("Contents", []))
    return keys


def list_backups(
    client: Any,
    bucket: str,
    prefix: str,
    *,
    database: str | None = None,
    page_size: int | None = None,
) -> list[BackupRecord]:
    """List the backups under ``prefix`` by listing keys (paginated) and grouping them by id.

    Keys that do not fit ``{prefix}/{db}/{id}/{name}`` with a valid backup id are ignored.
    No manifest is read: ``complete`` only reflects which objects exist until a manifest is
    checked (:func:`check_manifest`).

    Args:
        client: a boto3 S3 client.
        bucket: the bucket.
        prefix: the store's key prefix (may be empty).
        database: one database, or None for every database under the prefix.
        page_size: keys per list request (S3's default, 1000, when None).

    Returns:
        The backups, sorted by database then start time (oldest first).

    Raises:
        InvalidInputError: when ``database`` is not a plain name.
        ExternalSystemError: when S3 refuses or cannot be reached.
    """
    _check_database(database)
    root = _root(prefix)
    listing = _list_keys(client, bucket, _root(prefix, database), page_size)
    groups: dict[tuple[str, str], dict[str, tuple[str, int]]] = defaultdict(dict)
    for key, size in listing:
        parts = key[len(root) :].split("/")
        if len(parts) != 3 or not all(parts):
            continue
        db, bid, name = parts
        groups[(db, bid)][name] = (key, size)
    records: list[BackupRecord] = []
    for (db, bid), objects in groups.items():
        try:
            started, kind = parse_backup_id(bid)
        except ValueError:
            continue
        data = objects.get(DATA_NAME)
        manifest = objects.get(MANIFEST_NAME)
        records.append(
            BackupRecord(
                database=db,
                backup_id=bid,
                kind=kind,
                started_at=started,
                data_key=data[0] if data else None,
                data_size=data[1] if data else None,
                manifest_key=manifest[0] if manifest else None,
                keys=tuple(sorted(k for k, _ in objects.values())),
            )
        )
    return sorted(records, key=lambda r: (r.database, r.started_at, r.backup_id))


def read_manifest(client: Any, bucket: str, record: BackupRecord) -> Manifest:
    """Download and validate the manifest of a backup.

    Args:
        client: a boto3 S3 client.
        bucket: the bucket.
        record: the backup (must have a manifest).

    Returns:
        The validated manifest.

    Raises:
        NotFoundError: when the backup has no manifest.
        IntegrityError: when the manifest is not valid or describes another backup.
    """
    if record.manifest_key is None:
        raise NotFoundError(
            "S3",
            f"backup {record.backup_id} of {record.database} has no manifest (incomplete)",
            hint="pick a complete backup from the catalogue",
        )
    with s3_errors(action="read manifest", bucket=bucket, key=record.manifest_key):
        body = client.get_object(Bucket=bucket, Key=record.manifest_key)["Body"].read()
    try:
        manifest = Manifest.model_validate_json(body)
    except ValidationError as exc:
        raise IntegrityError(
            f"manifest {record.manifest_key} is not valid ({exc.error_count()} errors)",
            hint="the backup cannot be trusted: restore from another one",
        ) from None
    if manifest.backup_id != record.backup_id or manifest.database != record.database:
        raise IntegrityError(
            f"manifest {record.manifest_key} describes {manifest.database}/{manifest.backup_id}",
            hint="the backup cannot be trusted: restore from another one",
        )
    return manifest


def manifest_problem(record: BackupRecord, manifest: Manifest) -> str | None:
    """What makes a (valid) manifest disagree with the data object listed, if anything.

    Args:
        record: the backup as listed (its data object's key and size).
        manifest: its manifest, as read by :func:`read_manifest`.

    Returns:
        The problem in words, or None when the manifest names this data object and its size.
    """
    if record.data_key is None:
        return "no data"
    if manifest.data_key != record.data_key or manifest.size_bytes != record.data_size:
        return (
            f"manifest does not match the data object (manifest says "
            f"{manifest.size_bytes} bytes, the object has {record.data_size})"
        )
    return None


def check_manifest(
    client: Any, bucket: str, record: BackupRecord
) -> tuple[BackupRecord, Manifest | None]:
    """Read the manifest of a listed backup and decide whether the backup is complete.

    Args:
        client: a boto3 S3 client.
        bucket: the bucket.
        record: a backup with both objects listed.

    Returns:
        The record (with ``manifest_problem`` set when the manifest is faulty) and the
        manifest when it is sound (None otherwise).

    Raises:
        ExternalSystemError: S3 failed (a missing manifest counts as a problem instead).
    """
    try:
        manifest = read_manifest(client, bucket, record)
    except IntegrityError as exc:
        return replace(record, manifest_problem=f"faulty manifest: {exc.message}"), None
    except NotFoundError:
        return replace(record, manifest_key=None), None  # deleted since the listing
    problem = manifest_problem(record, manifest)
    if problem:
        return replace(record, manifest_problem=problem), None
    return record, manifest


def latest_complete(
    client: Any, bucket: str, records: Iterable[BackupRecord], *, before: str | None = None
) -> Manifest | None:
    """The manifest of the newest complete backup, its manifest read and checked.

    Backups lacking an object, or whose manifest turns out faulty, are skipped (and logged):
    a restore test must never pick a backup whose data object is missing.

    Args:
        client: a boto3 S3 client.
        bucket: the bucket.
        records: the candidates (usually one database's catalogue).
        before: only backups that started before this backup id.

    Returns:
        The manifest, or None when no backup is complete.
    """
    limit = parse_backup_id(before) if before else None
    for record in newest_first(records):
        if limit and (record.started_at, record.kind) >= limit:
            continue
        if not record.complete:
            logger.warning("skipping incomplete backup %s (%s)", record.label, record.missing)
            continue
        checked, manifest = check_manifest(client, bucket, record)
        if manifest is not None:
            return manifest
        logger.warning("skipping incomplete backup %s (%s)", checked.label, checked.missing)
    return None


def find_backup(
    client: Any, bucket: str, prefix: str, database: str, backup_id: str | None
) -> Manifest:
    """Resolve a backup id (or the newest complete backup) of ``database`` to its manifest.

    Args:
        client: boto3 S3 client.
        bucket: the bucket.
        prefix: the store prefix.
        database: database name.
        backup_id: a backup id, or None for the newest complete one.

    Returns:
        The manifest, checked against the data object.

    Raises:
        InvalidInputError: the id is malformed or names no complete backup.
        NotFoundError: there is no complete backup at all.
        IntegrityError: the named backup's manifest is faulty.
    """
    if backup_id is not None:
        try:
            parse_backup_id(backup_id)
        except ValueError:
            raise InvalidInputError(
                "backup_id", f"{backup_id!r} is not a backup id",
                fix="use an id like 20261127T030000Z-full (see the backup catalogue)",
            ) from None
    records = list_backups(client, bucket, prefix, database=database)
    if backup_id is None:
        manifest = latest_complete(client, bucket, records)
        if manifest is None:
            raise NotFoundError(
                "S3",
                f"no complete backup of {database!r} under s3://{bucket}/{prefix}",
                hint="run the backup flow first, or check the store block's bucket/prefix",
            )
        return manifest
    record = next((r for r in records if r.backup_id == backup_id), None)
    if record is None or not record.complete:
        where = backup_prefix(prefix, database, backup_id)
        lacks = record.missing if record else "nothing there"
        raise InvalidInputError(
            "backup_id",
            f"no complete backup {backup_id!r} of {database!r} (s3://{bucket}/{where}: {lacks})",
            fix="pick an id from the backup catalogue (only complete backups count)",
        )
    record, manifest = check_manifest(client, bucket, record)
    if manifest is None:
        raise IntegrityError(
            f"backup {backup_id} of {database}: {record.missing}",
            hint="this backup cannot be trusted; nothing was restored; pick another backup id",
        )
    return manifest


def previous_backup(
    client: Any, bucket: str, prefix: str, database: str, backup_id: str
) -> Manifest | None:
    """The complete backup just before ``backup_id`` (for the backup interval), if any.

    Args:
        client: boto3 S3 client.
        bucket: the bucket.
        prefix: the store prefix.
        database: database name.
        backup_id: the reference backup.

    Returns:
        Its manifest, or None.
    """
    records = list_backups(client, bucket, prefix, database=database)
    return latest_complete(client, bucket, records, before=backup_id)
