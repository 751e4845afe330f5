"""The real restore: a named backup into a named database, guarded by a confirmation."""

from __future__ import annotations

import logging
import time

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from blocks.gpg import GpgDecryptionKey
from blocks.postgres import PostgresDatabase
from blocks.s3 import S3BackupStore
from errors import IntegrityError, InvalidInputError, RestoreRefusedError
from tasks.recovery.fetching import check_key_matches, fetched_dump, pg_restore
from tasks.recovery.integrity import check_against_manifest
from tasks.recovery.postgres import (
    create_database,
    database_exists,
    drop_database,
    user_table_count,
)
from tasks.recovery.store import check_bucket, find_backup

logger = logging.getLogger(__name__)


class RestoreOutcome(BaseModel):
    """A finished restore."""

    backup_id: str
    source_database: str
    target_database: str
    overwrote: bool
    seconds: float
    tables: int
    rows: int


def guard_target(db: PostgresDatabase, target: str, confirm_overwrite: str | None) -> bool:
    """Refuse a non-empty target unless ``confirm_overwrite`` names it.

    Args:
        db: the server block.
        target: target database name.
        confirm_overwrite: must equal ``target`` to overwrite a non-empty database.

    Returns:
        Whether the target exists.

    Raises:
        RestoreRefusedError: non-empty target without the confirmation.
    """
    if not database_exists(db, target):
        return False
    relations = user_table_count(db, target)
    if relations and confirm_overwrite != target:
        raise RestoreRefusedError(
            f"database {target!r} is not empty ({relations} tables/views/sequences); "
            "refusing to overwrite it",
            hint=f"to replace its contents, set confirm_overwrite to {target!r}",
        )
    return True


def run_restore(
    db: PostgresDatabase,
    store: S3BackupStore,
    decryption: GpgDecryptionKey,
    *,
    backup_id: str,
    target_database: str,
    confirm_overwrite: str | None = None,
    source_database: str | None = None,
    jobs: int = 2,
) -> RestoreOutcome:
    """Restore backup ``backup_id`` of ``source_database`` into ``target_database``.

    Every check (keys, bucket, backup id, login, the overwrite guard) and the download,
    checksum and decryption happen before the target is touched; then the target is
    (re)created, restored and its row counts compared with the manifest.

    Args:
        db: the server block (its dbname is the default source database).
        store: the S3 store.
        decryption: the private key block.
        backup_id: the backup to restore.
        target_database: where to restore (created when missing).
        confirm_overwrite: must equal ``target_database`` when it is not empty.
        source_database: the backed-up database name (default: ``db.dbname``).
        jobs: pg_restore parallel jobs.

    Returns:
        What was restored.
    """
    if not target_database.strip() or len(target_database) > 63:
        raise InvalidInputError(
            "target_database", f"{target_database!r} is not a database name",
            fix="give a PostgreSQL database name (1-63 characters)",
        )
    source = source_database or db.dbname
    with decryption.keyring() as keyring:
        client = store.get_client()
        check_bucket(client, store.bucket)
        manifest = find_backup(client, store.bucket, store.prefix, source, backup_id)
        check_key_matches(keyring, manifest)
        exists = guard_target(db, target_database, confirm_overwrite)
        started = time.monotonic()
        with fetched_dump(
            client, bucket=store.bucket, manifest=manifest, decryption=decryption, keyring=keyring
        ) as dump:
            if exists:
                logger.warning("replacing database %s (confirmed)", target_database)
                drop_database(db, target_database)
            create_database(db, target_database)
            pg_restore(db, target_database, dump, jobs=jobs)
    problems = check_against_manifest(db, target_database, manifest)
    if problems:
        raise IntegrityError(
            f"restored {target_database!r} differs from backup {backup_id}: "
            + "; ".join(problems[:10]),
            hint="do not put it in service; restore another backup and report this one",
        )
    return RestoreOutcome(
        backup_id=manifest.backup_id,
        source_database=source,
        target_database=target_database,
        overwrote=exists,
        seconds=time.monotonic() - started,
        tables=len(manifest.tables),
        rows=sum(t.rows for t in manifest.tables),
    )


@task(name="restore", cache_policy=NO_CACHE)
def restore_task(
    db: PostgresDatabase,
    store: S3BackupStore,
    decryption: GpgDecryptionKey,
    *,
    backup_id: str,
    target_database: str,
    confirm_overwrite: str | None = None,
    source_database: str | None = None,
    jobs: int = 2,
) -> RestoreOutcome:
    """Prefect task: :func:`run_restore` (no automatic retry: a restore is run by a person).

    Args:
        db: the server block.
        store: the store block.
        decryption: the private key block.
        backup_id: the backup.
        target_database: where to restore.
        confirm_overwrite: must name the target to overwrite it.
        source_database: the backed-up database (default: the block's).
        jobs: pg_restore jobs.

    Returns:
        What was restored.
    """
    outcome = run_restore(
        db, store, decryption, backup_id=backup_id, target_database=target_database,
        confirm_overwrite=confirm_overwrite, source_database=source_database, jobs=jobs,
    )
    get_run_logger().info(
        "backup %s restored into %s (%d tables, %d rows, %.0fs)",
        outcome.backup_id, outcome.target_database, outcome.tables, outcome.rows, outcome.seconds,
    )
    return outcome
