"""The prune-backups flow: grandfather-father-son retention of the store, dry-run by default."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from blocks.loading import load_block
from blocks.s3 import S3BackupStore
from tasks.recovery.catalogue import artifact_key
from tasks.recovery.pruning import (
    check_spool,
    clean_spool_task,
    delete_backups_task,
    list_backups_task,
    publish_catalogue_task,
    verify_newest_task,
)
from tasks.recovery.retention import RetentionPolicy, plan_retention_task, publish_decisions_task


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
        description="databases left untouched: their newest backup is incomplete"
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
        dry_run: plan and report only (default).
        local_spool: a local directory whose stray files older than ``spool_max_age_days``
            are removed (dry run applies too).
        spool_max_age_days: age limit of the local spool files.

    Returns:
        The report; the kept/deleted table is also published as an artifact.
    """
    policy = RetentionPolicy(
        daily=daily,
        weekly=weekly,
        monthly=monthly,
        hourly_hours=hourly_hours,
        incomplete_grace_hours=incomplete_grace_hours,
        delete_incomplete=delete_incomplete,
    )
    if local_spool:
        check_spool(local_spool, max_age_days=spool_max_age_days)
    store = load_block(S3BackupStore, store_block, field="store_block")

    records = verify_newest_task(store, list_backups_task(store, database=database))
    now = datetime.now(UTC)
    decisions = plan_retention_task(records, policy, now)
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
        dry_run=dry_run,
        store_block=store_block,
        database=database,
        kept=[d.record.label for d in decisions if d.keep],
        to_delete=[r.label for r in doomed],
        deleted=deleted,
        frozen=sorted({d.record.database for d in decisions if d.reasons[0].startswith("frozen")}),
    )
    if local_spool:
        spool = clean_spool_task(
            local_spool, max_age_days=spool_max_age_days, now=now, dry_run=dry_run
        )
        report.spool_stale = spool.stale
        report.spool_removed = spool.removed
    return report
