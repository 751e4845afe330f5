"""The WAL archive as the repository holds it: continuity and the current RPO (pitr-check).

pgBackRest stores each archived segment as one object,
``<path>/archive/<stanza>/<archive id>/<timeline+log>/<segment>-<sha1>[.<compression>]``
(names are not encrypted, contents are). Listing them is cheap and needs neither PostgreSQL
nor a decryption: the newest object's ``LastModified`` is when the newest WAL reached the
repository, so ``now - LastModified`` is the data at risk (the current RPO), and every
segment from the oldest backup's first one to the newest must be there, or no restore can
cross the gap.

Segments are numbered ``timeline (8 hex) | log (8 hex) | segment (8 hex)``; a log holds
``4 GiB / wal_segment_size`` segments (256 of 16 MiB). A new timeline (after a PITR restore
was promoted on the host) continues the numbering: a position is present when any timeline
holds it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks.pgbackrest import PgBackRestRepository
from errors import InvalidInputError, retry_on_transient
from errors.s3 import s3_errors
from tasks.recovery.pitr.info import StanzaInfo
from tasks.recovery.pitr.report import artifact_key

_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})-[0-9a-f]{40}(\.[a-z0-9]+)?$")
MAX_NAMED_GAPS = 10


class ArchivedSegment(BaseModel):
    """One WAL segment object of the repository."""

    name: str = Field(description="The 24-hex-digit segment name.")
    key: str = Field(description="The S3 key.")
    archived_at: datetime = Field(description="The object's LastModified.")


def segments_per_log(segment_size_mb: int) -> int:
    """How many segments one log id holds.

    Args:
        segment_size_mb: PostgreSQL's ``wal_segment_size`` in MiB (a power of two, 1-1024).

    Returns:
        4 GiB divided by the segment size.

    Raises:
        InvalidInputError: not a power of two between 1 and 1024.
    """
    if segment_size_mb < 1 or segment_size_mb > 1024 or segment_size_mb & (segment_size_mb - 1):
        raise InvalidInputError(
            "wal_segment_size_mb", f"{segment_size_mb} is not a power of two from 1 to 1024",
            fix="give PostgreSQL's wal_segment_size in MiB (SHOW wal_segment_size; 16 by default)",
        )
    return 4096 // segment_size_mb


def position(name: str, per_log: int) -> int:
    """A segment's place in the WAL, whatever its timeline.

    Args:
        name: a 24-hex-digit segment name.
        per_log: :func:`segments_per_log`.

    Returns:
        ``log * per_log + segment``.
    """
    return int(name[8:16], 16) * per_log + int(name[16:24], 16)


def segment_name(timeline: str, pos: int, per_log: int) -> str:
    """The segment name of a position on a timeline (for naming a gap).

    Args:
        timeline: 8 hex digits.
        pos: the position.
        per_log: :func:`segments_per_log`.

    Returns:
        The 24-hex-digit name.
    """
    return f"{timeline}{pos // per_log:08X}{pos % per_log:08X}"


def archive_prefix(repo: PgBackRestRepository, archive_id: str) -> str:
    """The S3 key prefix of one archive id (e.g. ``15-1``) of the repository's stanza."""
    root = repo.path.strip("/")
    return f"{root + '/' if root else ''}archive/{repo.stanza}/{archive_id}/"


def list_segments(repo: PgBackRestRepository, archive_ids: list[str]) -> list[ArchivedSegment]:
    """List every archived WAL segment object (history, backup-label and partial files skipped).

    Args:
        repo: the repository block (its S3 client: same endpoint and TLS as pgBackRest).
        archive_ids: the archive ids ``info`` reports.

    Returns:
        The segments, in name order.
    """
    client: Any = repo.get_s3_client()
    found: list[ArchivedSegment] = []
    with s3_errors(action="list the WAL archive", bucket=repo.bucket):
        for archive_id in archive_ids:
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=repo.bucket,
                                           Prefix=archive_prefix(repo, archive_id)):
                for obj in page.get("Contents") or []:
                    match = _SEGMENT.match(obj["Key"].rsplit("/", 1)[-1])
                    if match:
                        found.append(ArchivedSegment(
                            name="".join(match.group(1, 2, 3)), key=obj["Key"],
                            archived_at=obj["LastModified"]))
    return sorted(found, key=lambda s: (s.name[8:], s.name[:8]))


