"""Marker rows: small committed transactions whose times a PITR restore test checks.

``pitr-check`` (with a database block) writes one marker per run into the table
``veza_ops_pitr_marker`` of the backed-up database, and ``restore-test`` in PITR mode one
more before it restores. A cluster restored to a target time T must then hold exactly the
markers written up to T (checked over a look-back window) and none written after it:
the WAL replay stopped where it was asked to, and everything committed before is there.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks.postgres import PostgresDatabase
from errors import ArchiveCheckError, retry_on_transient
from tasks.recovery.postgres import connect

MARKER_TABLE = "veza_ops_pitr_marker"
KEEP_DAYS = 45  # older markers are deleted by the writer (longer than any PITR window's use)

_CREATE = (
    f"CREATE TABLE IF NOT EXISTS {MARKER_TABLE} ("
    "id text PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
    "written_by text NOT NULL)"
)


class Marker(BaseModel):
    """One marker row."""

    id: str
    written_at: datetime
    written_by: str
    segment: str | None = Field(
        default=None, description="The WAL segment closed after it (when switched).")


def write_marker(db: PostgresDatabase, written_by: str, *, switch_wal: bool = False) -> Marker:
    """Create the table when missing, insert one marker (committed), delete very old ones.

    Args:
        db: the backed-up database (its role needs CREATE on the schema once, then INSERT
            and DELETE on the table).
        written_by: what wrote it (``pitr-check``, ``restore-test``).
        switch_wal: close the current WAL segment afterwards (``pg_switch_wal()``:
            superuser, or EXECUTE granted) so it is archived now; its name is returned.

    Returns:
        The marker with the server's clock at insert time.
    """
    marker_id = uuid.uuid4().hex
    with connect(db, autocommit=True) as conn:
        conn.execute(_CREATE)
        row = conn.execute(
            f"INSERT INTO {MARKER_TABLE} (id, written_by) VALUES (%s, %s) "  # noqa: S608
            "RETURNING written_at",
            (marker_id, written_by),
        ).fetchone()
        conn.execute(
            f"DELETE FROM {MARKER_TABLE} WHERE written_at < now() - %s",  # noqa: S608
            (timedelta(days=KEEP_DAYS),),
        )
        segment = None
        if switch_wal:
            seg = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
            segment = str(seg[0]) if seg else None
    assert row is not None
    return Marker(id=marker_id, written_at=row[0], written_by=written_by, segment=segment)


def wait_archived(db: PostgresDatabase, segment: str, *, timeout_s: float) -> None:
    """Wait until ``pg_stat_archiver`` reports ``segment`` (or a later one) archived.

    Args:
        db: the archived database.
        segment: a WAL segment name.
        timeout_s: deadline.

    Raises:
        ArchiveCheckError: not archived in time (archive_command failing: the
            archiver's last failure is quoted).
    """
    deadline = time.monotonic() + timeout_s
    with connect(db, autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT last_archived_wal, last_failed_wal, last_failed_time "
                               "FROM pg_stat_archiver").fetchone()
            last = str(row[0] or "") if row else ""
            if last[:24] and (last[8:24], last[:8]) >= (segment[8:24], segment[:8]):
                return
            if time.monotonic() > deadline:
                failed = f"; last failure: {row[1]} at {row[2]}" if row and row[1] else ""
                raise ArchiveCheckError(
                    f"WAL segment {segment} was not archived within {timeout_s:.0f} s "
                    f"(last archived: {last or 'none'}{failed})",
                    hint="check archive_command and the pgBackRest log on the database host")
            time.sleep(0.5)


def read_markers(db: PostgresDatabase, since: datetime, dbname: str | None = None) -> list[Marker]:
    """The markers written at or after ``since`` (none when the table does not exist).

    Args:
        db: the server block.
        since: the start of the look-back window.
        dbname: another database on that server (default: the block's).

    Returns:
        The markers, oldest first.
    """
    with connect(db, dbname) as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (MARKER_TABLE,)).fetchone()
        if not exists or not exists[0]:
            return []
        rows = conn.execute(
            f"SELECT id, written_at, written_by FROM {MARKER_TABLE} "  # noqa: S608
            "WHERE written_at >= %s ORDER BY written_at, id",
            (since,),
        ).fetchall()
    return [Marker(id=r[0], written_at=r[1], written_by=r[2]) for r in rows]


@task(name="pitr-write-marker", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_on_transient)
def write_marker_task(db: PostgresDatabase, written_by: str, switch_wal: bool = False) -> Marker:
    """Task of :func:`write_marker`."""
    return write_marker(db, written_by, switch_wal=switch_wal)


@task(name="pitr-wait-archived", cache_policy=NO_CACHE)
def wait_archived_task(db: PostgresDatabase, segment: str, timeout_s: float) -> None:
    """Task of :func:`wait_archived`."""
    wait_archived(db, segment, timeout_s=timeout_s)


@task(name="pitr-read-markers", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_on_transient)
def read_markers_task(db: PostgresDatabase, since: datetime) -> list[Marker]:
    """Task of :func:`read_markers`."""
    return read_markers(db, since)
