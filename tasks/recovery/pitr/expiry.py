"""What ``pgbackrest expire`` removed, checked and reported (the pitr-expire flow's decisions).

pgBackRest applies the retention itself (the block's ``pitr_window_days`` or
``retention_full_count``, rendered into its config; it also runs expire after every backup):
we compare ``info`` before and after, refuse a result that lost the newest full backup
(pgBackRest's own rule; checked again because losing it loses every restore), and publish
what went: backup sets, and the WAL range no longer kept.
"""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks.pgbackrest import PgBackRestRepository
from errors import IntegrityError
from tasks.recovery.pitr.info import PitrBackup, PitrWindow, StanzaInfo, pitr_window
from tasks.recovery.pitr.report import artifact_key

MiB = 1024 * 1024


def retention_text(repo: PgBackRestRepository) -> str:
    """The block's retention in words (for the report and the logs).

    Args:
        repo: the repository block.

    Returns:
        e.g. ``PITR window of 30 days (repo1-retention-full-type=time)``.
    """
    if repo.pitr_window_days is not None:
        return (f"PITR window of {repo.pitr_window_days} days: every full newer than that, plus "
                "the newest full older than it (repo1-retention-full-type=time)")
    return f"the newest {repo.retention_full_count} full backups (repo1-retention-full-type=count)"


class ExpireReport(BaseModel):
    """What one expire run removed and what remains."""

    stanza: str
    retention: str
    ran_at: datetime
    expired: list[PitrBackup] = Field(default_factory=list, description="Backup sets removed.")
    kept: list[PitrBackup] = Field(default_factory=list, description="Backup sets remaining.")
    oldest_wal_before: str | None = None
    oldest_wal_after: str | None = None
    window_before: PitrWindow | None = None
    window_after: PitrWindow | None = None

    @property
    def wal_expired(self) -> bool:
        """True when the oldest archived WAL segment moved forward."""
        return (self.oldest_wal_before is not None
                and self.oldest_wal_before != self.oldest_wal_after)


def expire_report(
    before: StanzaInfo, after: StanzaInfo, *, retention: str, ran_at: datetime
) -> ExpireReport:
    """Compare ``info`` before and after expire.

    Args:
        before: the stanza before.
        after: the stanza after.
        retention: the retention in words.
        ran_at: when expire ran.

    Returns:
        The report.

    Raises:
        IntegrityError: the newest full backup from before is gone (never expected:
            pgBackRest keeps it; a restore would then be impossible).
    """
    kept_labels = {b.label for b in after.backups}
    newest_full = before.newest_full
    if newest_full is not None and newest_full.label not in kept_labels:
        raise IntegrityError(
            f"stanza {before.stanza}: the newest full backup {newest_full.label} is gone after "
            "expire; nothing can be restored until the next full backup",
            hint="take a full backup now (pitr-backup with kind=full) and check the retention "
            "settings of the repository block",
        )
    return ExpireReport(
        stanza=before.stanza,
        retention=retention,
        ran_at=ran_at,
        expired=[b for b in before.backups if b.label not in kept_labels],
        kept=after.backups,
        oldest_wal_before=before.oldest_wal,
        oldest_wal_after=after.oldest_wal,
        window_before=pitr_window(before),
        window_after=pitr_window(after),
    )


def _window(window: PitrWindow | None) -> str:
    if window is None:
        return "none (no backup)"
    return f"{window.start:%Y-%m-%d %H:%M:%S} UTC to {window.end:%Y-%m-%d %H:%M:%S} UTC"


def render_expire_report(report: ExpireReport) -> str:
    """Markdown: retention, what was expired, the WAL range dropped, what remains.

    Args:
        report: the report.

    Returns:
        The markdown text.
    """
    lines = [
        f"# pgBackRest expire, stanza `{report.stanza}`",
        "",
        f"- ran at {report.ran_at:%Y-%m-%d %H:%M:%S} UTC; retention: {report.retention}",
        f"- expired {len(report.expired)} backup set(s), {len(report.kept)} remain",
        f"- PITR window before: {_window(report.window_before)}",
        f"- PITR window after: {_window(report.window_after)}",
    ]
    if report.wal_expired:
        lines.append(f"- WAL expired: `{report.oldest_wal_before}` up to (not including) "
                     f"`{report.oldest_wal_after}`")
    else:
        lines.append(f"- WAL expired: none (oldest kept `{report.oldest_wal_after}`)")
    lines += ["", "| label | type | prior | stopped (UTC) | stored MiB | action |",
              "|---|---|---|---|---|---|"]
    rows = [(b, "expired") for b in report.expired] + [(b, "kept") for b in report.kept]
    for b, action in sorted(rows, key=lambda r: r[0].started_at):
        lines.append(
            f"| {b.label} | {b.type} | {b.prior or ''} | {b.stopped_at:%Y-%m-%d %H:%M:%S} | "
            f"{b.repo_size_bytes / MiB:.1f} | {action} |"
        )
    return "\n".join(lines) + "\n"


@task(name="pitr-expire-report", cache_policy=NO_CACHE)
def publish_expire_report(report: ExpireReport) -> None:
    """Publish :func:`render_expire_report` as the artifact ``pitr-expire-<stanza>``."""
    create_markdown_artifact(
        key=artifact_key("pitr-expire", report.stanza),
        markdown=render_expire_report(report),
        description=f"pgBackRest expire: {len(report.expired)} backup set(s) expired",
    )
