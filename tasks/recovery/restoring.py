"""Restore a backup: guard, roles, pg_restore into a staging copy, verify, swap names."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks.gpg import GpgDecryptionKey, Keyring
from blocks.postgres import PostgresDatabase
from blocks.s3 import S3BackupStore
from errors import IntegrityError, InvalidInputError, RecoveryError, RestoreRefusedError
from tasks.logs import ModuleLogger
from tasks.recovery.catalogue import artifact_key, check_bucket
from tasks.recovery.dbnames import check_db_identifier, dbname_conninfo, sibling_name
from tasks.recovery.dbstate import fetch_database_state, replay_database_state
from tasks.recovery.fetching import check_key_matches, fetched_dump, fetched_object
from tasks.recovery.integrity import check_against_manifest
from tasks.recovery.manifest import LEGACY_CHECKS, Manifest
from tasks.recovery.pipeline import Pipeline, Stage
from tasks.recovery.postgres import (
    create_database,
    database_exists,
    drop_database,
    user_table_count,
)
from tasks.recovery.progress import ProgressArtifact, ProgressFn
from tasks.recovery.roles import recreate_missing_roles
from tasks.recovery.selection import find_backup
from tasks.recovery.swapping import rename_database, swap_databases

logger = ModuleLogger(__name__)  # run logger inside a run: lines reach the UI


OwnerMode = Literal["recreate-roles", "no-owner"]


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
    owner_mode: OwnerMode = Field(
        default="recreate-roles",
        description="recreate-roles: create the backup's missing roles first, keep owners; "
        "no-owner: pg_restore --no-owner --no-privileges (objects owned by owner_role or "
        "the block's user)",
    )
    owner_role: str | None = Field(
        default=None, description="no-owner mode: pg_restore --role (the objects' owner)"
    )
    drop_previous: bool = Field(
        default=False,
        description="drop the replaced database after a verified restore instead of keeping "
        "it as <target>_before_<backup id>",
    )


class DatabaseRestoreOutcome(BaseModel):
    """A finished restore."""

    backup_id: str
    source_database: str
    target_database: str
    overwrote: bool
    seconds: float
    tables: int
    rows: int
    kept_previous_as: str | None = None
    roles_created: list[str] = Field(default_factory=list)
    roles_note: str = ""
    checks_note: str = Field(default="", description="what the restored copy was checked against")
    database_state_note: str = Field(default="", description="owner, settings, grants replayed")


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


def pg_restore(
    db: PostgresDatabase, target: str, dump: Path, *, jobs: int = 1,
    owner_mode: OwnerMode = "recreate-roles", owner_role: str | None = None,
) -> None:
    """Run ``pg_restore`` of ``dump`` into database ``target`` (stops at the first error).

    The target goes in as a conninfo (``dbname='...'``) so libpq never expands it.

    Args:
        db: the server (block); the password goes through a passfile (``db.libpq_env``).
        target: the database to restore into (must exist).
        dump: path of the plain pg_dump archive.
        jobs: parallel jobs (``-j``).
        owner_mode: ``no-owner`` adds ``--no-owner --no-privileges``.
        owner_role: with ``no-owner``, ``--role`` (the role that owns what is created).

    Raises:
        PipelineError: pg_restore failed.
    """
    argv = ["pg_restore", "--no-password", "--exit-on-error", f"--jobs={max(1, jobs)}"]
    if owner_mode == "no-owner":
        argv += ["--no-owner", "--no-privileges"]
        if owner_role:
            argv.append(f"--role={owner_role}")
    argv += [f"--dbname={dbname_conninfo(target)}", str(dump)]
    with db.libpq_env(target) as env, Pipeline(
        [Stage("pg_restore", argv, env=env)], stdout=subprocess.DEVNULL
    ) as pipe:
        pipe.check(timeout=4 * 3600)
    logger.info("pg_restore into %s finished", target)


def recreate_and_restore(
    db: PostgresDatabase, target: str, dump: Path, manifest: Manifest, *, jobs: int,
    owner_mode: OwnerMode = "recreate-roles", owner_role: str | None = None,
) -> None:
    """Drop ``target`` if it exists, create it like the source (encoding, locale), restore.

    Callers decide beforehand whether ``target`` may be dropped (see :func:`guard_target`).

    Args:
        db: the server block.
        target: the database to (re)create.
        dump: path of the plain pg_dump archive.
        manifest: the backup's manifest (the source's encoding and locale when recorded).
        jobs: pg_restore parallel jobs.
        owner_mode: see :func:`pg_restore`.
        owner_role: see :func:`pg_restore`.
    """
    drop_database(db, target)
    create_database(db, target, encoding=manifest.encoding, lc_collate=manifest.lc_collate,
                    lc_ctype=manifest.lc_ctype)
    pg_restore(db, target, dump, jobs=jobs, owner_mode=owner_mode, owner_role=owner_role)


def restore_roles(
    db: PostgresDatabase, client: Any, bucket: str, manifest: Manifest, *,
    decryption: GpgDecryptionKey, keyring: Keyring, owner_mode: OwnerMode,
) -> tuple[list[str], str]:
    """Recreate the backup's roles missing from ``db``'s cluster (recreate-roles mode).

    Args:
        db: the target server.
        client: boto3 S3 client.
        bucket: the bucket.
        manifest: the backup's manifest.
        decryption: the private key block.
        keyring: its imported keyring.
        owner_mode: nothing is done in ``no-owner`` mode.

    Returns:
        (roles created, a sentence for the report).
    """
    if owner_mode == "no-owner":
        return [], "roles not restored (owner_mode no-owner: objects owned by the restoring role)"
    g = manifest.globals
    if manifest.legacy:
        return [], ("roles step skipped: a legacy archive carries no roles (they must exist "
                    "on this cluster, or use owner_mode no-owner)")
    if g is None:
        return [], "roles step skipped: this backup predates globals (its roles must exist)"
    with fetched_object(
        client, bucket=bucket, backup_id=manifest.backup_id, key=g.key,
        size_bytes=g.size_bytes, sha256=g.sha256, decryption=decryption, keyring=keyring,
        name="globals.sql",
    ) as path:
        plan = recreate_missing_roles(db, path.read_text(), g.bootstrap_role)
    note = (f"roles created: {', '.join(plan.created) or 'none'}; already present (unchanged): "
            f"{', '.join(plan.existing) or 'none'}")
    if plan.skipped:
        note += "; not replayed: " + ", ".join(plan.skipped)
    return plan.created, note


def check_request(db: PostgresDatabase, request: RestoreRequest) -> tuple[str, str]:
    """Check the request's names before anything is touched.

    Args:
        db: the server block.
        request: the request.

    Returns:
        (target database, source database).

    Raises:
        InvalidInputError: naming the field and the fix.
    """
    target = check_db_identifier("target_database", request.target_database)
    source = check_db_identifier("source_database", request.source_database or db.dbname)
    if request.owner_role is not None and request.owner_mode != "no-owner":
        raise InvalidInputError(
            "owner_role", "only applies when owner_mode is no-owner",
            fix="set owner_mode to no-owner, or leave owner_role empty",
        )
    return target, source


def run_restore(
    db: PostgresDatabase,
    store: S3BackupStore,
    decryption: GpgDecryptionKey,
    request: RestoreRequest,
    *,
    progress: ProgressFn | None = None,
) -> DatabaseRestoreOutcome:
    """Restore ``request.backup_id`` of the source database into ``request.target_database``.

    Every check (names, keys, bucket, backup id, login, the overwrite guard) and the download,
    checksum and decryption happen before anything changes. Missing roles are recreated
    (recreate-roles mode), then the backup is restored into a temporary database, created
    with the source's encoding and locale, and its content compared with the manifest (row
    counts, table checksums, sequences, large objects: whatever the manifest recorded).
    Only then is it swapped in under the target's name; a replaced database is kept as
    ``<target>_before_<backup id>`` (unless ``drop_previous``). The source database's
    owner, settings and grants are replayed on the copy before the swap, so it never answers
    under the target's name with default privileges (:mod:`tasks.recovery.dbstate`; in
    no-owner mode the owner is left alone); a statement that fails does not stop the swap.
    A failure before the swap drops the temporary database and leaves the target as it was.
    A legacy archive (no manifest) is checked by gpg and ``pg_restore --list`` instead and
    has nothing to compare or replay.

    Args:
        db: the server block (its dbname is the default source database).
        store: the S3 store.
        decryption: the private key block.
        request: what to restore where.
        progress: called with (bytes of the backup downloaded, its size in the manifest).

    Returns:
        What was restored.

    Raises:
        InvalidInputError: a bad target name, backup id or key (nothing changed).
        RestoreRefusedError: a non-empty target without the confirmation, or a kept copy
            of an earlier restore in the way (nothing changed).
        IntegrityError: the download or the restored database differs from the manifest.
        RecoveryError: after the swap, when part of the database state could not be set.
    """
    target, source = check_request(db, request)
    with decryption.keyring() as keyring:
        client = store.get_client()
        check_bucket(client, store.bucket)
        manifest = find_backup(client, store.bucket, store.prefix, source, request.backup_id)
        check_key_matches(keyring, manifest)
        exists = guard_target(db, target, request.confirm_overwrite)
        staging = sibling_name(target, "restoring", manifest.backup_id)
        keep_as = sibling_name(target, "before", manifest.backup_id)
        if exists and database_exists(db, keep_as):
            raise RestoreRefusedError(
                f"database {keep_as!r} (kept by an earlier restore of this backup) is in the way",
                hint=f"drop or rename {keep_as!r}, then run the restore again",
            )
        started = time.monotonic()
        state = fetch_database_state(client, store.bucket, manifest, decryption=decryption,
                                     keyring=keyring)
        roles, roles_note = restore_roles(
            db, client, store.bucket, manifest, decryption=decryption, keyring=keyring,
            owner_mode=request.owner_mode,
        )
        try:
            with fetched_dump(
                client, bucket=store.bucket, manifest=manifest, decryption=decryption,
                keyring=keyring, on_progress=progress,
            ) as dump:
                recreate_and_restore(db, staging, dump, manifest, jobs=request.jobs,
                                     owner_mode=request.owner_mode, owner_role=request.owner_role)
            verdict = None if manifest.legacy else check_against_manifest(db, staging, manifest)
            problems = verdict.problems if verdict else []
            if problems:
                raise IntegrityError(
                    f"restored copy of backup {manifest.backup_id} differs from its manifest: "
                    + "; ".join(problems[:10]),
                    hint=f"{target!r} was left as it was; restore another backup and report "
                    "this one",
                )
            try:  # on the copy: it takes its final name with its privileges already set
                state_note = replay_database_state(
                    db, staging, state, no_owner=request.owner_mode == "no-owner",
                    final_name=target)
                state_error: RecoveryError | None = None
            except RecoveryError as error:  # a statement failed: swap anyway, then fail loudly
                state_note, state_error = str(error), error
        except BaseException:
            try:
                drop_database(db, staging)
            except Exception:  # keep the original error; the staging copy is named for it
                logger.exception("could not drop the staging database %s", staging)
            raise
        if exists:
            logger.warning("replacing database %s (confirmed)", target)
            swap_databases(db, target, staging, keep_as)
            if request.drop_previous:
                drop_database(db, keep_as)
        else:
            rename_database(db, staging, target)
        if state_error is not None:
            raise state_error
    outcome = DatabaseRestoreOutcome(
        backup_id=manifest.backup_id,
        source_database=source,
        target_database=target,
        overwrote=exists,
        seconds=time.monotonic() - started,
        tables=len(manifest.tables),
        rows=sum(t.rows for t in manifest.tables),
        kept_previous_as=keep_as if exists and not request.drop_previous else None,
        roles_created=roles,
        roles_note=roles_note,
        checks_note=LEGACY_CHECKS if verdict is None else "; ".join(verdict.checks),
        database_state_note=state_note,
    )
    logger.info(
        "backup %s restored into %s (%d tables, %d rows, %.0fs); %s; %s",
        outcome.backup_id, target, outcome.tables, outcome.rows, outcome.seconds, roles_note,
        outcome.checks_note,
    )
    return outcome


@task(name="restore", cache_policy=NO_CACHE)
def restore_task(
    db: PostgresDatabase,
    store: S3BackupStore,
    decryption: GpgDecryptionKey,
    request: RestoreRequest,
) -> DatabaseRestoreOutcome:
    """Prefect task: :func:`run_restore` (no automatic retry: a restore is run by a person).

    Its progress artifact ``restore-progress-<target>`` counts the bytes of the backup
    downloaded (checksummed and decrypted on the way) against its size in the manifest:
    pg_restore then reads the decrypted copy, its parallel jobs each seeking to their own
    tables, so no byte count of that phase exists; the bar waits at 99 % through
    pg_restore, the checks and the swap (each logged) and shows 100 % once restored.

    Args:
        db: the server block.
        store: the S3 store.
        decryption: the private key block.
        request: what to restore where.

    Returns:
        What was restored.
    """
    check_request(db, request)  # a refused request leaves no artifact behind
    bar = ProgressArtifact(
        key=artifact_key("restore-progress", request.target_database),
        description=f"restore of {request.backup_id} into {request.target_database}: bytes "
        "of the backup downloaded vs its size (99 % while pg_restore and the checks run)",
        what=f"restore of {request.backup_id} into {request.target_database}",
    ).start()
    outcome = run_restore(db, store, decryption, request, progress=bar.update)
    bar.finish()
    return outcome
