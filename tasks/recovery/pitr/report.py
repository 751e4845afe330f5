"""The pitr-backup artifact: the backup taken, the stanza's backups and the PITR window."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.recovery.pitr.info import PitrBackup, StanzaInfo, pitr_window

MiB = 1024 * 1024


def backup_report(taken: PitrBackup, info: StanzaInfo) -> str:
    """Markdown: the new backup, the PITR window and every backup of the stanza.

    Args:
        taken: the backup this run took.
        info: the stanza after it.

    Returns:
        The markdown text.
    """
    window = pitr_window(info)
    lines = [
        f"# pgBackRest backup {taken.label} ({taken.type})",
        "",
        f"- stanza: `{info.stanza}` ({info.status_message}), cipher: {info.cipher or 'none'}",
        f"- took {(taken.stopped_at - taken.started_at).total_seconds():.0f} s, "
        f"stored {taken.repo_size_bytes / MiB:.1f} MiB of {taken.size_bytes / MiB:.1f} MiB",
    ]
    if window is not None:
        end = "" if window.end_is_exact else " (at least: the newest backup's end)"
        lines.append(
            f"- PITR window: {window.start:%Y-%m-%d %H:%M:%S} UTC to "
            f"{window.end:%Y-%m-%d %H:%M:%S} UTC{end}, newest WAL `{window.end_wal}`"
        )
    lines += ["", "| label | type | prior | started (UTC) | seconds | stored MiB |",
              "|---|---|---|---|---|---|"]
    for b in info.backups:
        lines.append(
            f"| {b.label} | {b.type} | {b.prior or ''} | {b.started_at:%Y-%m-%d %H:%M:%S} | "
            f"{(b.stopped_at - b.started_at).total_seconds():.0f} | "
            f"{b.repo_size_bytes / MiB:.1f} |"
        )
    return "\n".join(lines) + "\n"


def artifact_key(prefix: str, stanza: str) -> str:
    """An artifact key (lowercase letters, digits, dashes) for a stanza.

    Args:
        prefix: e.g. ``pitr-backup``.
        stanza: the stanza.

    Returns:
        ``<prefix>-<stanza>``, normalised.
    """
    return f"{prefix}-{stanza}".lower().replace("_", "-").replace(".", "-")


@task(name="pitr-backup-report", cache_policy=NO_CACHE)
def publish_backup_report(taken: PitrBackup, info: StanzaInfo) -> None:
    """Publish :func:`backup_report` as the artifact ``pitr-backup-<stanza>``."""
    create_markdown_artifact(
        key=artifact_key("pitr-backup", info.stanza),
        markdown=backup_report(taken, info),
        description=f"pgBackRest backup {taken.label}",
    )
