"""The PITR tier as ``veza-ops backups info`` shows it: pgBackRest's backups, window and RPO.

Read-only: ``pgbackrest info`` and a listing of the WAL archive's objects (as pitr-check
does). The PITR window runs from the oldest backup's start to the newest archived WAL's
arrival in the repository; the RPO is that arrival's age.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from blocks.pgbackrest import DatabaseHost, PgBackRestRepository
from tasks.recovery.pitr import commands
from tasks.recovery.pitr.archive import list_segments, position
from tasks.recovery.pitr.expiry import retention_text
from tasks.recovery.pitr.info import PitrBackup, PitrWindow, pitr_window


@dataclass(frozen=True)
class PitrTier:
    """One stanza's PITR tier."""

    stanza: str
    location: str
    retention: str
    backups: list[PitrBackup] = field(default_factory=list)
    window: PitrWindow | None = None
    newest_wal: str | None = None
    newest_archived_at: datetime | None = None
    rpo: timedelta | None = None
    rpo_objective: timedelta = timedelta(hours=1)

    @property
    def rpo_met(self) -> bool:
        """True when the newest WAL arrived no longer ago than the objective."""
        return self.rpo is not None and self.rpo <= self.rpo_objective

    @property
    def stored_bytes(self) -> int:
        """What the backup sets take in the repository (compressed; WAL not counted)."""
        return sum(b.repo_size_bytes for b in self.backups)


def pitr_tier(
    repo: PgBackRestRepository, host: DatabaseHost, *, now: datetime, rpo_objective: timedelta
) -> PitrTier:
    """Read the stanza's backups and archive.

    Args:
        repo: the repository block.
        host: where pgBackRest runs (paths only; no PostgreSQL needed).
        now: the time of the look.
        rpo_objective: the objective the RPO is judged against.

    Returns:
        The tier.
    """
    info = commands.info(repo, host)
    segments = list_segments(repo, [a.id for a in info.archives])
    newest = max(segments, key=lambda s: position(s.name, 256), default=None)
    arrived = newest.archived_at if newest else None
    return PitrTier(
        stanza=repo.stanza,
        location=f"s3://{repo.bucket}{repo.path}",
        retention=retention_text(repo),
        backups=info.backups,
        window=pitr_window(info, arrived),
        newest_wal=newest.name if newest else info.newest_wal,
        newest_archived_at=arrived,
        rpo=(now - arrived) if arrived else None,
        rpo_objective=rpo_objective,
    )


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def tier_dict(tier: PitrTier) -> dict[str, Any]:
    """The tier as JSON-ready data (``pitr`` of ``veza-ops backups info --json``).

    Args:
        tier: the tier.

    Returns:
        stanza, location, retention, backups, window, newest WAL, RPO.
    """
    return {
        "stanza": tier.stanza,
        "location": tier.location,
        "retention": tier.retention,
        "backups": [{"label": b.label, "type": b.type, "prior": b.prior,
                     "started_at": _time(b.started_at), "stopped_at": _time(b.stopped_at),
                     "repo_size_bytes": b.repo_size_bytes} for b in tier.backups],
        "stored_bytes": tier.stored_bytes,
        "window_start": _time(tier.window.start) if tier.window else None,
        "window_end": _time(tier.window.end) if tier.window else None,
        "newest_wal": tier.newest_wal,
        "newest_archived_at": _time(tier.newest_archived_at),
        "rpo_seconds": tier.rpo.total_seconds() if tier.rpo is not None else None,
        "rpo_objective_seconds": tier.rpo_objective.total_seconds(),
        "rpo_met": tier.rpo_met,
    }
