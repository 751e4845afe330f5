"""The restore flow: a named backup into a named database, guarded by confirm_overwrite."""

from __future__ import annotations

from prefect import flow

from blocks.gpg import GpgDecryptionKey
from blocks.loading import load_block
from blocks.postgres import PostgresDatabase
from blocks.s3 import S3BackupStore
from tasks.recovery.restoring import (
    DatabaseRestoreOutcome,
    OwnerMode,
    RestoreRequest,
    restore_task,
)


@flow(name="restore", log_prints=False)
def restore_flow(
    database_block: str,
    store_block: str,
    decryption_block: str,
    backup_id: str,
    target_database: str,
    *,
    confirm_overwrite: str | None = None,
    source_database: str | None = None,
    jobs: int = 2,
    owner_mode: OwnerMode = "recreate-roles",
    owner_role: str | None = None,
    drop_previous: bool = False,
) -> DatabaseRestoreOutcome:
    """Restore a backup into a database; a non-empty target needs confirm_overwrite = its name.

    Args:
        database_block: name of the PostgresDatabase block (the server to restore to; its
            dbname is the default source database of the backup).
        store_block: name of the S3BackupStore block.
        decryption_block: name of the GpgDecryptionKey block.
        backup_id: the backup to restore (see the backup catalogue).
        target_database: the database to restore into (created when missing).
        confirm_overwrite: type the target database's name to replace a non-empty one.
        source_database: the database the backup was taken of (default: the block's dbname).
        jobs: pg_restore parallel jobs.
        owner_mode: "recreate-roles" (missing roles created from the backup's globals first)
            or "no-owner" (objects owned by owner_role or the block's user; no grants).
        owner_role: with no-owner, the role that owns the restored objects.
        drop_previous: drop the replaced database after a verified restore (default: kept
            as <target>_before_<backup id>).

    Returns:
        What was restored.
    """
    db = load_block(PostgresDatabase, database_block, field="database_block")
    store = load_block(S3BackupStore, store_block, field="store_block")
    decryption = load_block(GpgDecryptionKey, decryption_block, field="decryption_block")
    request = RestoreRequest(
        backup_id=backup_id, target_database=target_database,
        confirm_overwrite=confirm_overwrite, source_database=source_database, jobs=jobs,
        owner_mode=owner_mode, owner_role=owner_role, drop_previous=drop_previous,
    )
    return restore_task(db, store, decryption, request)
