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
from tasks.recovery.upload import attempt_timeout_s

FLOW_TIMEOUT_S = 12 * 3600  # a hard ceiling; each attempt is bounded by its own timeout


@flow(name="backup", log_prints=False, timeout_seconds=FLOW_TIMEOUT_S)
def backup_flow(
    database_block: str,
    store_block: str,
    encryption_block: str,
    kind: Literal["full", "hourly"] = "full",
    *,
    include_role_passwords: bool = False,
    retries: int = 2,
    retry_delay_seconds: float = 30.0,
    expected_minutes: float = 60.0,
    timeout_factor: float = 3.0,
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
        expected_minutes: how long a backup usually takes.
        timeout_factor: an attempt is stopped after ``expected_minutes`` x this.

    Returns:
        The manifest of the backup.
    """
    timeout = attempt_timeout_s(expected_minutes, timeout_factor)
    db = load_block(PostgresDatabase, database_block, field="database_block")
    store = load_block(S3BackupStore, store_block, field="store_block")
    encryption = load_block(GpgEncryption, encryption_block, field="encryption_block")
    attempt = backup_task.with_options(
        retries=retries, retry_delay_seconds=retry_delay_seconds, timeout_seconds=timeout
    )
    outcome = attempt(db, store, encryption, kind=kind, role_passwords=include_role_passwords)
    publish_backup_table(outcome)
    return outcome.manifest
