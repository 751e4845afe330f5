"""The restore test (plain function) against real PostgreSQL, gpg and moto."""

from __future__ import annotations

from datetime import timedelta

from tasks.recovery.backup import run_backup
from tasks.recovery.restore_test import (
    RestoreTestRequest,
    render_markdown,
    run_restore_test,
    scratch_name,
)
from tests.fixtures.recovery import SEED_COUNTS, databases


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
    assert report.rpo_seconds == 300 and report.rpo_met and report.rto_met
    assert scratch_name(m.backup_id) not in databases(pg_server)
    md = render_markdown(report)
    assert "PASSED" in md and "RTO" in md and "RPO" in md and m.backup_id in md


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
