"""The restore flows: a logical backup into a database, or PITR into a new directory and port.

The logical restore is guarded by confirm_overwrite; the point-in-time restore (pgBackRest)
never goes over a running cluster.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import flow

from blocks.gpg import GpgDecryptionKey
from blocks.loading import load_block
from blocks.pgbackrest import DatabaseHost, PgBackRestRepository
from blocks.postgres import PostgresDatabase
from blocks.s3 import S3BackupStore
from tasks.recovery.pitr.cluster import check_port_free
from tasks.recovery.pitr.commands import check_bucket_task, info_task
from tasks.recovery.pitr.recovery import (
    PitrRestoreOutcome,
    check_target_in_window,
    pitr_restore_task,
)
from tasks.recovery.pitr.restore import check_restore_target, format_target
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
        backup_id: the backup to restore (see the backup catalogue), or a legacy archive
            made before veza-ops (``20251101T020000Z-legacy``: checked by gpg and
            ``pg_restore --list``, nothing to compare; docs/recovery.md).
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
        What was restored (the database's owner, settings and grants replayed after the
        swap); the progress artifact ``restore-progress-<target>`` follows the download.
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


@flow(name="restore", log_prints=False)
def pitr_restore_flow(
    repository_block: str,
    target_time: datetime,
    target_directory: str,
    port: int,
    host: DatabaseHost | None = None,
    *,
    timeout_minutes: float = 240.0,
) -> PitrRestoreOutcome:
    """Point-in-time restore (pgBackRest) into a NEW data directory, started on a NEW port.

    Never over a running cluster: the directory must be new or empty (refused otherwise,
    ``postmaster.pid`` above all) and the port free (the live cluster's port, any listener
    and any socket file are refused), all checked before anything is written. The worker
    runs on the database host. The recovered cluster is left running on ``port`` with
    ``archive_mode=off`` (it never pushes a new timeline into the production repository);
    its log is ``<target_directory>/veza-ops-recovery.log``.

    Args:
        repository_block: name of the PgBackRestRepository block.
        target_time: the moment to recover to, with its time zone (inclusive).
        target_directory: the new data directory (absolute; its parent must exist).
        port: the restored cluster's port.
        host: the host's paths (default: Debian's); its socket directory is used.
        timeout_minutes: bound of the restore, the start and the replay, each.

    Returns:
        Where it runs, the last replayed commit's time, the WAL replayed, the time taken.
    """
    repo = load_block(PgBackRestRepository, repository_block, field="repository_block")
    host = host or DatabaseHost()
    format_target(target_time)
    check_restore_target(Path(target_directory), host)
    check_port_free(port, host)
    check_bucket_task(repo)
    check_target_in_window(info_task(repo, host), target_time, datetime.now(UTC))
    return pitr_restore_task(repo, host, target_directory, port, target_time=target_time,
                             timeout_s=timeout_minutes * 60)
