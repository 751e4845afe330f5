"""Which backup to restore: an id (or the newest complete one) resolved to its manifest."""

from __future__ import annotations

from typing import Any

from errors import IntegrityError, InvalidInputError, NotFoundError
from tasks.recovery.catalogue import check_manifest, latest_complete, list_backups
from tasks.recovery.manifest import Manifest, backup_prefix, legacy_manifest, parse_backup_id


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
        The manifest, checked against the data object; for a legacy archive one made up
        from its listing (``Manifest.legacy``: no checksum, nothing to compare).

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
                fix="use an id like 20261127T030000Z-full or, for an archive made before "
                "veza-ops, 20251101T020000Z-legacy (see the backup catalogue)",
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
    if record.legacy and record.data_key is not None:
        return legacy_manifest(record.database, record.data_key, record.data_size or 0,
                               record.started_at)
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
