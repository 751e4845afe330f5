"""The prune-backups flow: grandfather-father-son retention of the store, dry-run by default."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from blocks.loading import load_block
from blocks.s3 import S3BackupStore
from errors import RecoveryError
from tasks.recovery.catalogue import artifact_key
from tasks.recovery.pruning import (
    check_spool,
    clean_spool_task,
    delete_backups_task,
    list_backups_task,
    publish_catalogue_task,
    split_legacy,
    verify_newest_task,
)
from tasks.recovery.retention import (
    RetentionPolicy,
    alarms,
    freezes,
    plan_retention_task,
    publish_decisions_task,
)


class PruneReport(BaseModel):
    """What a prune run decided and did."""

    dry_run: bool
    store_block: str
    database: str | None
    kept: list[str] = Field(description="database/backup_id of every backup kept")
    to_delete: list[str] = Field(
        description="database/backup_id of every backup planned for deletion"
    )
    deleted: list[str] = Field(
        description="database/backup_id actually deleted (empty in a dry run)"
    )
    frozen: list[str] = Field(
        description="databases left untouched: newest backup incomplete or fulls stopped"
    )
    frozen_why: dict[str, str] = Field(
        default_factory=dict, description="database -> why nothing of it was deleted"
    )
    spool_stale: list[str] = Field(default_factory=list, description="stray local files found")
    spool_removed: list[str] = Field(default_factory=list, description="stray local files removed")


@flow(name="prune-backups", log_prints=False)
def prune_backups(
    store_block: str,
    *,
    database: str | None = None,
    daily: int = 30,
    weekly: int = 12,
    monthly: int = 24,
    hourly_hours: int = 48,
    incomplete_grace_hours: int = 24,
    delete_incomplete: bool = False,
    max_full_age_h: int = 48,
    prune_legacy: bool = False,
    dry_run: bool = True,
    local_spool: str | None = None,
    spool_max_age_days: int = 7,
) -> PruneReport:
    """Apply the retention policy to the backups of a store (and clean a local spool).

    Nothing is deleted unless ``dry_run`` is False; the scheduled deployment passes False.

    Args:
        store_block: name of the S3BackupStore block.
        database: one database, or None for every database under the store's prefix.
        daily: newest full backup of each of the last N days is kept (guide: 30).
        weekly: newest full backup of each of the last N ISO weeks is kept (guide: 12).
        monthly: newest full backup of each of the last N months is kept (guide: 24).
        hourly_hours: hourly backups are kept this many hours (guide: 48).
        incomplete_grace_hours: an incomplete backup younger than this is never touched.
        delete_incomplete: also delete incomplete backups older than the grace period.
        max_full_age_h: while a database's newest full is older than this (hours; 0: no
            check), nothing of it is deleted and the run fails naming it and the age.
        prune_legacy: let retention delete legacy archives (the deployment guide's
            ``{db}_YYYYMMDD_HHMMSS.dump.gpg``) like other backups that are not veza-ops
            fulls; off by default: every legacy archive is kept.
        dry_run: plan and report only (default).
        local_spool: a local directory whose stray files older than ``spool_max_age_days``
            are removed (dry run applies too).
        spool_max_age_days: age limit of the local spool files.

    Returns:
        The report; the kept/deleted table is also published as an artifact.

    Raises:
        RecoveryError: after the other databases were pruned, when fulls of one stopped.
    """
    policy = RetentionPolicy(
        daily=daily, weekly=weekly, monthly=monthly, hourly_hours=hourly_hours,
        incomplete_grace_hours=incomplete_grace_hours, delete_incomplete=delete_incomplete,
        max_full_age_h=max_full_age_h,
    )
    if local_spool:
        check_spool(local_spool, max_age_days=spool_max_age_days)
    store = load_block(S3BackupStore, store_block, field="store_block")

    records = verify_newest_task(store, list_backups_task(store, database=database))
    now = datetime.now(UTC)
    planned, legacy_kept = split_legacy(records, prune_legacy=prune_legacy)
    decisions = plan_retention_task(planned, policy, now) + legacy_kept
    scope = database or "all"
    publish_catalogue_task(records, key=artifact_key("backup-catalogue", scope))
    publish_decisions_task(decisions, key=artifact_key("prune-backups", scope), dry_run=dry_run)

    doomed = [d.record for d in decisions if not d.keep]
    deleted: list[str] = []
    if doomed and not dry_run:
        deleted = delete_backups_task(store, doomed)
    elif doomed:
        get_run_logger().info("dry run: %d backups would be deleted", len(doomed))

    report = PruneReport(
        dry_run=dry_run, store_block=store_block, database=database,
        kept=[d.record.label for d in decisions if d.keep],
        to_delete=[r.label for r in doomed],
        deleted=deleted,
        frozen=sorted(freezes(decisions)),
        frozen_why=freezes(decisions),
    )
    for frozen_db, why in report.frozen_why.items():
        get_run_logger().warning("%s: %s", frozen_db, why)
    if local_spool:
        spool = clean_spool_task(
            local_spool, max_age_days=spool_max_age_days, now=now, dry_run=dry_run
        )
        report.spool_stale = spool.stale
        report.spool_removed = spool.removed
    stale = alarms(decisions)
    if stale:
        raise RecoveryError(
            "prune refused: " + "; ".join(stale.values()),
            hint="fix the nightly full backup of " + ", ".join(sorted(stale))
            + " (the other databases were pruned)",
        )
    return report
