"""The restore test (plain function) against real PostgreSQL, gpg and moto."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from pydantic import SecretStr

from tasks.recovery.backup import run_backup
from tasks.recovery.integrity import run_amcheck
from tasks.recovery.restore_test import (
    RestoreTestReport,
    RestoreTestRequest,
    render_markdown,
    run_restore_test,
    scratch_name,
)
from tests.fixtures.recovery import SEED_COUNTS, databases, drop_db


def test_restore_test_restores_checks_and_drops_scratch(
    seeded_db, store_block, encryption_block, decryption_block, pg_server
):
    m = run_backup(seeded_db, store_block, encryption_block).manifest
    report = run_restore_test(
        seeded_db, store_block, decryption_block,
        RestoreTestRequest(smoke_sql=["SELECT count(*) = 300 FROM artists", "SELECT true"]),
        now=lambda: m.finished_at + timedelta(minutes=5),
    )
    assert report.backup_id == m.backup_id and report.passed
    assert report.table_mismatches == [] and report.smoke_failures == []
    assert report.amcheck_indexes and report.amcheck_indexes >= 5
    assert report.rows_checked == sum(SEED_COUNTS.values())
    assert report.content_checks == [
        "row counts: 4 tables equal", "table checksums: 4 tables equal",
        "sequences: 3 sequences equal", "large objects: 0 recorded, count and content equal",
    ]
    assert report.amcheck_note == (
        f"amcheck: {report.amcheck_indexes} btree indexes checked, no failures")
    assert report.rpo_seconds == 300 and report.rpo_met and report.rto_met
    assert scratch_name(m.backup_id) not in databases(pg_server)
    md = render_markdown(report)
    assert "PASSED" in md and "RTO" in md and "RPO" in md and m.backup_id in md
    assert "- table checksums: 4 tables equal" in md and "- amcheck: " in md


def test_restore_test_reports_failed_smoke_and_stale_backup(
    seeded_db, store_block, encryption_block, decryption_block, pg_server
):
    m = run_backup(seeded_db, store_block, encryption_block).manifest
    report = run_restore_test(
        seeded_db, store_block, decryption_block,
        RestoreTestRequest(backup_id=m.backup_id, smoke_sql=["SELECT count(*) = 1 FROM artists"]),
        now=lambda: m.finished_at + timedelta(hours=2),
    )
    assert not report.passed and not report.rpo_met
    assert report.smoke_failures == ["smoke query 1 returned False"]
    assert "FAILED" in render_markdown(report)
    assert scratch_name(m.backup_id) not in databases(pg_server)


def test_scratch_name_is_a_safe_identifier():
    assert scratch_name("20261127T030000Z-full") == "restore_test_20261127t030000z_full"


def test_rpo_is_the_backup_age_when_the_test_starts(
    seeded_db, store_block, encryption_block, decryption_block
):
    m = run_backup(seeded_db, store_block, encryption_block).manifest
    start = m.finished_at + timedelta(minutes=10)
    ticks = iter([start, start + timedelta(hours=3)])  # the restore itself "takes" 3 hours

    def clock():
        return next(ticks, start + timedelta(hours=3))

    report = run_restore_test(seeded_db, store_block, decryption_block, now=clock)
    assert report.started_at == start
    assert report.rpo_seconds == 600 and report.rpo_met, "the restore's duration is not RPO"
    assert report.tested_at == start + timedelta(hours=3)


def test_amcheck_unavailable_is_reported_as_not_checked(pg_server, seeded_db):
    """amcheck is not a trusted extension: a role that is not superuser cannot create it."""
    role, dbname = f"r_{uuid.uuid4().hex[:8]}", f"amc_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'amcheck-test-pw'")
        conn.execute(f"CREATE DATABASE {dbname} OWNER {role}")
    block = seeded_db.model_copy(update={"user": role, "password": SecretStr("amcheck-test-pw")})
    try:
        with block.connect(dbname) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text UNIQUE)")
            conn.execute("INSERT INTO t SELECT g, g::text FROM generate_series(1, 100) g")
        unavailable = run_amcheck(block, dbname)
        assert unavailable.indexes is None and unavailable.failures == []
        assert unavailable.summary().startswith("amcheck: not checked (extension unavailable)")
        assert "permission denied" in unavailable.summary()
        available = run_amcheck(seeded_db, dbname)  # the superuser can
        assert available.indexes == 2 and available.failures == []
    finally:
        drop_db(pg_server, dbname)
        with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")
    report = RestoreTestReport(
        backup_id="20261127T030000Z-full", database="veza_db", scratch_database=dbname,
        tested_at=datetime.now(UTC), backup_finished_at=datetime.now(UTC), size_bytes=1,
        tables_checked=1, rows_checked=100, amcheck_indexes=None,
        amcheck_note=unavailable.summary(), rto_seconds=1, rpo_seconds=1,
    )
    md = render_markdown(report)
    assert report.passed, "an unavailable check is not a failure..."
    assert "| amcheck | not checked (extension unavailable) | no failure | NOT CHECKED |" in md
    assert "- amcheck: not checked (extension unavailable): permission denied" in md
