"""PITR restore into a new directory and port, and the PITR restore test (RTO, markers, amcheck).

Both restore with :func:`tasks.recovery.pitr.restore.restore_to_time` and bring the copy up
with :mod:`tasks.recovery.pitr.cluster`. The restore leaves the recovered cluster running on
its port; the restore test runs it in a scratch directory with a private socket (no TCP,
local trust only), checks it and removes it, whatever happens.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field, SecretStr

from blocks.pgbackrest import DatabaseHost, PgBackRestRepository
from blocks.postgres import PostgresDatabase
from errors import IntegrityError, InvalidInputError, VezaOpsError
from tasks.logs import ModuleLogger
from tasks.recovery.integrity import run_amcheck
from tasks.recovery.pitr import cluster
from tasks.recovery.pitr.info import StanzaInfo
from tasks.recovery.pitr.markers import Marker, read_markers
from tasks.recovery.pitr.report import artifact_key
from tasks.recovery.pitr.restore import check_restore_target, restore_to_time
from tasks.recovery.pitr.runner import os_user_ids

logger = ModuleLogger(__name__)
MARKER_MARGIN = timedelta(seconds=2)  # a marker this close to the target is not judged
LOG_NAME = "veza-ops-recovery.log"


def check_target_in_window(info: StanzaInfo, target: datetime, now: datetime) -> None:
    """Refuse a target no backup can reach: in the future, or before every backup's end.

    Args:
        info: the stanza.
        target: the recovery target (aware).
        now: the time of the check.

    Raises:
        InvalidInputError: naming ``target_time`` and the window.
    """
    if target > now:
        raise InvalidInputError("target_time", f"{target.isoformat()} is in the future",
                                fix="give a past moment inside the PITR window")
    if not any(b.stopped_at < target for b in info.backups):
        first = min((b.stopped_at for b in info.backups), default=None)
        raise InvalidInputError(
            "target_time",
            f"{target.isoformat()} is before the end of the oldest backup"
            + (f" ({first.isoformat()})" if first else " (the repository holds no backup)"),
            fix="choose a later moment, or take a full backup first",
        )


class PitrRestoreOutcome(BaseModel):
    """A restored cluster: where it runs, what it recovered to, how long it took."""

    stanza: str
    data_directory: str
    port: int
    log: str
    target_time: datetime
    recovered_to: datetime | None = Field(description="The last replayed commit's time.")
    wal_replayed_bytes: int | None = None
    seconds: float = Field(description="Restore, start and replay up to promotion (RTO).")


def restore_and_start(
    repo: PgBackRestRepository, host: DatabaseHost, data: Path, port: int,
    target_time: datetime, *, socket_dir: Path, private_dir: Path | None, timeout_s: float,
) -> PitrRestoreOutcome:
    """Restore into ``data`` (new or empty), start it on ``port``, wait until it promoted.

    Args:
        repo: the repository block.
        host: the host.
        data: the new data directory.
        port: its port (checked free first).
        target_time: the recovery target.
        socket_dir: its Unix socket directory.
        private_dir: scratch mode (see :func:`cluster.configure`), or None.
        timeout_s: bound of the restore, of the start and of the replay, each.

    Returns:
        The outcome (the cluster is left running).
    """
    check_restore_target(data, host)
    cluster.check_port_free(port, host, socket_dir)
    started = time.monotonic()
    restore_to_time(repo, host, data, target_time, timeout_s=timeout_s)
    cluster.configure(host, data, port, socket_dir, private_dir=private_dir)
    log = data / LOG_NAME
    log.touch(mode=0o600)
    ids = os_user_ids(host)
    if ids:
        os.chown(log, *ids)
    cluster.start(host, data, log, timeout_s=timeout_s)
    cluster.wait_promoted(host, data, log, timeout_s=timeout_s)
    facts = cluster.recovery_facts(log)
    outcome = PitrRestoreOutcome(
        stanza=repo.stanza, data_directory=str(data), port=port, log=str(log),
        target_time=target_time, recovered_to=facts.recovered_to,
        wal_replayed_bytes=facts.wal_replayed_bytes, seconds=time.monotonic() - started,
    )
    logger.info("restored stanza %s to %s on port %s (last commit replayed %s)",
                repo.stanza, target_time, port, facts.recovered_to)
    return outcome


@task(name="pitr-restore-and-start", cache_policy=NO_CACHE)
def pitr_restore_task(
    repo: PgBackRestRepository, host: DatabaseHost, target_directory: str, port: int, *,
    target_time: datetime, timeout_s: float,
) -> PitrRestoreOutcome:
    """Restore into a new directory, start it on its port, leave it running."""
    return restore_and_start(repo, host, Path(target_directory), port, target_time,
                             socket_dir=Path(host.socket_dir), private_dir=None,
                             timeout_s=timeout_s)


# --- the PITR restore test ------------------------------------------------------------


def verify_markers(
    source: list[Marker], restored: list[Marker], target: datetime, after: Marker
) -> tuple[int, list[str]]:
    """Markers up to the target must be restored, none after it.

    Markers within :data:`MARKER_MARGIN` of the target are not judged (a row's
    ``written_at`` is its insert time, its commit a moment later).

    Args:
        source: the source's markers of the look-back window (read before the restore).
        restored: the restored cluster's markers of the same window.
        target: the recovery target.
        after: the marker written after the target by this test.

    Returns:
        (markers checked, problems).
    """
    problems: list[str] = []
    have = {m.id for m in restored}
    before = [m for m in source if m.written_at <= target - MARKER_MARGIN]
    if not before:
        problems.append("no marker written before the target in the look-back window: "
                        "nothing proves the data before the target is there (schedule "
                        "pitr-check with database_block, or choose a later target)")
    missing = [m for m in before if m.id not in have]
    if missing:
        problems.append(f"{len(missing)} marker(s) written before the target are missing, "
                        f"first written at {missing[0].written_at.isoformat()}")
    late = [m for m in restored if m.written_at > target + MARKER_MARGIN]
    if late or after.id in have:
        problems.append("the restored cluster holds marker(s) written after the target: "
                        "recovery went past it")
    return len(before) + 1, problems


class PitrRestoreTestReport(BaseModel):
    """Outcome of a PITR restore test (the ``restore-test-pitr-<stanza>`` artifact)."""

    stanza: str
    database: str
    tested_at: datetime
    target_time: datetime
    recovered_to: datetime | None = None
    wal_replayed_bytes: int | None = None
    rto_seconds: float | None = None
    rto_objective_seconds: float
    markers_checked: int = 0
    amcheck: str = ""
    problems: list[str] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no problem was found and the RTO objective was met."""
        return not self.problems

    def raise_unless_passed(self) -> None:
        """Raise :class:`IntegrityError` with the problems when the test did not pass."""
        if self.problems:
            raise IntegrityError(f"PITR restore test of stanza {self.stanza}: "
                                 + "; ".join(self.problems))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scratch(root: Path, host: DatabaseHost) -> Path:
    scratch = Path(tempfile.mkdtemp(prefix="veza-pitr-test-", dir=root))
    (scratch / "sock").mkdir(mode=0o700)
    ids = os_user_ids(host)
    if ids:
        for path in (scratch, scratch / "sock"):
            os.chown(path, *ids)
    return scratch


