"""The backup flow: load the blocks, run one whole backup attempt (retried), publish the result."""

from __future__ import annotations

from typing import Literal

from prefect import flow

from blocks.gpg import GpgEncryption
from blocks.loading import load_block
from blocks.postgres import PostgresDatabase
from blocks.s3 import S3BackupStore
from tasks.events import run_events
from tasks.recovery.backup import backup_task
from tasks.recovery.backup_report import publish_backup_table
from tasks.recovery.backup_slot import backup_slot, slot_wait_s
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
    wait_minutes: float | None = None,
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
        wait_minutes: how long to wait for another backup of the same database to finish
            before this one is refused (default: a full waits one attempt's timeout, an
            hourly at most 45 min). Every backup of a database holds its global concurrency
            limit ``veza-ops-backup-<dbname>`` for the whole dump and upload.

    Returns:
        The manifest of the backup.
    """
    timeout = attempt_timeout_s(expected_minutes, timeout_factor)
    wait_s = slot_wait_s(kind, timeout, wait_minutes=wait_minutes)
    db = load_block(PostgresDatabase, database_block, field="database_block")
    store = load_block(S3BackupStore, store_block, field="store_block")
    encryption = load_block(GpgEncryption, encryption_block, field="encryption_block")
    attempt = backup_task.with_options(
        retries=retries, retry_delay_seconds=retry_delay_seconds, timeout_seconds=timeout
    )
    with (run_events("backup", kind="database", name=db.dbname, details=lambda: {"kind": kind}),
          backup_slot(db.dbname, wait_s=wait_s)):  # retries included: no backup in between
        outcome = attempt(db, store, encryption, kind=kind, role_passwords=include_role_passwords)
    publish_backup_table(outcome)
    return outcome.manifest
