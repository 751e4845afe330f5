"""The pitr-check flow: WAL archive continuity and the current RPO, every 5 minutes."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow

from blocks.loading import load_block
from blocks.pgbackrest import DatabaseHost, PgBackRestRepository
from blocks.postgres import PostgresDatabase
from errors import ArchiveCheckError, InvalidInputError
from tasks.events import failure_reason
from tasks.recovery.pitr.archive import (
    ArchiveCheck,
    assess_archive,
    list_segments_task,
    publish_check,
    segments_per_log,
)
from tasks.recovery.pitr.commands import check_bucket_task, info_task
from tasks.recovery.pitr.incident import track_incident_task
from tasks.recovery.pitr.markers import write_marker_task


@flow(name="pitr-check", log_prints=False, timeout_seconds=900)
def pitr_check(
    repository_block: str,
    host: DatabaseHost | None = None,
    *,
    database_block: str | None = None,
    max_rpo_minutes: float = 15.0,
    wal_segment_size_mb: int = 16,
) -> ArchiveCheck:
    """Check the WAL archive: continuity since the oldest backup and the current RPO.

    Reads the repository only (``info`` and a listing of the archive's objects): no
    PostgreSQL, no decryption. The current RPO is the age of the newest archived WAL
    segment. The artifact ``pitr-check-<stanza>`` shows the verdict; the run fails
    (``ArchiveCheckError``, which the failure alert automation turns into a Slack alert)
    when a segment is missing after the oldest backup's first one, when the newest WAL is
    older than ``max_rpo_minutes``, or when there is no backup or no WAL at all.

    Args:
        repository_block: name of the PgBackRestRepository block.
        host: where pgBackRest runs (default: Debian's paths).
        database_block: a PostgresDatabase block of the archived database: each run then
            commits a marker row into ``veza_ops_pitr_marker`` first, which the PITR
            restore test checks (and which keeps WAL flowing on a quiet database).
        max_rpo_minutes: fail above this age of the newest archived WAL (guide: RPO < 1 h;
            with archive_timeout = 60 a healthy archive stays around a minute).
        wal_segment_size_mb: PostgreSQL's ``wal_segment_size`` in MiB (16 by default).

    Returns:
        The verdict.
    """
    started = datetime.now(UTC)
    stanza: str | None = None
    try:
        segments_per_log(wal_segment_size_mb)  # bad input refused before anything runs
        if max_rpo_minutes <= 0:
            raise InvalidInputError("max_rpo_minutes", "must be positive", fix="e.g. 15")
        repo = load_block(PgBackRestRepository, repository_block, field="repository_block")
        stanza = repo.stanza
        db = (load_block(PostgresDatabase, database_block, field="database_block")
              if database_block else None)
        host = host or DatabaseHost()
        check_bucket_task(repo)
        if db is not None:
            write_marker_task(db, "pitr-check")
        info = info_task(repo, host)
        segments = list_segments_task(repo, [a.id for a in info.archives])
        check = assess_archive(info, segments, now=datetime.now(UTC),
                               max_rpo_seconds=max_rpo_minutes * 60,
                               segment_size_mb=wal_segment_size_mb)
        publish_check(check)
    except Exception as exc:  # whatever stopped the check is this run's incident
        track_incident_task(repository_block, passed=False, problems=[failure_reason(exc)],
                            now=started, stanza=stanza)
        raise
    track_incident_task(repository_block, passed=check.passed, problems=check.problems,
                        now=check.checked_at, stanza=stanza)
    if not check.passed:
        raise ArchiveCheckError(f"stanza {repo.stanza}: " + "; ".join(check.problems))
    return check
