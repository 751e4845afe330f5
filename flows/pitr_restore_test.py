"""The restore-test flow's PITR mode: newest backup + WAL to a target time, in a scratch dir."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect import flow

from blocks.loading import load_block
from blocks.pgbackrest import DatabaseHost, PgBackRestRepository
from blocks.postgres import PostgresDatabase
from tasks.recovery.pitr.commands import check_bucket_task, info_task
from tasks.recovery.pitr.markers import (
    read_markers_task,
    wait_archived_task,
    write_marker_task,
)
from tasks.recovery.pitr.recovery import (
    PitrRestoreTestReport,
    check_target_in_window,
    pitr_restore_test_task,
    publish_pitr_report,
)
from tasks.recovery.pitr.restore import format_target

ARCHIVE_WAIT_S = 300.0
"""How long the run's own marker may take to reach the archive (its WAL segment switched)."""


@flow(name="restore-test", log_prints=False)
def pitr_restore_test_flow(
    repository_block: str,
    database_block: str,
    host: DatabaseHost | None = None,
    target_time: datetime | None = None,
    *,
    target_minutes_ago: float = 5.0,
    lookback_hours: float = 24.0,
    scratch_root: str | None = None,
    timeout_minutes: float = 120.0,
    rto_objective_hours: float = 4.0,
    fail_on_problems: bool = True,
) -> PitrRestoreTestReport:
    """PITR restore test: newest backup + WAL to a target time, in a scratch directory.

    On the database host: restore as of ``target_time`` (default now minus
    ``target_minutes_ago``) into a new directory under ``scratch_root``, start a temporary
    PostgreSQL on it (own port, private socket, no TCP, archiving off), wait until recovery
    reached the target and promoted, then verify: every marker row (``veza_ops_pitr_marker``,
    written by ``pitr-check`` with a database block) committed before the target within
    ``lookback_hours`` is there, the marker this run writes after the target is not, and
    amcheck passes. The run's own marker is followed by ``pg_switch_wal()`` and waited for
    in the archive, so WAL past the target is there (the role of ``database_block`` needs
    ``pg_switch_wal``: superuser or EXECUTE granted). Then the server is stopped and the
    directory removed. Report (artifact ``restore-test-pitr-<stanza>``): RTO, recovered-to
    vs target, WAL replayed.

    Args:
        repository_block: name of the PgBackRestRepository block.
        database_block: name of the PostgresDatabase block of the archived database.
        host: the host's paths (default: Debian's).
        target_time: the recovery target, with its time zone (default: now - 5 min).
        target_minutes_ago: the default target's distance from now.
        lookback_hours: markers written this long before the target are checked.
        scratch_root: where the scratch directory goes (default: the parent of the host's
            data directory; it must be writable by the cluster's OS user).
        timeout_minutes: bound of the restore, the start and the replay, each.
        rto_objective_hours: RTO objective (guide: 4 h).
        fail_on_problems: fail the run when the report did not pass (default).

    Returns:
        The report.
    """
    repo = load_block(PgBackRestRepository, repository_block, field="repository_block")
    db = load_block(PostgresDatabase, database_block, field="database_block")
    host = host or DatabaseHost()
    target = target_time or datetime.now(UTC) - timedelta(minutes=target_minutes_ago)
    format_target(target)
    since = target - timedelta(hours=lookback_hours)
    check_bucket_task(repo)
    check_target_in_window(info_task(repo, host), target, datetime.now(UTC))
    # a commit after the target, archived now: recovery must see WAL past the target
    after = write_marker_task(db, "restore-test", switch_wal=True)
    wait_archived_task(db, after.segment or "", timeout_s=ARCHIVE_WAIT_S)
    source = read_markers_task(db, since)
    report = pitr_restore_test_task(
        repo, host, db, target, source_markers=source, after=after,
        scratch_root=scratch_root or str(Path(host.data_directory).parent),
        timeout_s=timeout_minutes * 60, rto_objective_s=rto_objective_hours * 3600,
        since=since,
    )
    publish_pitr_report(report)
    if fail_on_problems:
        report.raise_unless_passed()
    return report
