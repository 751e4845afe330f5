"""The backup flow: load the blocks, run one whole backup attempt (retried), publish the result."""

from __future__ import annotations

from typing import Literal

from prefect import flow

from blocks.gpg import GpgEncryption
from blocks.loading import load_block
from blocks.postgres import PostgresDatabase
from blocks.s3 import S3BackupStore
from tasks.recovery.backup import backup_task, publish_backup_table
from tasks.recovery.manifest import Manifest


@flow(name="backup", log_prints=False)
def backup_flow(
    database_block: str,
    store_block: str,
    encryption_block: str,
    kind: Literal["full", "hourly"] = "full",
    *,
    include_role_passwords: bool = False,
    retries: int = 2,
    retry_delay_seconds: float = 30.0,
) -> Manifest:
    """Back up a PostgreSQL database, encrypted, into S3; the manifest is written last.

    Args:
        database_block: name of the PostgresDatabase block (the database to back up).
        store_block: name of the S3BackupStore block.
        encryption_block: name of the GpgEncryption block (recipients' public keys).
        kind: "full" (nightly) or "hourly".
        include_role_passwords: keep the roles' password hashes in the globals object
            (default: left out; restored roles then need a password set by hand).
        retries: extra attempts after a transient failure (each one a whole new backup).
        retry_delay_seconds: pause between attempts.

    Returns:
        The manifest of the backup.
    """
    db = load_block(PostgresDatabase, database_block, field="database_block")
    store = load_block(S3BackupStore, store_block, field="store_block")
    encryption = load_block(GpgEncryption, encryption_block, field="encryption_block")
    attempt = backup_task.with_options(retries=retries, retry_delay_seconds=retry_delay_seconds)
    outcome = attempt(db, store, encryption, kind=kind, role_passwords=include_role_passwords)
    publish_backup_table(outcome)
    return outcome.manifest
