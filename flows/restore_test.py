"""The restore-test flow: a logical backup into a scratch database.

Its PITR mode (pgBackRest into a scratch directory) lives in :mod:`flows.pitr_restore_test`.
"""

from __future__ import annotations

from prefect import flow

from blocks.gpg import GpgDecryptionKey
from blocks.loading import load_block
from blocks.postgres import PostgresDatabase
from blocks.s3 import S3BackupStore
from tasks.events import run_events
from tasks.recovery.restore_test import (
    RestoreTestReport,
    RestoreTestRequest,
    publish_report,
    restore_test_task,
)
from tasks.recovery.restoring import OwnerMode


@flow(name="restore-test", log_prints=False)
def restore_test_flow(
    database_block: str,
    store_block: str,
    decryption_block: str,
    backup_id: str | None = None,
    *,
    smoke_sql: list[str] | None = None,
    jobs: int = 2,
    rto_objective_hours: float = 4.0,
    rpo_objective_hours: float = 1.0,
    fail_on_problems: bool = True,
    scratch_server_block: str | None = None,
    owner_mode: OwnerMode = "recreate-roles",
) -> RestoreTestReport:
    """Test that a backup restores: checksum, decryption, pg_restore, counts, amcheck, smoke SQL.

    Args:
        database_block: name of the PostgresDatabase block (server + backed-up database).
        store_block: name of the S3BackupStore block.
        decryption_block: name of the GpgDecryptionKey block.
        backup_id: the backup to test (default: the newest complete one); a legacy archive
            only by its id (``...Z-legacy``).
        smoke_sql: queries that must each return a truthy first column.
        jobs: pg_restore parallel jobs.
        rto_objective_hours: RTO objective (guide: 4 h).
        rpo_objective_hours: RPO objective (guide: 1 h).
        fail_on_problems: fail the run when the report did not pass (default).
        scratch_server_block: a PostgresDatabase block of a separate scratch server to restore
            on (recommended: one that never saw the roles, like a DR cluster); default: the
            source server.
        owner_mode: "recreate-roles" (default) or "no-owner".

    Returns:
        The report (also published as a markdown artifact).
    """
    db = load_block(PostgresDatabase, database_block, field="database_block")
    store = load_block(S3BackupStore, store_block, field="store_block")
    decryption = load_block(GpgDecryptionKey, decryption_block, field="decryption_block")
    scratch = (
        load_block(PostgresDatabase, scratch_server_block, field="scratch_server_block")
        if scratch_server_block else None
    )
    request = RestoreTestRequest(
        backup_id=backup_id, smoke_sql=smoke_sql or [], jobs=jobs,
        rto_objective_hours=rto_objective_hours, rpo_objective_hours=rpo_objective_hours,
        owner_mode=owner_mode,
    )
    with run_events("restore-test", kind="database", name=db.dbname,
                    details=lambda: {"backup_id": backup_id or "newest"}):
        report = restore_test_task(db, store, decryption, request, scratch_server=scratch)
        publish_report(report)
        if fail_on_problems:
            report.raise_unless_passed()
    return report
