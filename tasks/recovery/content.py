"""What a database holds, summed up: row counts and checksums, sequences, large objects.

The backup takes this survey in the very snapshot pg_dump dumps, on a second connection
running at the same time as the dump (:func:`surveying`); the restore side takes it again
in the restored database (:func:`survey_database`) and compares (``integrity.py``).

Why this checksum: ``sum(hashtextextended(t::text, 0))`` over a table's rows, as an exact
``numeric``. It is one sequential scan, with no sort and no memory that grows with the table
(``md5(string_agg(t::text, '' ORDER BY t::text))`` sorts the whole table, spills to disk and
fails past 1 GB of text), and it does not depend on row order, which a restore does not keep.
Each row adds a 64-bit hash, so one changed row escapes notice with a chance near 2^-64;
a sum (unlike a xor) also sees duplicated rows swapped for other duplicates. It is a check
against corruption and bugs, not against tampering: the dump's SHA-256 and gpg cover that.
A row's text depends on output settings, so every survey pins them (:data:`OUTPUT_SETTINGS`);
``hashtextextended`` hashes the text's bytes in the database encoding, which a restore keeps
(the scratch database is created with the source's encoding). Type output changes between
major versions, and a big-endian server hashes differently: compare on the same major
version and byte order (every usual server is little-endian).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from blocks.postgres import PostgresDatabase
from tasks.logs import ModuleLogger
from tasks.recovery.manifest import LargeObjects, SequenceValue, TableCount
from tasks.recovery.postgres import connect

logger = ModuleLogger(__name__)  # run logger inside a run: lines reach the UI

OUTPUT_SETTINGS: tuple[tuple[str, str], ...] = (
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "1"),
    ("bytea_output", "hex"),
    ("lc_monetary", "C"),
    ("search_path", "pg_catalog"),
)
CONTENT_METHOD = (
    "v1: per table count(*) and sum(hashtextextended(row::text, 0)); sequences "
    "(last_value, is_called); large objects md5(lo_get(oid)); output settings "
    + ", ".join(f"{k}={v}" for k, v in OUTPUT_SETTINGS)
)
LARGE_OBJECT_DETAIL_LIMIT = 10_000  # above this many, the manifest keeps the aggregate only

TableFn = Callable[[TableCount], None]


@dataclass(frozen=True)
class Content:
    """A database's content summed up (see the module's docstring for the method)."""

    tables: list[TableCount]
    sequences: list[SequenceValue]
    large_objects: LargeObjects
    method: str = CONTENT_METHOD


def pin_output_settings(conn: psycopg.Connection) -> None:
    """Set the session's output settings a row's text depends on (before any transaction)."""
    for name, value in OUTPUT_SETTINGS:
        conn.execute(sql.SQL("SET {} TO {}").format(sql.Identifier(name), sql.Literal(value)))


def user_tables(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(schema, name) of every user table (relkind r: partitions, not their parents)."""
    rows = conn.execute(
        """SELECT n.nspname, c.relname FROM pg_catalog.pg_class c
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind = 'r' AND n.nspname <> 'information_schema'
           AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2"""
    ).fetchall()
    return [(str(schema), str(name)) for schema, name in rows]


def lock_tables(conn: psycopg.Connection, tables: list[tuple[str, str]]) -> None:
    """ACCESS SHARE on every table at once, as pg_dump does: a concurrent DROP waits for us.

    Bounded by the session's ``lock_timeout`` (the block's ``lock_wait_timeout_s``).
    """
    if tables:
        names = sql.SQL(", ").join(sql.Identifier(s, t) for s, t in tables)
        conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(names))


def read_sequences(conn: psycopg.Connection) -> list[SequenceValue]:
    """``last_value`` and ``is_called`` of every user sequence, with its increment.

    Sequences are not transactional: this reads their current state, not the snapshot's
    (pg_dump does the same when it reaches them).
    """
    listed = conn.execute(
        """SELECT n.nspname, c.relname, p.seqincrement FROM pg_catalog.pg_class c
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_catalog.pg_sequence p ON p.seqrelid = c.oid
           WHERE c.relkind = 'S' AND n.nspname <> 'information_schema'
           AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2"""
    ).fetchall()
    values: list[SequenceValue] = []
    for schema, name, increment in listed:
        row = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(
            sql.Identifier(schema, name))).fetchone()
        if row is not None:
            values.append(SequenceValue(schema_name=schema, name=name, last_value=int(row[0]),
                                        is_called=bool(row[1]), increment=int(increment)))
    return values


def table_checksums(
    conn: psycopg.Connection, tables: list[tuple[str, str]], on_table: TableFn | None = None
) -> list[TableCount]:
    """Row count and content checksum of each table, in one scan each.

    Args:
        conn: a connection inside the transaction whose snapshot counts (output pinned).
        tables: (schema, table) pairs.
        on_table: called after each table (progress).

    Returns:
        One :class:`TableCount` per table, in the given order.
    """
    counts: list[TableCount] = []
    for schema, table in tables:
        row = conn.execute(
            sql.SQL(
                "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0) FROM {} AS t"
            ).format(sql.Identifier(schema, table))
        ).fetchone()
        count = TableCount(schema_name=schema, table=table, rows=int(row[0]) if row else 0,
                           checksum=str(row[1]) if row else "0")
        counts.append(count)
        if on_table is not None:
            on_table(count)
    return counts