class ArchiveCheck(BaseModel):
    """The verdict of one pitr-check."""

    stanza: str
    checked_at: datetime
    max_rpo_seconds: float
    segments: int = 0
    oldest_needed: str | None = Field(default=None, description="First WAL of the oldest backup.")
    newest: str | None = None
    newest_archived_at: datetime | None = None
    rpo_seconds: float | None = Field(default=None, description="now - newest_archived_at.")
    missing: list[str] = Field(default_factory=list, description="First missing segments.")
    missing_count: int = 0
    backups: int = 0
    problems: list[str] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when the archive is continuous, fresh enough and a backup exists."""
        return not self.problems


def assess_archive(
    info: StanzaInfo, segments: list[ArchivedSegment], *, now: datetime,
    max_rpo_seconds: float, segment_size_mb: int = 16,
) -> ArchiveCheck:
    """Judge the archive: a backup to start from, no gap after it, newest WAL fresh enough.

    Args:
        info: ``info`` of the stanza (its backups say where the archive must start).
        segments: :func:`list_segments`.
        now: the time of the check.
        max_rpo_seconds: the newest segment may be this old at most.
        segment_size_mb: PostgreSQL's ``wal_segment_size`` in MiB.

    Returns:
        The verdict; its ``problems`` say what is wrong, one line each.
    """
    per_log = segments_per_log(segment_size_mb)
    check = ArchiveCheck(stanza=info.stanza, checked_at=now, max_rpo_seconds=max_rpo_seconds,
                         segments=len(segments), backups=len(info.backups))
    if not info.backups:
        check.problems.append("no backup in the repository: nothing can be restored "
                              "(run pitr-backup with kind=full)")
    if not segments:
        check.problems.append("no WAL segment in the archive: check archive_command and "
                              "pg_stat_archiver on the database host")
        return check
    newest = max(segments, key=lambda s: position(s.name, per_log))
    check.newest, check.newest_archived_at = newest.name, newest.archived_at
    check.rpo_seconds = max(0.0, (now - newest.archived_at).total_seconds())
    if check.rpo_seconds > max_rpo_seconds:
        check.problems.append(
            f"newest archived WAL {newest.name} is {check.rpo_seconds:.0f} s old (threshold "
            f"{max_rpo_seconds:.0f} s): archiving is stuck or failing (pg_stat_archiver "
            "on the host says why), or the database wrote nothing since")
    starts = [b.wal_start for b in info.backups if b.wal_start]
    start_name = min(starts, key=lambda n: position(n, per_log)) if starts else segments[0].name
    check.oldest_needed = start_name
    present: dict[int, str] = {}
    for seg in segments:
        present.setdefault(position(seg.name, per_log), seg.name[:8])
    first, last = position(start_name, per_log), position(newest.name, per_log)
    timeline = start_name[:8]
    for pos in range(first, last + 1):
        if pos in present:
            timeline = present[pos]
            continue
        check.missing_count += 1
        if len(check.missing) < MAX_NAMED_GAPS:
            check.missing.append(segment_name(timeline, pos, per_log))
    if check.missing_count:
        check.problems.append(
            f"the archive is broken: {check.missing_count} WAL segment(s) missing between "
            f"{start_name} and {newest.name} (first: {', '.join(check.missing)}); no restore "
            "can cross the gap: take a full backup now (pitr-backup kind=full) and find out "
            "what deleted them")
    return check


def render_check(check: ArchiveCheck) -> str:
    """Markdown of the verdict (the ``pitr-check-<stanza>`` artifact).

    Args:
        check: the verdict.

    Returns:
        The markdown text.
    """
    rpo = "unknown" if check.rpo_seconds is None else f"{check.rpo_seconds:.0f} s"
    lines = [
        f"# WAL archive check, stanza `{check.stanza}`: "
        f"{'OK' if check.passed else 'FAILED'}",
        "",
        f"- checked at {check.checked_at:%Y-%m-%d %H:%M:%S} UTC",
        f"- current RPO (age of the newest archived WAL): **{rpo}** "
        f"(threshold {check.max_rpo_seconds:.0f} s)",
        f"- newest archived WAL: `{check.newest}`"
        + (f" at {check.newest_archived_at:%Y-%m-%d %H:%M:%S} UTC"
           if check.newest_archived_at else ""),
        f"- continuity from `{check.oldest_needed}` (first WAL of the oldest backup): "
        + (f"{check.missing_count} segment(s) MISSING" if check.missing_count else "no gap"),
        f"- {check.segments} segments archived, {check.backups} backups",
    ]
    if check.problems:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in check.problems]
    return "\n".join(lines) + "\n"


@task(name="pitr-list-archive", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10,
      retry_condition_fn=retry_on_transient)
def list_segments_task(repo: PgBackRestRepository, archive_ids: list[str]) -> list[ArchivedSegment]:
    """Task of :func:`list_segments`."""
    return list_segments(repo, archive_ids)


@task(name="pitr-check-report", cache_policy=NO_CACHE)
def publish_check(check: ArchiveCheck) -> None:
    """Publish :func:`render_check` as the artifact ``pitr-check-<stanza>``."""
    create_markdown_artifact(
        key=artifact_key("pitr-check", check.stanza),
        markdown=render_check(check),
        description=f"WAL archive {'OK' if check.passed else 'FAILED'}, RPO "
        + ("unknown" if check.rpo_seconds is None else f"{check.rpo_seconds:.0f} s"),
    )
