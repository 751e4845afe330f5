"""Checks of a restored database: content vs the manifest, amcheck, operator smoke SQL."""

from __future__ import annotations

from psycopg import sql
from pydantic import BaseModel, Field

from blocks.postgres import PostgresDatabase
from errors import ExternalSystemError
from tasks.logs import ModuleLogger
from tasks.recovery.content import Content, survey_database
from tasks.recovery.manifest import LargeObjects, Manifest, SequenceValue, TableCount
from tasks.recovery.postgres import connect, pg_errors

logger = ModuleLogger(__name__)  # run logger inside a run: lines reach the UI
NOT_RECORDED = "not recorded (the backup predates this check)"


def _reason(exc: ExternalSystemError, db: PostgresDatabase, target: str) -> str:
    """The server's first line from a translated error, without the ``user@host:port/db`` part."""
    where = f"{exc.system}: {db.user}@{db.host}:{db.port}/{target}: "
    return exc.message.removeprefix(where)[:200]


class ContentVerdict(BaseModel):
    """A restored database compared with its manifest."""

    problems: list[str] = Field(default_factory=list, description="every difference, named")
    checks: list[str] = Field(
        default_factory=list, description="one line per check: what was compared, or why not"
    )


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


def compare_checksums(expected: list[TableCount], actual: list[TableCount]) -> list[str]:
    """Tables with the manifest's row count whose content checksum differs.

    Tables missing on either side or with another row count are left to
    :func:`compare_counts` (named once); tables without a recorded checksum are skipped.

    Args:
        expected: from the manifest.
        actual: surveyed in the restored database.

    Returns:
        One line per table whose content differs.
    """
    got = {(t.schema_name, t.table): t for t in actual}
    return [
        f"table {w.schema_name}.{w.table}: content differs from the manifest "
        f"(checksum {g.checksum}, manifest says {w.checksum})"
        for w in expected
        if (g := got.get((w.schema_name, w.table))) is not None
        and w.checksum is not None and g.rows == w.rows and g.checksum != w.checksum
    ]


def compare_sequences(
    expected: list[SequenceValue], actual: list[SequenceValue]
) -> tuple[list[str], int]:
    """Sequences restored behind the manifest (their values would be handed out again).

    The manifest reads sequences just before pg_dump starts and pg_dump reads them later
    (sequences are not transactional), so a sequence used during the dump restores ahead
    of the manifest: that is counted, not a problem.

    Args:
        expected: from the manifest.
        actual: read in the restored database.

    Returns:
        (one line per problem, how many restored ahead).
    """
    want = {(q.schema_name, q.name): q for q in expected}
    got = {(q.schema_name, q.name): q for q in actual}
    problems = [f"sequence {s}.{n} missing after restore" for s, n in sorted(want.keys() - got)]
    problems += [f"sequence {s}.{n} not in the manifest" for s, n in sorted(got.keys() - want)]
    ahead = 0
    for key in sorted(want.keys() & got.keys()):
        w, g = want[key], got[key]
        step = (g.next_value() - w.next_value()) * (1 if w.increment > 0 else -1)
        if step > 0:
            ahead += 1
        elif step < 0:
            problems.append(
                f"sequence {key[0]}.{key[1]}: next value {g.next_value()}, manifest says "
                f"{w.next_value()} (values would be handed out again)"
            )
    return problems, ahead


def compare_large_objects(expected: LargeObjects, actual: LargeObjects) -> list[str]:
    """Large objects missing, extra or with other content than the manifest says.

    Args:
        expected: from the manifest.
        actual: surveyed in the restored database.

    Returns:
        One line per difference, naming the object when both sides kept per-object md5s.
    """
    if expected.objects is not None and actual.objects is not None:
        want, got = expected.objects, actual.objects
        problems = [f"large object {o} missing after restore" for o in sorted(want.keys() - got)]
        problems += [f"large object {o} not in the manifest" for o in sorted(got.keys() - want)]
        problems += [f"large object {o}: content differs from the manifest"
                     for o in sorted(want.keys() & got.keys()) if want[o] != got[o]]
        return problems
    if (expected.count, expected.checksum) != (actual.count, actual.checksum):
        return [f"large objects: {actual.count} restored, manifest says {expected.count}; "
                "aggregate checksum differs"
                if expected.count != actual.count
                else "large objects: content differs from the manifest (aggregate checksum)"]
    return []


def _summary(what: str, total: int, unit: str, differing: int) -> str:
    if differing:
        return f"{what}: {differing} of {total} {unit} differ"
    return f"{what}: {total} {unit} equal"