def run_pitr_restore_test(
    repo: PgBackRestRepository, host: DatabaseHost, db: PostgresDatabase, target: datetime, *,
    source_markers: list[Marker], after: Marker, scratch_root: Path, timeout_s: float,
    rto_objective_s: float, since: datetime,
) -> PitrRestoreTestReport:
    """Restore to ``target`` in a scratch directory, check markers and amcheck, remove it.

    Args:
        repo: the repository block.
        host: the host.
        db: the source database block (its ``dbname`` is checked in the copy).
        target: the recovery target.
        source_markers: the source's markers since ``since`` (read before the restore).
        after: the marker written after the target.
        scratch_root: an existing directory writable by the cluster's OS user.
        timeout_s: bound of each step.
        rto_objective_s: the RTO objective.
        since: start of the look-back window.

    Returns:
        The report (problems listed, a failed restore or start among them; the scratch
        directory is gone either way).
    """
    report = PitrRestoreTestReport(stanza=repo.stanza, database=db.dbname,
                                   tested_at=datetime.now(target.tzinfo), target_time=target,
                                   rto_objective_seconds=rto_objective_s)
    scratch = _scratch(scratch_root, host)
    data, sock, port = scratch / "data", scratch / "sock", _free_port()
    try:
        outcome = restore_and_start(repo, host, data, port, target, socket_dir=sock,
                                    private_dir=scratch, timeout_s=timeout_s)
        report.rto_seconds = outcome.seconds
        report.recovered_to = outcome.recovered_to
        report.wal_replayed_bytes = outcome.wal_replayed_bytes
        copy = PostgresDatabase(host=str(sock), port=port, user=host.user,
                                password=SecretStr("local-trust"), dbname=db.dbname,
                                sslmode="disable")
        restored = read_markers(copy, since)
        report.markers_checked, problems = verify_markers(source_markers, restored, target, after)
        report.problems += problems
        amcheck = run_amcheck(copy, db.dbname)
        report.amcheck = amcheck.summary()
        report.problems += amcheck.failures
        if outcome.recovered_to and outcome.recovered_to > target:
            report.problems.append(f"recovered to {outcome.recovered_to.isoformat()}, past "
                                   f"the target {target.isoformat()}")
        if outcome.seconds > rto_objective_s:
            report.problems.append(f"RTO {outcome.seconds:.0f} s above the objective "
                                   f"{rto_objective_s:.0f} s")
    except VezaOpsError as exc:  # reported (artifact, then the run fails), not lost
        report.problems.append(f"the restore failed: {exc}")
    finally:
        cluster.stop(host, data)
        shutil.rmtree(scratch, ignore_errors=True)
    return report


