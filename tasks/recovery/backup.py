"""One backup attempt: pg_dump | zstd | gpg streamed into a multipart upload, manifest last."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from blocks.gpg import GpgEncryption
from blocks.postgres import PostgresDatabase
from blocks.s3 import S3BackupStore
from errors import retry_on_transient
from errors.s3 import s3_errors
from tasks.logs import ModuleLogger
from tasks.recovery.catalogue import artifact_key, check_bucket
from tasks.recovery.content import surveying
from tasks.recovery.dbstate import read_database_state
from tasks.recovery.manifest import (
    DATA_NAME,
    GLOBALS_NAME,
    MANIFEST_NAME,
    STATE_NAME,
    BackupKind,
    EncryptedObject,
    GlobalsObject,
    Manifest,
    backup_id,
    backup_prefix,
)
from tasks.recovery.naming import check_database_name
from tasks.recovery.pipeline import Pipeline, Stage
from tasks.recovery.postgres import exported_snapshot
from tasks.recovery.progress import ProgressArtifact, ProgressFn, dump_estimate_bytes
from tasks.recovery.upload import UploadResult, part_size_for, upload_stream

logger = ModuleLogger(__name__)  # run logger inside a run: lines reach the UI


class BackupOutcome(BaseModel):
    """A finished backup: its manifest plus how the upload went."""

    manifest: Manifest
    parts: int
    seconds: float


def _gpg_stage(gnupghome: Path, recipients: list[str]) -> Stage:
    gpg = [
        "gpg", "--batch", "--no-tty", "--quiet", "--homedir", str(gnupghome),
        "--trust-model", "always", "--compress-algo", "none", "--encrypt",
    ]
    for fpr in recipients:
        gpg += ["--recipient", fpr]
    return Stage("gpg", [*gpg, "--output", "-"])


def dump_stages(
    db: PostgresDatabase, *, env: dict[str, str], snapshot_id: str, gnupghome: Path,
    recipients: list[str],
) -> list[Stage]:
    """The processes of a backup: no secret in any argv or environment.

    Args:
        db: the database block.
        env: pg_dump's environment, from ``db.libpq_env()`` (the password in a passfile).
        snapshot_id: exported snapshot pg_dump must use.
        gnupghome: a GNUPGHOME with the recipients' public keys.
        recipients: their fingerprints.

    Returns:
        pg_dump (its output counted), zstd, gpg.
    """
    return [
        Stage(
            "pg_dump",
            ["pg_dump", "--format=custom", "--compress=0", "--no-password",
             f"--snapshot={snapshot_id}",
             f"--lock-wait-timeout={db.lock_wait_timeout_s * 1000}"],
            env=env,
            count_output=True,
        ),
        Stage("zstd", ["zstd", "-T0", "-3", "-q", "-c"]),
        _gpg_stage(gnupghome, recipients),
    ]


def globals_stages(
    *, env: dict[str, str], role_passwords: bool, gnupghome: Path, recipients: list[str]
) -> list[Stage]:
    """``pg_dumpall --globals-only | zstd | gpg``: the cluster's roles and memberships.

    Password hashes are left out (``--no-role-passwords``) unless ``role_passwords``: a
    non-superuser can then dump the roles too (pg_roles instead of pg_authid).

    Args:
        env: pg_dumpall's environment, from ``db.libpq_env()`` (any database of the server).
        role_passwords: include the roles' password hashes (operator opt-in).
        gnupghome: a GNUPGHOME with the recipients' public keys.
        recipients: their fingerprints.

    Returns:
        pg_dumpall, zstd, gpg.
    """
    argv = ["pg_dumpall", "--globals-only", "--no-password", "--no-tablespaces"]
    if not role_passwords:
        argv.append("--no-role-passwords")
    return [
        Stage("pg_dumpall", argv, env=env, count_output=True),
        Stage("zstd", ["zstd", "-q", "-c"]),
        _gpg_stage(gnupghome, recipients),
    ]


def stream_to_store(
    client: Any,
    store: S3BackupStore,
    key: str,
    stages: list[Stage],
    *,
    on_output: Callable[[int], None] | None = None,
    estimate_bytes: int = 0,
    also_before_complete: Callable[[], object] | None = None,
    input_data: bytes | None = None,
) -> tuple[UploadResult, int]:
    """Run ``stages`` and stream the last one's output into ``key`` (multipart, checked).

    Every exit status is checked before the upload is completed; any failure aborts it.

    Args:
        client: boto3 S3 client.
        store: the store block (bucket, part size, SSE settings).
        key: the object key.
        stages: the pipeline; its first stage's output is counted when it says so.
        on_output: called after each part with the bytes the first stage produced so far
            (needs its ``count_output``): the backup's progress, in pg_dump's bytes.
        estimate_bytes: expected size (the database's): parts grow so that 10,000 suffice.
        also_before_complete: called after the exit statuses, before completing; raising
            aborts the upload (the backup's content survey is waited for there).
        input_data: bytes fed to the first stage's stdin (a small document to encrypt).

    Returns:
        The upload result and the bytes the first stage produced (0 when not counted).
    """
    counted = stages[0].count_output
    stdin = subprocess.PIPE if input_data is not None else subprocess.DEVNULL
    with Pipeline(stages, stdin=stdin) as pipe:
        if input_data is not None:
            threading.Thread(target=_feed, args=(pipe.input, input_data), daemon=True).start()

        def on_part(_uploaded: int) -> None:
            if on_output is not None and counted:
                on_output(pipe.counted(stages[0].name))

        def all_exited_zero() -> None:
            pipe.check(timeout=600)
            if also_before_complete is not None:
                also_before_complete()

        upload = upload_stream(
            client,
            bucket=store.bucket,
            key=key,
            stream=pipe.output,
            part_size=part_size_for(estimate_bytes, minimum=store.part_size),
            max_inflight=store.max_inflight_parts,
            extra_args=store.upload_extra_args(),
            on_part=on_part,
            before_complete=all_exited_zero,
        )
        return upload, pipe.counted(stages[0].name) if counted else 0


def _feed(stream: Any, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, ValueError):  # the stage died: its status says
        stream.write(data)
        stream.close()


def run_backup(
    db: PostgresDatabase,
    store: S3BackupStore,
    encryption: GpgEncryption,
    *,
    kind: BackupKind = "full",
    role_passwords: bool = False,
    on_progress: ProgressFn | None = None,
    client: Any = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BackupOutcome:
    """Back up ``db`` into ``store``, encrypted to ``encryption``'s recipients.

    Inputs are checked first (keys, bucket, database login), before anything is written.
    Then ``pg_dump`` runs in a snapshot exported by a REPEATABLE READ transaction; its
    output goes through zstd and gpg straight into a multipart upload. At the same time a
    second connection imports that snapshot and records, per table, the row count and a
    content checksum, plus the sequences and the large objects (``content.surveying``: its
    tables are locked and sequences read before pg_dump starts, the scans overlap the
    dump). Every exit status and the survey are checked before the upload is completed;
    any failure aborts it. The cluster's globals (roles, memberships) follow the same path
    into a second object, and the database's owner, settings and grants
    (:mod:`tasks.recovery.dbstate`) into a third. The manifest, recording all of it, is
    uploaded last.

    Args:
        db: the database block.
        store: the S3 store block.
        encryption: the recipients block.
        kind: full or hourly.
        role_passwords: keep the roles' password hashes in the globals object (opt-in).
        on_progress: called as each part is read for upload with (bytes pg_dump wrote so
            far, their estimated total: :func:`tasks.recovery.progress.dump_estimate_bytes`).
        client: an S3 client to use instead of ``store.get_client()``.
        now: clock (injected by tests).

    Returns:
        The manifest and upload facts.
    """
    check_database_name(db.dbname, field="database_block")  # it becomes a key segment
    started = now()
    bid = backup_id(started, kind)
    root = backup_prefix(store.prefix, db.dbname, bid)
    data_key, manifest_key = root + DATA_NAME, root + MANIFEST_NAME
    with encryption.keyring() as keyring:
        client = client if client is not None else store.get_client()
        check_bucket(client, store.bucket)
        state = read_database_state(db)
        with (
            exported_snapshot(db) as snap,
            surveying(db, snap.snapshot_id) as survey,
            db.libpq_env() as env,
        ):
            logger.info("backup %s of %s: snapshot %s", bid, db.dbname, snap.snapshot_id)
            stages = dump_stages(
                db, env=env, snapshot_id=snap.snapshot_id, gnupghome=keyring.home,
                recipients=keyring.fingerprints,
            )
            dump_total = dump_estimate_bytes(db) if on_progress is not None else 0

            def progress(dumped: int) -> None:
                if on_progress is not None:
                    on_progress(dumped, dump_total)

            upload, plain_bytes = stream_to_store(
                client, store, data_key, stages, on_output=progress,
                estimate_bytes=max(snap.database_bytes, 1), also_before_complete=survey.result,
            )
            content = survey.result()
            globals_upload, _ = stream_to_store(
                client, store, root + GLOBALS_NAME,
                globals_stages(env=env, role_passwords=role_passwords, gnupghome=keyring.home,
                               recipients=keyring.fingerprints),
            )
            state_upload, _ = stream_to_store(
                client, store, root + STATE_NAME,
                [Stage("zstd", ["zstd", "-q", "-c"]),
                 _gpg_stage(keyring.home, keyring.fingerprints)],
                input_data=state.model_dump_json().encode(),
            )
        finished = now()
        manifest = Manifest(
            backup_id=bid,
            kind=kind,
            database=db.dbname,
            server_version=snap.server_version,
            started_at=started,
            finished_at=finished,
            data_key=data_key,
            size_bytes=upload.size,
            sha256=upload.sha256,
            plain_bytes=plain_bytes,
            recipients=keyring.fingerprints,
            tables=content.tables,
            tool_version=f"veza-ops {_dist_version('veza-ops')}",
            snapshot_consistent=True,
            globals=GlobalsObject(
                key=globals_upload.key, size_bytes=globals_upload.size,
                sha256=globals_upload.sha256, role_passwords=role_passwords,
                bootstrap_role=snap.bootstrap_role,
            ),
            encoding=snap.encoding or None,
            lc_collate=snap.lc_collate or None,
            lc_ctype=snap.lc_ctype or None,
            content_method=content.method,
            sequences=content.sequences,
            large_objects=content.large_objects,
            database_state=EncryptedObject(key=state_upload.key, size_bytes=state_upload.size,
                                           sha256=state_upload.sha256),
        )
    body = json.dumps(manifest.model_dump(mode="json"), indent=2).encode()
    try:
        with s3_errors(action="upload manifest", bucket=store.bucket, key=manifest_key):
            client.put_object(
                Bucket=store.bucket, Key=manifest_key, Body=body,
                ContentType="application/json", **store.upload_extra_args(),
            )
    except Exception:
        logger.warning("manifest upload failed; deleting s3://%s/%s", store.bucket, data_key)
        for key in (data_key, root + GLOBALS_NAME, root + STATE_NAME):
            with contextlib.suppress(Exception):
                client.delete_object(Bucket=store.bucket, Key=key)
        raise
    logger.info("backup %s complete: %d bytes, sha256 %s", bid, upload.size, upload.sha256)
    return BackupOutcome(
        manifest=manifest, parts=upload.parts, seconds=(finished - started).total_seconds()
    )


@task(
    name="backup-attempt",
    retries=2,
    retry_delay_seconds=30,
    retry_condition_fn=retry_on_transient,
    cache_policy=NO_CACHE,
)
def backup_task(
    db: PostgresDatabase,
    store: S3BackupStore,
    encryption: GpgEncryption,
    *,
    kind: BackupKind = "full",
    role_passwords: bool = False,
) -> BackupOutcome:
    """Prefect task: one whole backup attempt (a retry starts a new backup from scratch).

    Args:
        db: the database block.
        store: the store block.
        encryption: the recipients block.
        kind: full or hourly.
        role_passwords: keep the roles' password hashes in the globals (opt-in).

    Returns:
        The outcome; a progress artifact (throttled; its failures only logged) shows the
        bytes pg_dump wrote against the tables' data size, 100 % once the backup is done.
    """
    log = get_run_logger()
    bar = ProgressArtifact(
        key=artifact_key("backup-progress", db.dbname),
        description=f"backup of {db.dbname}: bytes pg_dump wrote vs the tables' data size "
        "(an estimate: 99 % until the backup is complete)",
        what=f"backup of {db.dbname}",
    ).start()
    outcome = run_backup(
        db, store, encryption, kind=kind, role_passwords=role_passwords, on_progress=bar.update
    )
    bar.finish()
    m = outcome.manifest
    log.info(
        "backup %s of %s uploaded to s3://%s/%s (%d bytes, %d parts)",
        m.backup_id, m.database, store.bucket, m.data_key, m.size_bytes, outcome.parts,
    )
    return outcome