def compare_content(manifest: Manifest, restored: Content) -> ContentVerdict:
    """Compare a restored database's content with what the manifest recorded.

    Checks a manifest does not carry (backups made before them) are reported as
    ``not recorded``, never as passed or failed.

    Args:
        manifest: the backup's manifest.
        restored: the restored database's survey.

    Returns:
        Every problem, and one line per check.
    """
    verdict = ContentVerdict()
    counts = compare_counts(manifest.tables, restored.tables)
    verdict.problems += counts
    verdict.checks.append(_summary("row counts", len(manifest.tables), "tables", len(counts)))
    same_method = manifest.content_method == restored.method
    if not any(t.checksum is not None for t in manifest.tables):
        verdict.checks.append(f"table checksums: {NOT_RECORDED}")
    elif not same_method:
        verdict.checks.append("table checksums: not compared (recorded with another method: "
                              f"{manifest.content_method})")
    else:
        sums = compare_checksums(manifest.tables, restored.tables)
        verdict.problems += sums
        verdict.checks.append(_summary("table checksums", len(manifest.tables), "tables",
                                       len(sums)))
    if manifest.sequences is None:
        verdict.checks.append(f"sequences: {NOT_RECORDED}")
    else:
        seqs, ahead = compare_sequences(manifest.sequences, restored.sequences)
        verdict.problems += seqs
        line = _summary("sequences", len(manifest.sequences), "sequences", len(seqs))
        verdict.checks.append(line + (f"; {ahead} ahead (used while the dump ran)"
                                      if ahead else ""))
    if manifest.large_objects is None:
        verdict.checks.append(f"large objects: {NOT_RECORDED}")
    elif not same_method:
        verdict.checks.append("large objects: not compared (recorded with another method)")
    else:
        los = compare_large_objects(manifest.large_objects, restored.large_objects)
        verdict.problems += los
        verdict.checks.append(
            f"large objects: {manifest.large_objects.count} recorded, "
            + (f"{len(los)} differences" if los else "count and content equal")
        )
    return verdict


def check_against_manifest(db: PostgresDatabase, target: str, manifest: Manifest) -> ContentVerdict:
    """Survey the restored database and compare it with the manifest.

    One scan per table (count and checksum together), then the sequences and large objects.

    Args:
        db: the server block.
        target: the restored database.
        manifest: the backup's manifest.

    Returns:
        The verdict: its ``problems`` are empty when the copy matches.
    """
    return compare_content(manifest, survey_database(db, target))


class AmcheckResult(BaseModel):
    """What amcheck found in a restored database."""

    indexes: int | None = Field(description="btree indexes verified; None = not checked")
    failures: list[str] = Field(default_factory=list)
    unavailable_reason: str = Field(default="", description="why it could not run")

    def summary(self) -> str:
        """One line for the report, e.g. ``amcheck: not checked (extension unavailable): ...``."""
        if self.indexes is None:
            return f"amcheck: not checked (extension unavailable): {self.unavailable_reason}"
        return (f"amcheck: {self.indexes} btree indexes checked, "
                f"{len(self.failures) or 'no'} failures")


def run_amcheck(db: PostgresDatabase, target: str) -> AmcheckResult:
    """Verify every btree index of ``target`` with amcheck's ``bt_index_check`` (heapallindexed).

    ``CREATE EXTENSION IF NOT EXISTS amcheck`` runs first (in the scratch copy). amcheck is
    not a trusted extension: a role that is not superuser cannot create it, and a server
    without contrib lacks it. Then nothing is checked and the result says so (neither a
    failure nor a pass).

    Args:
        db: the server block.
        target: the database (a scratch copy: the extension is created in it).

    Returns:
        Indexes checked (None when amcheck is unavailable, with the reason) and failures.
    """
    failures: list[str] = []
    with connect(db, target, autocommit=True) as conn:
        try:
            with pg_errors(db, target):
                conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        except ExternalSystemError as exc:
            reason = _reason(exc, db, target)
            logger.warning("amcheck not available in %s: %s", target, reason)
            return AmcheckResult(indexes=None, unavailable_reason=reason)
        indexes = conn.execute(
            """SELECT c.oid, n.nspname, c.relname FROM pg_index i
               JOIN pg_class c ON c.oid = i.indexrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_am am ON am.oid = c.relam
               WHERE am.amname = 'btree' AND i.indisvalid AND i.indisready
               AND c.relpersistence <> 't'
               AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
               ORDER BY 2, 3"""
        ).fetchall()
        for oid, schema, name in indexes:
            try:
                with pg_errors(db, target):
                    conn.execute("SELECT bt_index_check(%s::regclass, true)", (oid,))
            except ExternalSystemError as exc:
                failures.append(f"index {schema}.{name}: {_reason(exc, db, target)}")
    return AmcheckResult(indexes=len(indexes), failures=failures)


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