@task(name="pitr-restore-test", cache_policy=NO_CACHE)
def pitr_restore_test_task(
    repo: PgBackRestRepository, host: DatabaseHost, db: PostgresDatabase, target: datetime, *,
    source_markers: list[Marker], after: Marker, scratch_root: str, timeout_s: float,
    rto_objective_s: float, since: datetime,
) -> PitrRestoreTestReport:
    """Task of :func:`run_pitr_restore_test`."""
    return run_pitr_restore_test(repo, host, db, target, source_markers=source_markers,
                                 after=after, scratch_root=Path(scratch_root), timeout_s=timeout_s,
                                 rto_objective_s=rto_objective_s, since=since)


def render_pitr_report(report: PitrRestoreTestReport) -> str:
    """Markdown of the PITR restore test.

    Args:
        report: the report.

    Returns:
        The markdown text.
    """
    def when(value: datetime | None) -> str:
        return f"{value:%Y-%m-%d %H:%M:%S.%f} UTC" if value else "unknown"

    rto = "not measured" if report.rto_seconds is None else f"{report.rto_seconds:.1f} s"
    lag = ("" if report.recovered_to is None
           else f" ({(report.target_time - report.recovered_to).total_seconds():.1f} s before "
                "the target: the last commit replayed)")
    wal = ("unknown" if report.wal_replayed_bytes is None
           else f"{report.wal_replayed_bytes / 1024 / 1024:.1f} MiB")
    lines = [
        f"# PITR restore test, stanza `{report.stanza}`: "
        f"{'PASSED' if report.passed else 'FAILED'}",
        "",
        f"- tested at {when(report.tested_at)}, database `{report.database}`",
        f"- target: {when(report.target_time)}",
        f"- recovered to: {when(report.recovered_to)}{lag}",
        f"- RTO (restore + replay to promotion): {rto} "
        f"(objective {report.rto_objective_seconds:.0f} s)",
        f"- WAL replayed: {wal}",
        f"- markers checked: {report.markers_checked} (before the target present, after it "
        "absent)",
        f"- {report.amcheck or 'amcheck: not run'}",
    ]
    if report.problems:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in report.problems]
    return "\n".join(lines) + "\n"


@task(name="pitr-restore-test-report", cache_policy=NO_CACHE)
def publish_pitr_report(report: PitrRestoreTestReport) -> None:
    """Publish :func:`render_pitr_report` as ``restore-test-pitr-<stanza>``."""
    create_markdown_artifact(
        key=artifact_key("restore-test-pitr", report.stanza),
        markdown=render_pitr_report(report),
        description=f"PITR restore test {'passed' if report.passed else 'FAILED'}",
    )
