"""The restore test: restore a backup into a scratch database, verify it, measure RTO/RPO."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field, computed_field

from blocks.gpg import GpgDecryptionKey
from blocks.postgres import PostgresDatabase
from blocks.s3 import S3BackupStore
from errors import retry_on_transient
from tasks.recovery.fetching import check_key_matches, fetched_dump, pg_restore
from tasks.recovery.integrity import check_against_manifest, run_amcheck, run_smoke
from tasks.recovery.postgres import create_database, database_exists, drop_database
from tasks.recovery.store import check_bucket, find_backup, previous_backup

logger = logging.getLogger(__name__)
HOUR = 3600.0


class RestoreTestReport(BaseModel):
    """Outcome of a restore test, rendered as the markdown report artifact."""

    backup_id: str
    database: str
    scratch_database: str
    tested_at: datetime
    backup_finished_at: datetime
    size_bytes: int
    tables_checked: int
    rows_checked: int
    table_mismatches: list[str] = Field(default_factory=list)
    amcheck_indexes: int | None = Field(description="btree indexes verified; None = unavailable")
    amcheck_failures: list[str] = Field(default_factory=list)
    smoke_queries: int = 0
    smoke_failures: list[str] = Field(default_factory=list)
    rto_seconds: float = Field(description="restore wall time: download to restored")
    rpo_seconds: float = Field(description="age of the backup at test time")
    backup_interval_seconds: float | None = Field(
        default=None, description="time since the previous complete backup"
    )
    rto_objective_seconds: float = 4 * HOUR
    rpo_objective_seconds: float = 1 * HOUR

    @computed_field  # type: ignore[prop-decorator]
    @property
    def integrity_ok(self) -> bool:
        """Counts, amcheck and smoke SQL all passed."""
        return not (self.table_mismatches or self.amcheck_failures or self.smoke_failures)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def rto_met(self) -> bool:
        """RTO within its objective."""
        return self.rto_seconds <= self.rto_objective_seconds

    @computed_field  # type: ignore[prop-decorator]
    @property
    def rpo_met(self) -> bool:
        """RPO (and the backup interval) within the objective."""
        interval_ok = (
            self.backup_interval_seconds is None
            or self.backup_interval_seconds <= self.rpo_objective_seconds
        )
        return self.rpo_seconds <= self.rpo_objective_seconds and interval_ok

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        """Integrity checks passed and both objectives were met."""
        return self.integrity_ok and self.rto_met and self.rpo_met


def scratch_name(backup_id: str) -> str:
    """Name of the scratch database for a backup, e.g. ``restore_test_20261127t030000z_full``."""
    return "restore_test_" + re.sub(r"[^a-z0-9_]", "_", backup_id.lower())[:48]


def run_restore_test(
    db: PostgresDatabase,
    store: S3BackupStore,
    decryption: GpgDecryptionKey,
    *,
    backup_id: str | None = None,
    smoke_sql: list[str] | None = None,
    jobs: int = 2,
    rto_objective_hours: float = 4.0,
    rpo_objective_hours: float = 1.0,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RestoreTestReport:
    """Restore a backup of ``db.dbname`` into a scratch database on the same server and check it.

    Checks (keys, bucket, backup id, login) come first; the scratch database is dropped
    whatever happens. Integrity problems are reported (not raised) so the report can be
    published; the caller fails the run when ``passed`` is False.

    Args:
        db: the server and source database name.
        store: the S3 store.
        decryption: the private key block.
        backup_id: a backup id, or None for the newest complete backup.
        smoke_sql: operator queries that must each return a truthy first column.
        jobs: pg_restore parallel jobs.
        rto_objective_hours: RTO objective (the guide: 4 h).
        rpo_objective_hours: RPO objective (the guide: 1 h).
        now: clock (injected by tests).

    Returns:
        The report.
    """
    with decryption.keyring() as keyring:
        client = store.get_client()
        check_bucket(client, store.bucket)
        manifest = find_backup(client, store.bucket, store.prefix, db.dbname, backup_id)
        check_key_matches(keyring, manifest)
        previous = previous_backup(
            client, store.bucket, store.prefix, db.dbname, manifest.backup_id
        )
        scratch = scratch_name(manifest.backup_id)
        database_exists(db, "postgres")  # login check before any change
        started = time.monotonic()
        try:
            with fetched_dump(
                client, bucket=store.bucket, manifest=manifest, decryption=decryption,
                keyring=keyring,
            ) as dump:
                drop_database(db, scratch)  # a leftover of a crashed run
                create_database(db, scratch)
                pg_restore(db, scratch, dump, jobs=jobs)
            rto = time.monotonic() - started
            tested_at = now()
            mismatches = check_against_manifest(db, scratch, manifest)
            indexes, amcheck_failures = run_amcheck(db, scratch)
            smoke_failures = run_smoke(db, scratch, smoke_sql or [])
        finally:
            drop_database(db, scratch)
    return RestoreTestReport(
        backup_id=manifest.backup_id,
        database=manifest.database,
        scratch_database=scratch,
        tested_at=tested_at,
        backup_finished_at=manifest.finished_at,
        size_bytes=manifest.size_bytes,
        tables_checked=len(manifest.tables),
        rows_checked=sum(t.rows for t in manifest.tables),
        table_mismatches=mismatches,
        amcheck_indexes=indexes,
        amcheck_failures=amcheck_failures,
        smoke_queries=len(smoke_sql or []),
        smoke_failures=smoke_failures,
        rto_seconds=rto,
        rpo_seconds=(tested_at - manifest.finished_at).total_seconds(),
        backup_interval_seconds=(
            (manifest.finished_at - previous.finished_at).total_seconds() if previous else None
        ),
        rto_objective_seconds=rto_objective_hours * HOUR,
        rpo_objective_seconds=rpo_objective_hours * HOUR,
    )


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s"


def render_markdown(report: RestoreTestReport) -> str:
    """The restore-test report as markdown (the artifact).

    Args:
        report: the report.

    Returns:
        Markdown text.
    """
    verdict = "PASSED" if report.passed else "FAILED"
    amcheck = (
        "not available" if report.amcheck_indexes is None
        else f"{report.amcheck_indexes} btree indexes, {len(report.amcheck_failures)} failures"
    )
    lines = [
        f"# Restore test of `{report.database}`: {verdict}",
        "",
        f"Backup `{report.backup_id}` ({report.size_bytes} bytes), restored into "
        f"`{report.scratch_database}` (dropped afterwards) at "
        f"{report.tested_at:%Y-%m-%d %H:%M:%SZ}.",
        "",
        "| check | measured | objective | result |",
        "|---|---|---|---|",
        f"| RTO (restore wall time) | {_dur(report.rto_seconds)} | "
        f"{_dur(report.rto_objective_seconds)} | {'ok' if report.rto_met else 'MISSED'} |",
        f"| RPO (backup age) | {_dur(report.rpo_seconds)} | "
        f"{_dur(report.rpo_objective_seconds)} | {'ok' if report.rpo_met else 'MISSED'} |",
        f"| backup interval | {_dur(report.backup_interval_seconds)} | "
        f"{_dur(report.rpo_objective_seconds)} | |",
        f"| tables / rows vs manifest | {report.tables_checked} / {report.rows_checked} | equal | "
        f"{'ok' if not report.table_mismatches else 'MISMATCH'} |",
        f"| amcheck | {amcheck} | no failure | "
        f"{'ok' if not report.amcheck_failures else 'FAILED'} |",
        f"| smoke SQL | {report.smoke_queries} queries | all truthy | "
        f"{'ok' if not report.smoke_failures else 'FAILED'} |",
    ]
    problems = report.table_mismatches + report.amcheck_failures + report.smoke_failures
    if problems:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in problems]
    return "\n".join(lines) + "\n"


@task(
    name="restore-test",
    retries=1,
    retry_delay_seconds=60,
    retry_condition_fn=retry_on_transient,
    cache_policy=NO_CACHE,
)
def restore_test_task(
    db: PostgresDatabase,
    store: S3BackupStore,
    decryption: GpgDecryptionKey,
    *,
    backup_id: str | None = None,
    smoke_sql: list[str] | None = None,
    jobs: int = 2,
    rto_objective_hours: float = 4.0,
    rpo_objective_hours: float = 1.0,
) -> RestoreTestReport:
    """Prefect task: :func:`run_restore_test`.

    Args:
        db: the database block.
        store: the store block.
        decryption: the private key block.
        backup_id: a backup id or None for the newest.
        smoke_sql: operator smoke queries.
        jobs: pg_restore jobs.
        rto_objective_hours: RTO objective.
        rpo_objective_hours: RPO objective.

    Returns:
        The report.
    """
    report = run_restore_test(
        db, store, decryption, backup_id=backup_id, smoke_sql=smoke_sql, jobs=jobs,
        rto_objective_hours=rto_objective_hours, rpo_objective_hours=rpo_objective_hours,
    )
    get_run_logger().info(
        "restore test of backup %s: %s (RTO %.0fs, RPO %.0fs)",
        report.backup_id, "passed" if report.passed else "FAILED",
        report.rto_seconds, report.rpo_seconds,
    )
    return report


@task(name="publish-restore-test-report", cache_policy=NO_CACHE)
def publish_report(report: RestoreTestReport) -> str:
    """Prefect task: the markdown report artifact.

    Args:
        report: the report.

    Returns:
        The markdown.
    """
    text = render_markdown(report)
    slug = re.sub(r"[^a-z0-9-]+", "-", report.database.lower()).strip("-")
    create_markdown_artifact(
        markdown=text, key=f"restore-test-{slug}"[:100],
        description=f"restore test of backup {report.backup_id}",
    )
    return text
