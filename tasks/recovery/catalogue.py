"""The backup catalogue: list backups in the store, read their manifests, delete whole backups."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import ValidationError

from errors import (
    AccessDeniedError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    PermanentSystemError,
)
from errors.s3 import s3_errors
from tasks.recovery.manifest import DATA_NAME, MANIFEST_NAME, BackupKind, Manifest, parse_backup_id

_DELETE_BATCH = 1000  # S3 DeleteObjects accepts at most 1000 keys per request


class BackupStore(Protocol):
    """What the catalogue needs from a store block (``blocks.s3.S3BackupStore`` fits)."""

    bucket: str
    prefix: str

    def get_client(self) -> Any:
        """Return a boto3 S3 client."""


@dataclass(frozen=True)
class BackupRecord:
    """One backup found in the store: its objects and whether it is complete.

    A backup is complete when both its data object and its manifest exist; the manifest is
    uploaded last, so a backup without one is in flight, failed, or half-deleted.
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


def _root(prefix: str, database: str | None = None) -> str:
    parts = [p.strip("/") for p in (prefix, database or "") if p.strip("/")]
    return "/".join(parts) + "/" if parts else ""


def _check_database(database: str | None) -> None:
    if database is not None and (not database or "/" in database):
        raise InvalidInputError(
            "database",
            f"{database!r} is not a database name",
            fix="pass a database name without '/' (or nothing, for every database)",
        )


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


def newest_complete(
    records: Iterable[BackupRecord],
    *,
    database: str | None = None,
    kind: BackupKind | None = None,
) -> BackupRecord | None:
    """The newest complete backup, optionally of one database and kind.

    Args:
        records: the catalogue.
        database: restrict to this database.
        kind: restrict to this kind.

    Returns:
        The record, or None when there is no complete backup.
    """
    candidates = [
        r
        for r in records
        if r.complete
        and (database is None or r.database == database)
        and (kind is None or r.kind == kind)
    ]
    return max(candidates, key=lambda r: (r.started_at, r.backup_id), default=None)


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


def verify_newest(client: Any, bucket: str, records: Sequence[BackupRecord]) -> list[BackupRecord]:
    """Check the manifest of the newest backup of each database against its data object.

    The newest backup is the one retention never deletes; a faulty manifest there (not valid,
    another backup's, or a size that is not the data object's) makes the record incomplete,
    so retention freezes that database instead of trusting it.

    Args:
        client: a boto3 S3 client.
        bucket: the bucket.
        records: the catalogue.

    Returns:
        The same records, the newest of each database marked when its manifest is faulty.
    """
    newest: dict[str, BackupRecord] = {}
    for record in records:
        best = newest.get(record.database)
        if best is None or (record.started_at, record.backup_id) > (
            best.started_at,
            best.backup_id,
        ):
            newest[record.database] = record
    checked: dict[tuple[str, str], BackupRecord] = {}
    for record in newest.values():
        if not record.complete:
            continue
        problem = None
        try:
            manifest = read_manifest(client, bucket, record)
        except IntegrityError as exc:
            problem = f"faulty manifest: {exc.message}"
        else:
            if manifest.data_key != record.data_key or manifest.size_bytes != record.data_size:
                problem = (
                    f"manifest does not match the data object (manifest says "
                    f"{manifest.size_bytes} bytes, the object has {record.data_size})"
                )
        if problem:
            checked[(record.database, record.backup_id)] = replace(record, manifest_problem=problem)
    return [checked.get((r.database, r.backup_id), r) for r in records]


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


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"  # pragma: no cover - loop always returns


def catalogue_rows(records: Iterable[BackupRecord]) -> list[dict[str, str]]:
    """Rows of the catalogue table artifact.

    Args:
        records: the catalogue.

    Returns:
        One row per backup: database, id, kind, started, size, complete.
    """
    return [
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


def catalogue_markdown(records: Iterable[BackupRecord], *, title: str = "Backup catalogue") -> str:
    """Render the catalogue as a markdown table.

    Args:
        records: the catalogue.
        title: heading of the document.

    Returns:
        Markdown text.
    """
    rows = catalogue_rows(records)
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
            get_run_logger().warning(
                "newest backup %s of %s: %s",
                record.backup_id,
                record.database,
                record.manifest_problem,
            )
    return checked


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
        done.append(f"{record.database}/{record.backup_id}")
    return done


@task(name="publish-catalogue", cache_policy=NO_CACHE)
def publish_catalogue_task(records: Sequence[BackupRecord], *, key: str) -> None:
    """Prefect task: publish the catalogue as a markdown artifact.

    Args:
        records: the catalogue.
        key: artifact key (lowercase letters, digits, dashes).

    """
    create_markdown_artifact(
        markdown=catalogue_markdown(records),
        key=key,
        description=f"{len(records)} backups, {sum(r.complete for r in records)} complete",
    )


def artifact_key(*parts: str) -> str:
    """Build a valid artifact key (lowercase letters, digits, dashes) from free text.

    Args:
        parts: pieces joined by dashes, e.g. ("prune-backups", "veza_db").

    Returns:
        For example ``prune-backups-veza-db``.
    """
    text = "-".join(p for p in parts if p).lower()
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", text)).strip("-") or "backups"
