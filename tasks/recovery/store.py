"""Backups in the store: check the bucket, read manifests, find the newest complete backup."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from errors import IntegrityError, InvalidInputError, NotFoundError
from errors.s3 import s3_errors
from tasks.recovery.manifest import MANIFEST_NAME, Manifest, backup_prefix, parse_backup_id


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


def read_manifest(client: Any, bucket: str, key: str) -> Manifest:
    """Download and parse one manifest.

    Args:
        client: boto3 S3 client.
        bucket: the bucket.
        key: the manifest key.

    Returns:
        The manifest.

    Raises:
        IntegrityError: it is not a valid manifest.
    """
    with s3_errors(action="read manifest", bucket=bucket, key=key):
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    try:
        return Manifest.model_validate_json(body)
    except ValidationError as exc:
        raise IntegrityError(
            f"s3://{bucket}/{key} is not a valid manifest ({exc.error_count()} errors)",
            hint="this backup cannot be trusted; pick another backup id",
        ) from None


def list_backup_ids(client: Any, bucket: str, prefix: str, database: str) -> list[str]:
    """Ids of the COMPLETE backups (manifest present) of ``database``, oldest first.

    Args:
        client: boto3 S3 client.
        bucket: the bucket.
        prefix: the store prefix.
        database: database name.

    Returns:
        Sorted backup ids.
    """
    root = backup_prefix(prefix, database, "")
    ids: list[str] = []
    with s3_errors(action="list backups", bucket=bucket):
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=root):
            for obj in page.get("Contents", []):
                rest = obj["Key"][len(root):]
                bid, _, name = rest.partition("/")
                if name == MANIFEST_NAME:
                    try:
                        parse_backup_id(bid)
                    except ValueError:
                        continue
                    ids.append(bid)
    return sorted(ids)


def find_backup(
    client: Any, bucket: str, prefix: str, database: str, backup_id: str | None
) -> Manifest:
    """Resolve a backup id (or the newest complete backup) to its manifest.

    Args:
        client: boto3 S3 client.
        bucket: the bucket.
        prefix: the store prefix.
        database: database name.
        backup_id: a backup id, or None for the newest complete one.

    Returns:
        The manifest.

    Raises:
        InvalidInputError: the id is malformed or has no (complete) backup.
        NotFoundError: there is no backup at all.
    """
    if backup_id is None:
        ids = list_backup_ids(client, bucket, prefix, database)
        if not ids:
            raise NotFoundError(
                "S3",
                f"no complete backup of {database!r} under s3://{bucket}/{prefix}",
                hint="run the backup flow first, or check the store block's bucket/prefix",
            )
        backup_id = ids[-1]
    try:
        parse_backup_id(backup_id)
    except ValueError:
        raise InvalidInputError(
            "backup_id", f"{backup_id!r} is not a backup id",
            fix="use an id like 20261127T030000Z-full (see the backup catalogue)",
        ) from None
    key = backup_prefix(prefix, database, backup_id) + MANIFEST_NAME
    try:
        return read_manifest(client, bucket, key)
    except NotFoundError:
        raise InvalidInputError(
            "backup_id",
            f"no complete backup {backup_id!r} of {database!r} (no s3://{bucket}/{key})",
            fix="pick an id from the backup catalogue (only backups with a manifest count)",
        ) from None


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
    earlier = [b for b in list_backup_ids(client, bucket, prefix, database) if b < backup_id]
    if not earlier:
        return None
    return read_manifest(
        client, bucket, backup_prefix(prefix, database, earlier[-1]) + MANIFEST_NAME
    )