def large_objects(conn: psycopg.Connection) -> LargeObjects:
    """Count and checksums of the large objects (``md5(lo_get(oid))`` per object).

    ``lo_get`` reads through the transaction's snapshot and needs SELECT on each object,
    as pg_dump does; an object over 1 GB cannot be returned whole and fails the survey.
    The aggregate is the SHA-256 of ``oid:md5`` lines in oid order; per-object md5s are
    kept for up to :data:`LARGE_OBJECT_DETAIL_LIMIT` objects (to name the ones that differ).
    """
    digest = hashlib.sha256()
    detail: dict[int, str] = {}
    count = 0
    with conn.cursor(name="veza_ops_large_objects") as cur:
        cur.execute("SELECT oid, md5(lo_get(oid)) FROM pg_catalog.pg_largeobject_metadata "
                    "ORDER BY oid")
        for oid, md5 in cur:
            count += 1
            digest.update(f"{oid}:{md5}\n".encode())
            if count <= LARGE_OBJECT_DETAIL_LIMIT:
                detail[int(oid)] = str(md5)
    return LargeObjects(count=count, checksum=digest.hexdigest(),
                        objects=detail if count <= LARGE_OBJECT_DETAIL_LIMIT else None)


def survey_database(db: PostgresDatabase, dbname: str) -> Content:
    """Survey ``dbname`` (a restored copy) in one REPEATABLE READ, read-only transaction.

    Args:
        db: the server block.
        dbname: the database.

    Returns:
        Its content.
    """
    with connect(db, dbname, autocommit=True) as conn:  # closing ends the transaction
        pin_output_settings(conn)
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        tables = user_tables(conn)
        lock_tables(conn, tables)
        sequences = read_sequences(conn)
        return Content(tables=table_checksums(conn, tables), sequences=sequences,
                       large_objects=large_objects(conn))


class SurveyCancelledError(Exception):
    """The survey was told to stop (the dump failed); never seen by callers of result()."""


@dataclass
class SnapshotSurvey:
    """A survey running in a thread, in an exported snapshot, while pg_dump dumps it.

    Use :func:`surveying`; :meth:`result` joins it and re-raises its error.
    """

    db: PostgresDatabase
    snapshot_id: str
    on_table: TableFn | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _conn: psycopg.Connection | None = None
    _content: Content | None = None
    _error: BaseException | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread; return once the snapshot is imported, tables locked, sequences read.

        pg_dump, started after this returns, therefore reads the sequences later than we did.

        Raises:
            ExternalSystemError: the survey failed before that point (login, lock timeout).
        """
        self._thread = threading.Thread(target=self._run, name="content-survey", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def _run(self) -> None:
        try:
            with connect(self.db, autocommit=True) as conn:
                self._conn = conn
                pin_output_settings(conn)
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(
                    sql.Literal(self.snapshot_id)))
                tables = user_tables(conn)
                lock_tables(conn, tables)
                sequences = read_sequences(conn)
                self._ready.set()
                counted = table_checksums(conn, tables, self._progress)
                self._content = Content(tables=counted, sequences=sequences,
                                        large_objects=large_objects(conn))
        except BaseException as exc:  # handed to the main thread by result()
            self._error = exc
        finally:
            self._conn = None
            self._ready.set()

    def _progress(self, count: TableCount) -> None:
        if self._stopping.is_set():  # a cancel that fell between two statements
            raise SurveyCancelledError("content survey cancelled")
        if self.on_table is not None:
            self.on_table(count)

    def result(self) -> Content:
        """Wait for the survey to finish and return what it found.

        Returns:
            The content of the snapshot.

        Raises:
            ExternalSystemError: the survey's own error (translated from psycopg).
        """
        assert self._thread is not None, "start() first"
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._content is not None
        return self._content

    def cancel(self) -> None:
        """Cancel the running statement (the dump failed: no need to finish) and join."""
        if self._thread is None:
            return
        self._stopping.set()
        conn = self._conn
        if self._thread.is_alive() and conn is not None:
            with contextlib.suppress(Exception):
                conn.cancel_safe(timeout=10)
        self._thread.join()


@contextlib.contextmanager
def surveying(
    db: PostgresDatabase, snapshot_id: str, *, on_table: TableFn | None = None
) -> Iterator[SnapshotSurvey]:
    """Survey exported snapshot ``snapshot_id`` on a second connection, in a thread.

    Enter it inside :func:`~tasks.recovery.postgres.exported_snapshot` and start pg_dump in
    the block: it returns once the snapshot is imported (the exporting transaction may then
    end any time), every table is locked and the sequences are read; counting and
    checksumming then run at the same time as the dump (the two scans of a table share the
    buffer cache; PostgreSQL synchronizes concurrent sequential scans of big tables).
    Leaving the block before :meth:`result` (the dump failed) stops the survey at its next
    statement.

    Args:
        db: the database block.
        snapshot_id: from ``pg_export_snapshot()``.
        on_table: called from the survey's thread after each table (progress).

    Yields:
        The running survey; call ``result()`` after the dump.
    """
    survey = SnapshotSurvey(db, snapshot_id, on_table)
    survey.start()
    try:
        yield survey
    finally:
        survey.cancel()
