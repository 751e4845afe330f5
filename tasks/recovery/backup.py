"""One backup attempt: pg_dump | zstd | gpg streamed into a multipart upload, manifest last."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from blocks.gpg import GpgEncryption
from blocks.postgres import PostgresDatabase
from blocks.s3 import S3BackupStore
from errors import retry_on_transient
from errors.s3 import s3_errors
from tasks.recovery.catalogue import artifact_key, check_bucket
from tasks.recovery.manifest import (
    DATA_NAME,
    MANIFEST_NAME,
    BackupKind,
    Manifest,
    backup_id,
    backup_prefix,
)
from tasks.recovery.pipeline import Pipeline, Stage
from tasks.recovery.postgres import exported_snapshot
from tasks.recovery.upload import upload_stream

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]


class BackupOutcome(BaseModel):
    """A finished backup: its manifest plus how the upload went."""

    manifest: Manifest
    parts: int
    seconds: float


def dump_stages(
    db: PostgresDatabase, *, snapshot_id: str, gnupghome: Path, recipients: list[str]
) -> list[Stage]:
    """The processes of a backup: no secret in any argv (the password is in the env).

    Args:
        db: the database block.
        snapshot_id: exported snapshot pg_dump must use.
        gnupghome: a GNUPGHOME with the recipients' public keys.
        recipients: their fingerprints.

    Returns:
        pg_dump (its output counted), zstd, gpg.
    """
    gpg = [
        "gpg", "--batch", "--no-tty", "--quiet", "--homedir", str(gnupghome),
        "--trust-model", "always", "--compress-algo", "none", "--encrypt",
    ]
    for fpr in recipients:
        gpg += ["--recipient", fpr]
    return [
        Stage(
            "pg_dump",
            ["pg_dump", "--format=custom", "--compress=0", "--no-password",
             f"--snapshot={snapshot_id}"],
            env=db.subprocess_env(),
            count_output=True,
        ),
        Stage("zstd", ["zstd", "-T0", "-3", "-q", "-c"]),
        Stage("gpg", [*gpg, "--output", "-"]),
    ]


def run_backup(
    db: PostgresDatabase,
    store: S3BackupStore,
    encryption: GpgEncryption,
    *,
    kind: BackupKind = "full",
    on_progress: ProgressFn | None = None,
    client: Any = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BackupOutcome:
    """Back up ``db`` into ``store``, encrypted to ``encryption``'s recipients.

    Inputs are checked first (keys, bucket, database login), before anything is written.
    Then ``pg_dump`` runs in a snapshot exported by a REPEATABLE READ transaction in which
    the rows were counted; its output goes through zstd and gpg straight into a multipart
    upload. Every exit status is checked before the upload is completed; any failure
    aborts it. The manifest is uploaded last.

    Args:
        db: the database block.
        store: the S3 store block.
        encryption: the recipients block.
        kind: full or hourly.
        on_progress: called with (bytes uploaded, estimated total) after each part.
        client: an S3 client to use instead of ``store.get_client()``.
        now: clock (injected by tests).

    Returns:
        The manifest and upload facts.
    """
    started = now()
    bid = backup_id(started, kind)
    root = backup_prefix(store.prefix, db.dbname, bid)
    data_key, manifest_key = root + DATA_NAME, root + MANIFEST_NAME
    with encryption.keyring() as keyring:
        client = client if client is not None else store.get_client()
        check_bucket(client, store.bucket)
        with exported_snapshot(db) as snap:
            logger.info("backup %s of %s: snapshot %s", bid, db.dbname, snap.snapshot_id)
            stages = dump_stages(
                db, snapshot_id=snap.snapshot_id, gnupghome=keyring.home,
                recipients=keyring.fingerprints,
            )
            estimate = max(snap.database_bytes, 1)

            def progress(size: int) -> None:
                if on_progress is not None:
                    on_progress(size, estimate)

            with Pipeline(stages) as pipe:

                def all_exited_zero() -> None:
                    pipe.check(timeout=600)

                upload = upload_stream(
                    client,
                    bucket=store.bucket,
                    key=data_key,
                    stream=pipe.output,
                    part_size=store.part_size,
                    max_inflight=store.max_inflight_parts,
                    extra_args=store.upload_extra_args(),
                    on_part=progress,
                    before_complete=all_exited_zero,
                )
                plain_bytes = pipe.counted("pg_dump")
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
            tables=snap.tables,
            tool_version=f"veza-ops {_dist_version('veza-ops')}",
            snapshot_consistent=True,
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
        with contextlib.suppress(Exception):
            client.delete_object(Bucket=store.bucket, Key=data_key)
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
) -> BackupOutcome:
    """Prefect task: one whole backup attempt (a retry starts a new backup from scratch).

    Args:
        db: the database block.
        store: the store block.
        encryption: the recipients block.
        kind: full or hourly.

    Returns:
        The outcome; a progress artifact is updated while it runs.
    """
    log = get_run_logger()
    progress_id = create_progress_artifact(  # sync context: returns the UUID
        progress=0.0,
        key=artifact_key("backup-progress", db.dbname),
        description=f"backup of {db.dbname} (bytes uploaded vs database size)",
    )
    assert isinstance(progress_id, UUID)

    def on_progress(uploaded: int, estimate: int) -> None:
        log.info("backup of %s: %d MiB uploaded", db.dbname, uploaded >> 20)
        update_progress_artifact(progress_id, min(99.0, 100.0 * uploaded / estimate))

    outcome = run_backup(db, store, encryption, kind=kind, on_progress=on_progress)
    update_progress_artifact(progress_id, 100.0)
    m = outcome.manifest
    log.info(
        "backup %s of %s uploaded to s3://%s/%s (%d bytes, %d parts)",
        m.backup_id, m.database, store.bucket, m.data_key, m.size_bytes, outcome.parts,
    )
    return outcome


@task(name="publish-backup-result", cache_policy=NO_CACHE)
def publish_backup_table(outcome: BackupOutcome) -> None:
    """Prefect task: the table artifact of a finished backup.

    Args:
        outcome: the backup outcome.
    """
    m = outcome.manifest
    rows: list[dict[str, Any]] = [
        {"item": "backup id", "value": m.backup_id},
        {"item": "database", "value": m.database},
        {"item": "server version", "value": m.server_version},
        {"item": "started", "value": m.started_at.isoformat()},
        {"item": "finished", "value": m.finished_at.isoformat()},
        {"item": "duration (s)", "value": round(outcome.seconds, 1)},
        {"item": "dump bytes (plain)", "value": m.plain_bytes},
        {"item": "uploaded bytes", "value": m.size_bytes},
        {"item": "sha256", "value": m.sha256},
        {"item": "parts", "value": outcome.parts},
        {"item": "recipients", "value": ", ".join(m.recipients)},
        {"item": "tables", "value": len(m.tables)},
        {"item": "rows", "value": sum(t.rows for t in m.tables)},
    ]
    create_table_artifact(
        table=rows,
        key=artifact_key("backup", m.database),
        description=f"backup {m.backup_id} of {m.database}",
    )
