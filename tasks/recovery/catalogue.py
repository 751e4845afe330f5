"""The one model of backups in the store: records, listing, "complete", manifests, selection."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from errors import IntegrityError, NotFoundError
from errors.s3 import s3_errors
from tasks.logs import ModuleLogger
from tasks.recovery.manifest import (
    DATA_NAME,
    MANIFEST_NAME,
    Manifest,
    RecordKind,
    backup_id,
    parse_backup_id,
    parse_legacy_name,
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

    A legacy archive (kind ``legacy``, made before veza-ops) is one object and never has a
    manifest: it is complete as soon as it is listed.
    """

    database: str
    backup_id: str
    kind: RecordKind
    started_at: datetime
    data_key: str | None
    data_size: int | None
    manifest_key: str | None
    keys: tuple[str, ...] = field(default=())
    manifest_problem: str | None = None

    @property
    def complete(self) -> bool:
        """True when the data object and a manifest (not found faulty) are both present."""
        if self.legacy:
            return self.data_key is not None
        return (
            self.data_key is not None
            and self.manifest_key is not None
            and self.manifest_problem is None
        )

    @property
    def missing(self) -> str:
        """What an incomplete backup lacks, in words ("" when complete)."""
        if self.legacy:
            return "" if self.data_key else "no data"
        lacks = [
            what
            for what, key in (("no manifest", self.manifest_key), ("no data", self.data_key))
            if key is None
        ]
        if self.manifest_problem:
            lacks.append(self.manifest_problem)
        return ", ".join(lacks)

    @property
    def legacy(self) -> bool:
        """A legacy archive (the guide's script: no manifest, no checksum)."""
        return self.kind == "legacy"

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

    Keys that do not fit ``{prefix}/{db}/{id}/{name}`` with a valid backup id are ignored,
    except legacy archives ``{prefix}/{db}_YYYYMMDD_HHMMSS.dump.gpg`` (kind ``legacy``,
    dated by their name, no manifest). No manifest is read: ``complete`` only reflects
    which objects exist until a manifest is checked (:func:`check_manifest`).

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
    if database is not None:  # legacy archives sit beside the folders: {db}_...dump.gpg
        listing += _list_keys(client, bucket, f"{root}{database}_", page_size)
    groups: dict[tuple[str, str], dict[str, tuple[str, int]]] = defaultdict(dict)
    records: list[BackupRecord] = []
    for key, size in listing:
        parts = key[len(root) :].split("/")
        if len(parts) == 1:
            legacy = _legacy_record(key, parts[0], size)
            if legacy is not None and database in (None, legacy.database):
                records.append(legacy)
        if len(parts) != 3 or not all(parts):
            continue
        db, bid, name = parts
        groups[(db, bid)][name] = (key, size)
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


def _legacy_record(key: str, name: str, size: int) -> BackupRecord | None:
    parsed = parse_legacy_name(name)
    if parsed is None:
        return None
    database, started = parsed
    return BackupRecord(
        database=database, backup_id=backup_id(started, "legacy"), kind="legacy",
        started_at=started, data_key=key, data_size=size, manifest_key=None, keys=(key,),
    )


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
    a restore test must never pick a backup whose data object is missing. Legacy archives
    are never picked (restore or test one by naming its id).

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
        if record.legacy or (limit and (record.started_at, record.kind) >= limit):
            continue
        if not record.complete:
            logger.warning("skipping incomplete backup %s (%s)", record.label, record.missing)
            continue
        checked, manifest = check_manifest(client, bucket, record)
        if manifest is not None:
            return manifest
        logger.warning("skipping incomplete backup %s (%s)", checked.label, checked.missing)
    return None
