"""Checks of a restored database: row counts vs the manifest, amcheck, operator smoke SQL."""

from __future__ import annotations

import logging

from psycopg import sql

from blocks.postgres import PostgresDatabase
from errors import ExternalSystemError
from tasks.recovery.manifest import Manifest, TableCount
from tasks.recovery.postgres import connect, count_rows, pg_errors

logger = logging.getLogger(__name__)


def _reason(exc: ExternalSystemError, db: PostgresDatabase, target: str) -> str:
    """The server's first line from a translated error, without the ``user@host:port/db`` part."""
    where = f"{exc.system}: {db.user}@{db.host}:{db.port}/{target}: "
    return exc.message.removeprefix(where)[:200]


def compare_counts(expected: list[TableCount], actual: list[TableCount]) -> list[str]:
    """Differences between the manifest's tables/rows and the restored ones.

    Args:
        expected: from the manifest.
        actual: counted in the restored database.

    Returns:
        One line per difference (empty when identical).
    """
    want = {(t.schema_name, t.table): t.rows for t in expected}
    got = {(t.schema_name, t.table): t.rows for t in actual}
    problems = [f"table {s}.{t} missing after restore" for s, t in sorted(want.keys() - got)]
    problems += [f"table {s}.{t} not in the manifest" for s, t in sorted(got.keys() - want)]
    problems += [
        f"table {s}.{t}: {got[(s, t)]} rows, manifest says {want[(s, t)]}"
        for s, t in sorted(want.keys() & got.keys())
        if want[(s, t)] != got[(s, t)]
    ]
    return problems


def restored_counts(db: PostgresDatabase, target: str) -> list[TableCount]:
    """Row counts of every user table of ``target``."""
    with connect(db, target) as conn:
        return count_rows(conn)


def check_against_manifest(db: PostgresDatabase, target: str, manifest: Manifest) -> list[str]:
    """Compare the restored database with the manifest.

    Args:
        db: the server block.
        target: the restored database.
        manifest: the backup's manifest.

    Returns:
        The differences (empty when it matches).
    """
    return compare_counts(manifest.tables, restored_counts(db, target))


def run_amcheck(db: PostgresDatabase, target: str) -> tuple[int | None, list[str]]:
    """Verify every btree index of ``target`` with amcheck's ``bt_index_check`` (heapallindexed).

    Args:
        db: the server block.
        target: the database (a scratch copy: the extension is created in it).

    Returns:
        (indexes checked, or None when amcheck is not available; failures).
    """
    failures: list[str] = []
    with connect(db, target, autocommit=True) as conn:
        try:
            with pg_errors(db, target):
                conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        except ExternalSystemError as exc:
            logger.warning("amcheck not available in %s: %s", target, _reason(exc, db, target))
            return None, []
        indexes = conn.execute(
            """SELECT c.oid, n.nspname, c.relname FROM pg_index i
               JOIN pg_class c ON c.oid = i.indexrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_am am ON am.oid = c.relam
               WHERE am.amname = 'btree' AND i.indisvalid AND i.indisready
               AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
               ORDER BY 2, 3"""
        ).fetchall()
        for oid, schema, name in indexes:
            try:
                with pg_errors(db, target):
                    conn.execute("SELECT bt_index_check(%s::regclass, true)", (oid,))
            except ExternalSystemError as exc:
                failures.append(f"index {schema}.{name}: {_reason(exc, db, target)}")
    return len(indexes), failures


def run_smoke(db: PostgresDatabase, target: str, queries: list[str]) -> list[str]:
    """Run the operator's smoke queries; each must return a truthy first column.

    Args:
        db: the server block.
        target: the database.
        queries: SQL statements (read-only by convention; run in a rolled-back transaction).

    Returns:
        One line per failing query.
    """
    failures: list[str] = []
    with connect(db, target) as conn:
        for number, query in enumerate(queries, start=1):
            try:
                with pg_errors(db, target), conn.transaction(force_rollback=True):
                    row = conn.execute(sql.SQL(query)).fetchone()
            except ExternalSystemError as exc:
                failures.append(f"smoke query {number} failed: {_reason(exc, db, target)}")
                continue
            if not row or not row[0]:
                failures.append(f"smoke query {number} returned {row[0] if row else 'no row'!r}")
    return failures
