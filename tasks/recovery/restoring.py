"""Restore a backup into a database: overwrite guard, pg_restore, check against the manifest."""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from pydantic import BaseModel, Field

from blocks.gpg import GpgDecryptionKey
from blocks.postgres import PostgresDatabase
from blocks.s3 import S3BackupStore
from errors import IntegrityError, InvalidInputError, RestoreRefusedError
from tasks.recovery.catalogue import check_bucket, find_backup
from tasks.recovery.fetching import check_key_matches, fetched_dump
from tasks.recovery.integrity import check_against_manifest
from tasks.recovery.pipeline import Pipeline, Stage
from tasks.recovery.postgres import (
    create_database,
    database_exists,
    drop_database,
    user_table_count,
)

logger = logging.getLogger(__name__)


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """Prefect's run logger (its lines reach the UI) inside a run, this module's logger outside."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logger


class RestoreRequest(BaseModel):
    """What the restore flow was asked to do (its parameters, less the block names)."""

    backup_id: str = Field(description="the backup to restore (see the backup catalogue)")
    target_database: str = Field(description="the database to restore into (created if missing)")
    confirm_overwrite: str | None = Field(
        default=None, description="must equal target_database to replace a non-empty database"
    )
    source_database: str | None = Field(
        default=None, description="the backed-up database (default: the block's dbname)"
    )
    jobs: int = Field(default=2, description="pg_restore parallel jobs")


class DatabaseRestoreOutcome(BaseModel):
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


def pg_restore(db: PostgresDatabase, target: str, dump: Path, *, jobs: int = 1) -> None:
    """Run ``pg_restore`` of ``dump`` into database ``target`` (stops at the first error).

    Args:
        db: the server (block); the password goes through the environment.
        target: the database to restore into (must exist).
        dump: path of the plain pg_dump archive.
        jobs: parallel jobs (``-j``).

    Raises:
        PipelineError: pg_restore failed.
    """
    argv = ["pg_restore", "--no-password", "--exit-on-error", f"--jobs={max(1, jobs)}",
            f"--dbname={target}", str(dump)]
    with Pipeline(
        [Stage("pg_restore", argv, env=db.subprocess_env(target))], stdout=subprocess.DEVNULL
    ) as pipe:
        pipe.check(timeout=4 * 3600)
    logger.info("pg_restore into %s finished", target)


def recreate_and_restore(db: PostgresDatabase, target: str, dump: Path, *, jobs: int) -> None:
    """Drop ``target`` if it exists (sessions disconnected), create it empty, pg_restore into it.

    Callers decide beforehand whether ``target`` may be dropped (see :func:`guard_target`).

    Args:
        db: the server block.
        target: the database to (re)create.
        dump: path of the plain pg_dump archive.
        jobs: pg_restore parallel jobs.
    """
    drop_database(db, target)
    create_database(db, target)
    pg_restore(db, target, dump, jobs=jobs)


def run_restore(
    db: PostgresDatabase,
    store: S3BackupStore,
    decryption: GpgDecryptionKey,
    request: RestoreRequest,
) -> DatabaseRestoreOutcome:
    """Restore ``request.backup_id`` of the source database into ``request.target_database``.

    Every check (keys, bucket, backup id, login, the overwrite guard) and the download,
    checksum and decryption happen before the target is touched; then the target is
    (re)created, restored and its row counts compared with the manifest. Also the Prefect
    task ``restore`` (no automatic retry: a restore is run by a person).

    Args:
        db: the server block (its dbname is the default source database).
        store: the S3 store.
        decryption: the private key block.
        request: what to restore where.

    Returns:
        What was restored.

    Raises:
        InvalidInputError: a bad target name, backup id or key (nothing changed).
        RestoreRefusedError: a non-empty target without the confirmation (nothing changed).
        IntegrityError: the download or the restored database differs from the manifest.
    """
    target = request.target_database
    if not target.strip() or len(target) > 63:
        raise InvalidInputError(
            "target_database", f"{target!r} is not a database name",
            fix="give a PostgreSQL database name (1-63 characters)",
        )
    source = request.source_database or db.dbname
    with decryption.keyring() as keyring:
        client = store.get_client()
        check_bucket(client, store.bucket)
        manifest = find_backup(client, store.bucket, store.prefix, source, request.backup_id)
        check_key_matches(keyring, manifest)
        exists = guard_target(db, target, request.confirm_overwrite)
        started = time.monotonic()
        with fetched_dump(
            client, bucket=store.bucket, manifest=manifest, decryption=decryption, keyring=keyring
        ) as dump:
            if exists:
                run_logger().warning("replacing database %s (confirmed)", target)
            recreate_and_restore(db, target, dump, jobs=request.jobs)
    problems = check_against_manifest(db, target, manifest)
    if problems:
        raise IntegrityError(
            f"restored {target!r} differs from backup {manifest.backup_id}: "
            + "; ".join(problems[:10]),
            hint="do not put it in service; restore another backup and report this one",
        )
    outcome = DatabaseRestoreOutcome(
        backup_id=manifest.backup_id,
        source_database=source,
        target_database=target,
        overwrote=exists,
        seconds=time.monotonic() - started,
        tables=len(manifest.tables),
        rows=sum(t.rows for t in manifest.tables),
    )
    run_logger().info(
        "backup %s restored into %s (%d tables, %d rows, %.0fs)",
        outcome.backup_id, target, outcome.tables, outcome.rows, outcome.seconds,
    )
    return outcome


restore_task = task(name="restore", cache_policy=NO_CACHE)(run_restore)
