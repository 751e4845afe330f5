"""The PITR flows: pitr-backup (one pgBackRest backup), pitr-expire (retention).

pitr-check lives in :mod:`flows.pitr_check`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from prefect import flow

from blocks.loading import load_block
from blocks.pgbackrest import DatabaseHost, PgBackRestRepository
from tasks.recovery.pitr.commands import (
    backup_task,
    check_bucket_task,
    check_task,
    expire_task,
    info_task,
    stanza_create_task,
)
from tasks.recovery.pitr.expiry import (
    ExpireReport,
    expire_report,
    publish_expire_report,
    retention_text,
)
from tasks.recovery.pitr.info import PitrBackup
from tasks.recovery.pitr.report import publish_backup_report

FLOW_TIMEOUT_S = 12 * 3600


@flow(name="pitr-backup", log_prints=False, timeout_seconds=FLOW_TIMEOUT_S)
def pitr_backup(
    repository_block: str,
    kind: Literal["full", "diff", "incr"] = "incr",
    host: DatabaseHost | None = None,
    *,
    create_stanza: bool = True,
    backup_timeout_minutes: float = 360.0,
    retries: int = 1,
    retry_delay_seconds: float = 60.0,
) -> PitrBackup:
    """Take one pgBackRest backup; the worker must run on the database host.

    pgBackRest reads the data directory itself, so the worker runs on the database host
    (as the cluster's OS user, or as root with ``host.os_user``). Steps: check the bucket
    (an unreachable or missing bucket fails here, before pgBackRest starts), create the
    stanza when missing (idempotent), ``check`` (WAL archiving works end to end), the
    backup, then publish ``info`` with the PITR window as an artifact.

    Args:
        repository_block: name of the PgBackRestRepository block.
        kind: ``full`` (weekly), ``diff`` (daily) or ``incr`` (hourly). A diff or incr
            without any full becomes a full (pgBackRest's rule; the result says so).
        host: where PostgreSQL and pgBackRest live (default: Debian's paths, port 5432).
        create_stanza: run ``stanza-create`` first (idempotent; turn off once set up if the
            credentials cannot write the repository's info files).
        backup_timeout_minutes: the backup is killed after this long.
        retries: extra attempts of the backup after a transient failure (lock held...).
        retry_delay_seconds: pause between attempts.

    Returns:
        The backup as ``info`` lists it.
    """
    repo = load_block(PgBackRestRepository, repository_block, field="repository_block")
    host = host or DatabaseHost()
    check_bucket_task(repo)
    if create_stanza:
        stanza_create_task(repo, host)
    check_task(repo, host)
    taken = backup_task.with_options(retries=retries, retry_delay_seconds=retry_delay_seconds)(
        repo, host, kind, backup_timeout_minutes * 60
    )
    publish_backup_report(taken, info_task(repo, host))
    return taken


@flow(name="pitr-expire", log_prints=False, timeout_seconds=2 * 3600)
def pitr_expire(repository_block: str, host: DatabaseHost | None = None) -> ExpireReport:
    """Apply the repository's retention (``pgbackrest expire``) and report what went.

    The retention is the block's: ``pitr_window_days`` (default 30: any moment of the last
    30 days stays restorable) or ``retention_full_count``. pgBackRest never expires the newest
    full backup; the flow checks it is still there afterwards and fails otherwise.
    pgBackRest also expires after every backup: this run applies a changed retention at
    once and publishes the artifact ``pitr-expire-<stanza>``.

    Args:
        repository_block: name of the PgBackRestRepository block.
        host: where pgBackRest runs (default: Debian's paths); no PostgreSQL is needed.

    Returns:
        What was expired and what remains.
    """
    repo = load_block(PgBackRestRepository, repository_block, field="repository_block")
    host = host or DatabaseHost()
    check_bucket_task(repo)
    before = info_task(repo, host)
    ran_at = datetime.now(UTC)
    after = expire_task(repo, host)
    report = expire_report(before, after, retention=retention_text(repo), ran_at=ran_at)
    publish_expire_report(report)
    return report
