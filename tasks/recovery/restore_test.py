"""The restore test: restore a backup into a scratch database, verify it, measure RTO/RPO."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field, computed_field

from blocks.gpg import GpgDecryptionKey
from blocks.postgres import PostgresDatabase
from blocks.s3 import S3BackupStore
from errors import IntegrityError, RecoveryError, retry_on_transient
from tasks.logs import ModuleLogger
from tasks.recovery.catalogue import artifact_key, check_bucket
from tasks.recovery.dbstate import DatabaseState, fetch_database_state, replay_database_state
from tasks.recovery.fetching import check_key_matches, fetched_dump
from tasks.recovery.integrity import (
    ContentVerdict,
    check_against_manifest,
    run_amcheck,
    run_smoke,
)
from tasks.recovery.manifest import LEGACY_CHECKS
from tasks.recovery.postgres import database_exists, drop_database
from tasks.recovery.progress import ProgressArtifact, ProgressFn
from tasks.recovery.restoring import OwnerMode, recreate_and_restore, restore_roles
from tasks.recovery.selection import find_backup, previous_backup

logger = ModuleLogger(__name__)  # run logger inside a run: lines reach the UI
HOUR = 3600.0


class RestoreTestRequest(BaseModel):
    """What the restore-test flow was asked to check (its parameters, less the block names)."""

    backup_id: str | None = Field(
        default=None, description="the backup to test (default: the newest complete one)"
    )
    smoke_sql: list[str] = Field(
        default_factory=list, description="queries that must each return a truthy first column"
    )
    jobs: int = Field(default=2, description="pg_restore parallel jobs")
    rto_objective_hours: float = Field(default=4.0, description="RTO objective (guide: 4 h)")
    rpo_objective_hours: float = Field(default=1.0, description="RPO objective (guide: 1 h)")
    owner_mode: OwnerMode = Field(
        default="recreate-roles",
        description="recreate-roles (missing roles created first) or no-owner",
    )


class RestoreTestReport(BaseModel):
    """Outcome of a restore test, rendered as the markdown report artifact."""

    backup_id: str
    database: str
    scratch_database: str
    scratch_server: str = Field(default="", description="host:port the scratch copy was on")
    roles_note: str = Field(default="", description="what the roles step did")
    database_state_note: str = Field(
        default="", description="the database's owner, settings, grants replayed on the copy")
    state_failures: list[str] = Field(
        default_factory=list, description="database state the copy could not be given")
    tested_at: datetime
    backup_finished_at: datetime
    size_bytes: int
    tables_checked: int
    rows_checked: int
    table_mismatches: list[str] = Field(
        default_factory=list,
        description="every content difference: row counts, table checksums, sequences, "
        "large objects (each table, sequence or object named)",
    )
    content_checks: list[str] = Field(
        default_factory=list,
        description="one line per content check: compared, or 'not recorded' in the manifest",
    )
    amcheck_indexes: int | None = Field(description="btree indexes verified; None = unavailable")
    amcheck_failures: list[str] = Field(default_factory=list)
    amcheck_note: str = Field(default="", description="amcheck's one-line summary")
    smoke_queries: int = 0
    smoke_failures: list[str] = Field(default_factory=list)
    rto_seconds: float = Field(description="restore wall time: download to restored")
    started_at: datetime | None = Field(default=None, description="when the test started")
    rpo_seconds: float = Field(description="age of the backup when the test started")
    backup_interval_seconds: float | None = Field(
        default=None, description="time since the previous complete backup"
    )
    rto_objective_seconds: float = 4 * HOUR
    rpo_objective_seconds: float = 1 * HOUR

    @computed_field  # type: ignore[prop-decorator]
    @property
    def integrity_ok(self) -> bool:
        """Content, amcheck and smoke SQL showed no problem.

        A check that could not run (amcheck unavailable, content not recorded in an old
        manifest) is no problem: the report says it was not checked.
        """
        return not (self.table_mismatches or self.amcheck_failures or self.smoke_failures
                    or self.state_failures)

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

    def raise_unless_passed(self) -> None:
        """Fail loudly when the test did not pass.

        Raises:
            IntegrityError: listing the first ten problems (content, amcheck, smoke, RTO, RPO).
        """
        if self.passed:
            return
        problems = (self.table_mismatches + self.amcheck_failures + self.smoke_failures
                    + self.state_failures)
        if not self.rto_met:
            problems.append(f"RTO {self.rto_seconds:.0f}s over objective")
        if not self.rpo_met:
            problems.append(f"RPO {self.rpo_seconds:.0f}s (or backup interval) over objective")
        raise IntegrityError(
            f"restore test of backup {self.backup_id} failed: " + "; ".join(problems[:10]),
            hint="see the restore-test report artifact",
        )


def scratch_name(backup_id: str) -> str:
    """Name of the scratch database for a backup, e.g. ``restore_test_20261127t030000z_full``."""
    return "restore_test_" + re.sub(r"[^a-z0-9_]", "_", backup_id.lower())[:48]


def _replay_state(
    server: PostgresDatabase, scratch: str, state: DatabaseState | None,
    request: RestoreTestRequest,
) -> tuple[str, list[str]]:
    """Replay the database state on the scratch copy: a failure is a problem in the report."""
    try:
        note = replay_database_state(server, scratch, state,
                                     no_owner=request.owner_mode == "no-owner")
    except RecoveryError as exc:
        return "replay failed", [exc.message]
    return note, []


def run_restore_test(
    db: PostgresDatabase,
    store: S3BackupStore,
    decryption: GpgDecryptionKey,
    request: RestoreTestRequest | None = None,
    *,
    scratch_server: PostgresDatabase | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: ProgressFn | None = None,
) -> RestoreTestReport:
    """Restore a backup of ``db.dbname`` into a scratch database and check it.

    The scratch database lives on ``scratch_server`` when given (recommended: a cluster
    that has never seen the source's roles, as in a disaster), else on ``db``'s server; the
    source server is then not contacted at all. Missing roles are recreated first (they
    stay on that cluster); the database's owner, settings and grants are replayed on the
    copy as a restore does. Checks (keys, bucket, backup id, login) come first; the scratch
    database is dropped whatever happens. Integrity problems are reported (not raised) so
    the report can be published; the caller fails the run when ``passed`` is False. A
    legacy archive (named by its id) is checked by gpg and ``pg_restore --list`` and has no
    manifest to compare with: the report says so.

    Args:
        db: the server and source database name.
        store: the S3 store.
        decryption: the private key block.
        request: which backup, smoke SQL, jobs and objectives (default: newest, none, 2, 4 h/1 h).
        scratch_server: a separate server block to restore on (its dbname is not used).
        now: clock (injected by tests).
        progress: called with (bytes of the backup downloaded, its size in the manifest).

    Returns:
        The report.
    """
    test_started = now()  # RPO: the backup's age now, not after a restore that took hours
    request = request or RestoreTestRequest()
    backup_id, smoke_sql, jobs = request.backup_id, request.smoke_sql, request.jobs
    with decryption.keyring() as keyring:
        client = store.get_client()
        check_bucket(client, store.bucket)
        manifest = find_backup(client, store.bucket, store.prefix, db.dbname, backup_id)
        check_key_matches(keyring, manifest)
        previous = previous_backup(
            client, store.bucket, store.prefix, db.dbname, manifest.backup_id
        )
        scratch = scratch_name(manifest.backup_id)
        server = scratch_server or db
        database_exists(server, "postgres")  # login check before any change
        state = fetch_database_state(client, store.bucket, manifest, decryption=decryption,
                                     keyring=keyring)
        started = time.monotonic()
        try:
            _, roles_note = restore_roles(
                server, client, store.bucket, manifest, decryption=decryption,
                keyring=keyring, owner_mode=request.owner_mode,
            )
            with fetched_dump(
                client, bucket=store.bucket, manifest=manifest, decryption=decryption,
                keyring=keyring, on_progress=progress,
            ) as dump:  # recreate: drops a crashed run's leftover
                recreate_and_restore(server, scratch, dump, manifest, jobs=jobs,
                                     owner_mode=request.owner_mode)
            rto = time.monotonic() - started
            tested_at = now()
            content = (ContentVerdict(checks=[LEGACY_CHECKS]) if manifest.legacy
                       else check_against_manifest(server, scratch, manifest))
            amcheck = run_amcheck(server, scratch)
            smoke_failures = run_smoke(server, scratch, smoke_sql)
            state_note, state_failures = _replay_state(server, scratch, state, request)
        finally:
            drop_database(server, scratch)
    report = RestoreTestReport(
        backup_id=manifest.backup_id,
        database=manifest.database,
        scratch_database=scratch,
        scratch_server=f"{server.host}:{server.port}",
        roles_note=roles_note,
        database_state_note=state_note,
        state_failures=state_failures,
        tested_at=tested_at,
        backup_finished_at=manifest.finished_at,
        size_bytes=manifest.size_bytes,
        tables_checked=len(manifest.tables),
        rows_checked=sum(t.rows for t in manifest.tables),
        table_mismatches=content.problems,
        content_checks=content.checks,
        amcheck_indexes=amcheck.indexes,
        amcheck_failures=amcheck.failures,
        amcheck_note=amcheck.summary(),
        smoke_queries=len(smoke_sql),
        smoke_failures=smoke_failures,
        rto_seconds=rto,
        started_at=test_started,
        rpo_seconds=(test_started - manifest.finished_at).total_seconds(),
        backup_interval_seconds=(
            (manifest.finished_at - previous.finished_at).total_seconds() if previous else None
        ),
        rto_objective_seconds=request.rto_objective_hours * HOUR,
        rpo_objective_seconds=request.rpo_objective_hours * HOUR,
    )
    logger.info(
        "restore test of backup %s: %s (RTO %.0fs, RPO %.0fs)",
        report.backup_id, "passed" if report.passed else "FAILED",
        report.rto_seconds, report.rpo_seconds,
    )
    return report


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
        "not checked (extension unavailable)" if report.amcheck_indexes is None
        else f"{report.amcheck_indexes} btree indexes, {len(report.amcheck_failures)} failures"
    )
    amcheck_result = (
        "NOT CHECKED" if report.amcheck_indexes is None
        else "ok" if not report.amcheck_failures else "FAILED"
    )
    lines = [
        f"# Restore test of `{report.database}`: {verdict}",
        "",
        f"Backup `{report.backup_id}` ({report.size_bytes} bytes), restored into "
        f"`{report.scratch_database}` (dropped afterwards) at "
        f"{report.tested_at:%Y-%m-%d %H:%M:%SZ}"
        + (f" on {report.scratch_server}." if report.scratch_server else "."),
        "",
        f"Roles: {report.roles_note or 'n/a'}.",
        "",
        f"Database state: {report.database_state_note or 'n/a'}.",
        "",
        "| check | measured | objective | result |",
        "|---|---|---|---|",
        f"| RTO (restore wall time) | {_dur(report.rto_seconds)} | "
        f"{_dur(report.rto_objective_seconds)} | {'ok' if report.rto_met else 'MISSED'} |",
        f"| RPO (backup age) | {_dur(report.rpo_seconds)} | "
        f"{_dur(report.rpo_objective_seconds)} | {'ok' if report.rpo_met else 'MISSED'} |",
        f"| backup interval | {_dur(report.backup_interval_seconds)} | "
        f"{_dur(report.rpo_objective_seconds)} | |",
        f"| content vs manifest ({report.tables_checked} tables, {report.rows_checked} rows) | "
        f"{len(report.table_mismatches)} differences | equal | "
        f"{'ok' if not report.table_mismatches else 'MISMATCH'} |"
        if LEGACY_CHECKS not in report.content_checks else
        f"| content vs manifest | no manifest | - | NOT CHECKED ({LEGACY_CHECKS}) |",
        f"| amcheck | {amcheck} | no failure | {amcheck_result} |",
        f"| smoke SQL | {report.smoke_queries} queries | all truthy | "
        f"{'ok' if not report.smoke_failures else 'FAILED'} |",
    ]
    checks = [*report.content_checks, report.amcheck_note or f"amcheck: {amcheck}"]
    lines += ["", "## Checks", ""] + [f"- {c}" for c in checks]
    problems = (report.table_mismatches + report.amcheck_failures + report.smoke_failures
                + report.state_failures)
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
    request: RestoreTestRequest | None = None,
    *,
    scratch_server: PostgresDatabase | None = None,
) -> RestoreTestReport:
    """Prefect task: :func:`run_restore_test` (retried once on a transient error).

    Its progress artifact ``restore-test-progress-<database>`` counts the bytes of the
    backup downloaded against its size, as the restore's does (see
    :func:`tasks.recovery.restoring.restore_task`): 99 % while pg_restore and the checks run.

    Args:
        db: the server and source database name.
        store: the S3 store.
        decryption: the private key block.
        request: which backup, smoke SQL, jobs and objectives.
        scratch_server: a separate server block to restore on.

    Returns:
        The report.
    """
    bar = ProgressArtifact(
        key=artifact_key("restore-test-progress", db.dbname),
        description=f"restore test of {db.dbname}: bytes of the backup downloaded vs its "
        "size (99 % while pg_restore and the checks run)",
        what=f"restore test of {db.dbname}",
    ).start()
    report = run_restore_test(db, store, decryption, request, scratch_server=scratch_server,
                              progress=bar.update)
    bar.finish()
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
    create_markdown_artifact(
        markdown=text, key=artifact_key("restore-test", report.database),
        description=f"restore test of backup {report.backup_id}",
    )
    return text
