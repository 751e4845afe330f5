"""Restore test and real restore (plain functions) against real PostgreSQL, gpg and moto."""

from __future__ import annotations

import json
from datetime import timedelta

import psycopg
import pytest

from errors import IntegrityError, RestoreRefusedError
from tasks.recovery.backup import run_backup
from tasks.recovery.manifest import MANIFEST_NAME, backup_prefix
from tasks.recovery.restore_test import render_markdown, run_restore_test, scratch_name
from tasks.recovery.restoring import run_restore
from tests.fixtures.recovery import SEED_COUNTS, drop_db


def _content_checksum(server, dbname):
    with psycopg.connect(server.conninfo(dbname)) as conn:
        return conn.execute(
            """SELECT md5(string_agg(x, ',' ORDER BY x)) FROM (
                 SELECT t::text AS x FROM artists t UNION ALL SELECT t::text FROM tracks t
                 UNION ALL SELECT t::text FROM chat.messages t) s"""
        ).fetchone()[0]


def _databases(server):
    with psycopg.connect(server.conninfo()) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


def test_restore_test_restores_checks_and_drops_scratch(
    seeded_db, store_block, encryption_block, decryption_block, pg_server
):
    m = run_backup(seeded_db, store_block, encryption_block).manifest
    report = run_restore_test(
        seeded_db, store_block, decryption_block,
        smoke_sql=["SELECT count(*) = 300 FROM artists", "SELECT true"],
        now=lambda: m.finished_at + timedelta(minutes=5),
    )
    assert report.backup_id == m.backup_id and report.passed
    assert report.table_mismatches == [] and report.smoke_failures == []
    assert report.amcheck_indexes and report.amcheck_indexes >= 5
    assert report.rows_checked == sum(SEED_COUNTS.values())
    assert report.rpo_seconds == 300 and report.rpo_met and report.rto_met
    assert scratch_name(m.backup_id) not in _databases(pg_server)
    md = render_markdown(report)
    assert "PASSED" in md and "RTO" in md and "RPO" in md and m.backup_id in md


def test_restore_test_reports_failed_smoke_and_stale_backup(
    seeded_db, store_block, encryption_block, decryption_block, pg_server
):
    m = run_backup(seeded_db, store_block, encryption_block).manifest
    report = run_restore_test(
        seeded_db, store_block, decryption_block, backup_id=m.backup_id,
        smoke_sql=["SELECT count(*) = 1 FROM artists"],
        now=lambda: m.finished_at + timedelta(hours=2),
    )
    assert not report.passed and not report.rpo_met
    assert report.smoke_failures == ["smoke query 1 returned False"]
    assert "FAILED" in render_markdown(report)
    assert scratch_name(m.backup_id) not in _databases(pg_server)


def test_restore_into_new_database_then_guarded_overwrite(
    seeded_db, store_block, encryption_block, decryption_block, pg_server
):
    m = run_backup(seeded_db, store_block, encryption_block).manifest
    target = seeded_db.dbname + "_copy"
    try:
        out = run_restore(seeded_db, store_block, decryption_block, backup_id=m.backup_id,
                          target_database=target)
        assert not out.overwrote and out.rows == sum(SEED_COUNTS.values())
        assert _content_checksum(pg_server, target) == _content_checksum(
            pg_server, seeded_db.dbname)
        with psycopg.connect(pg_server.conninfo(target)) as conn:
            conn.execute("DELETE FROM chat.messages WHERE id > 10")
        with pytest.raises(RestoreRefusedError, match="confirm_overwrite"):
            run_restore(seeded_db, store_block, decryption_block, backup_id=m.backup_id,
                        target_database=target, confirm_overwrite="yes")
        with psycopg.connect(pg_server.conninfo(target)) as conn:  # untouched
            assert conn.execute("SELECT count(*) FROM chat.messages").fetchone()[0] == 10
        out = run_restore(seeded_db, store_block, decryption_block, backup_id=m.backup_id,
                          target_database=target, confirm_overwrite=target)
        assert out.overwrote
        assert _content_checksum(pg_server, target) == _content_checksum(
            pg_server, seeded_db.dbname)
    finally:
        drop_db(pg_server, target)


def test_checksum_mismatch_restores_nothing(
    seeded_db, store_block, encryption_block, decryption_block, pg_server, s3_client
):
    m = run_backup(seeded_db, store_block, encryption_block).manifest
    key = backup_prefix(store_block.prefix, seeded_db.dbname, m.backup_id) + MANIFEST_NAME
    doc = json.loads(m.model_dump_json())
    doc["sha256"] = "0" * 64
    s3_client.put_object(Bucket=store_block.bucket, Key=key, Body=json.dumps(doc).encode())
    target = seeded_db.dbname + "_bad"
    with pytest.raises(IntegrityError, match="SHA-256") as err:
        run_restore(seeded_db, store_block, decryption_block, backup_id=m.backup_id,
                    target_database=target)
    assert "nothing was restored" in str(err.value)
    assert target not in _databases(pg_server)
    with pytest.raises(IntegrityError, match="SHA-256"):
        run_restore_test(seeded_db, store_block, decryption_block)
    assert scratch_name(m.backup_id) not in _databases(pg_server)
