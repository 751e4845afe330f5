"""Content checks: row counts, table checksums, sequences and large objects, taken in the dump's
snapshot while pg_dump runs, recorded in the manifest and compared after a restore."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from tasks.recovery.backup import run_backup
from tasks.recovery.content import CONTENT_METHOD, survey_database, surveying
from tasks.recovery.integrity import check_against_manifest
from tasks.recovery.manifest import MANIFEST_NAME, Manifest
from tasks.recovery.pipeline import Pipeline, Stage
from tasks.recovery.postgres import exported_snapshot
from tasks.recovery.restore_test import RestoreTestRequest, render_markdown, run_restore_test
from tasks.recovery.restoring import RestoreRequest, run_restore
from tests.fixtures.recovery import SEED_COUNTS, drop_db

LO_BYTES = b"\x00\x01veza large object\xff" * 100

EXTRA_SQL = """
CREATE SEQUENCE standalone_seq START 1 INCREMENT 5;
SELECT nextval('standalone_seq'), nextval('standalone_seq');
CREATE SEQUENCE untouched_seq;
CREATE TABLE prices (id int PRIMARY KEY, amount numeric, ratio float8, span interval,
                     day date, at timestamptz, tags text[]);
INSERT INTO prices SELECT g, g * 1.5, 1.0 / g, g * interval '90 minutes',
    date '2026-01-01' + g, timestamptz '2026-01-01 00:00+02' + g * interval '1 hour',
    ARRAY['a' || g, NULL] FROM generate_series(1, 50) g;
"""


@pytest.fixture()
def content_db(seeded_db: Any, pg_server: Any) -> tuple[Any, int]:
    """The seeded database plus sequences, a table of many types and a large object."""
    with psycopg.connect(pg_server.conninfo(seeded_db.dbname)) as conn:
        conn.execute(EXTRA_SQL)
        row = conn.execute("SELECT lo_from_bytea(0, %s)", (LO_BYTES,)).fetchone()
    assert row is not None
    return seeded_db, int(row[0])


def _sql(server: Any, dbname: str, statement: str, *args: Any) -> Any:
    with psycopg.connect(server.conninfo(dbname)) as conn:
        cur = conn.execute(statement, args or None)
        return cur.fetchall() if cur.description else None


def test_backup_records_counts_checksums_sequences_and_large_objects(
    content_db, store_block, encryption_block, pg_server
):
    db, loid = content_db
    m = run_backup(db, store_block, encryption_block).manifest
    assert m.content_method == CONTENT_METHOD and m.snapshot_consistent
    tables = {(t.schema_name, t.table): t for t in m.tables}
    assert {k: t.rows for k, t in tables.items()} == {**SEED_COUNTS, ("public", "prices"): 50}
    assert all(t.checksum is not None for t in m.tables)
    assert tables[("public", "empty_table")].checksum == "0"
    assert len({t.checksum for t in m.tables if t.rows}) == 4  # distinct contents
    sequences = {(q.schema_name, q.name): q for q in m.sequences or []}
    assert set(sequences) == {("public", "artists_id_seq"), ("public", "tracks_id_seq"),
                              ("chat", "messages_id_seq"), ("public", "standalone_seq"),
                              ("public", "untouched_seq")}
    assert (sequences[("public", "artists_id_seq")].last_value,
            sequences[("public", "artists_id_seq")].is_called) == (300, True)
    standalone = sequences[("public", "standalone_seq")]
    assert (standalone.last_value, standalone.is_called, standalone.increment) == (6, True, 5)
    assert standalone.next_value() == 11
    untouched = sequences[("public", "untouched_seq")]
    assert (untouched.last_value, untouched.is_called, untouched.next_value()) == (1, False, 1)
    assert m.large_objects is not None and m.large_objects.count == 1
    assert m.large_objects.objects == {loid: hashlib.md5(LO_BYTES).hexdigest()}
    # the manifest as stored in S3 reads back the same (large object oids as JSON keys)
    stored = store_block.get_client().get_object(
        Bucket=store_block.bucket, Key=m.data_key.rsplit("/", 1)[0] + "/" + MANIFEST_NAME)
    assert Manifest.model_validate_json(stored["Body"].read()) == m
    # the same survey of the live database (unchanged since) gives the same checksums
    live = survey_database(db, db.dbname)
    assert live.tables == m.tables and live.large_objects == m.large_objects


def test_restore_compares_equal_and_a_changed_value_is_caught_and_named(
    content_db, store_block, encryption_block, decryption_block, pg_server
):
    db, loid = content_db
    m = run_backup(db, store_block, encryption_block).manifest
    target = db.dbname + "_copy"
    try:
        run_restore(db, store_block, decryption_block,  # compares, raises on a difference
                    RestoreRequest(backup_id=m.backup_id, target_database=target))
        verdict = check_against_manifest(db, target, m)
        assert verdict.problems == []
        assert verdict.checks == [
            "row counts: 5 tables equal", "table checksums: 5 tables equal",
            "sequences: 5 sequences equal", "large objects: 1 recorded, count and content equal",
        ]
        # one value of one row, after the restore and before the comparison
        _sql(pg_server, target, "UPDATE tracks SET duration_s = duration_s + 1 WHERE id = 1234")
        verdict = check_against_manifest(db, target, m)
        assert verdict.problems == [
            "table public.tracks: content differs from the manifest (checksum "
            f"{next(t for t in survey_database(db, target).tables if t.table == 'tracks').checksum}"
            f", manifest says {next(t for t in m.tables if t.table == 'tracks').checksum})"
        ]
        assert "table checksums: 1 of 5 tables differ" in verdict.checks
        # a sequence set back and a large object rewritten are named too
        _sql(pg_server, target, "SELECT setval('chat.messages_id_seq', 2000)")
        _sql(pg_server, target, "SELECT lo_put(%s, 3, 'X'::bytea)", loid)
        _sql(pg_server, target, "UPDATE prices SET at = at + interval '1 second' WHERE id = 7")
        problems = check_against_manifest(db, target, m).problems
        assert [p.split(":")[0] for p in problems] == [
            "table public.prices", "table public.tracks", "sequence chat.messages_id_seq",
            f"large object {loid}",
        ]
        assert "next value 2001, manifest says 2501" in problems[2]
    finally:
        drop_db(pg_server, target)


def test_a_sequence_used_while_the_dump_ran_restores_ahead_without_a_problem(
    content_db, store_block, encryption_block, pg_server
):
    db, _ = content_db
    m = run_backup(db, store_block, encryption_block).manifest
    _sql(pg_server, db.dbname, "SELECT nextval('standalone_seq')")  # as pg_dump would see it
    verdict = check_against_manifest(db, db.dbname, m)
    assert verdict.problems == []
    assert "sequences: 5 sequences equal; 1 ahead (used while the dump ran)" in verdict.checks


def test_manifest_from_before_content_checks_still_restores_and_says_not_recorded(
    content_db, store_block, encryption_block, decryption_block, pg_server
):
    db, _ = content_db
    m = run_backup(db, store_block, encryption_block).manifest
    # rewrite the stored manifest as the previous version wrote it: no new fields at all
    doc = json.loads(m.model_dump_json())
    for name in ("content_method", "sequences", "large_objects"):
        del doc[name]
    for table in doc["tables"]:
        del table["checksum"]
    doc["manifest_version"] = 1
    client = store_block.get_client()
    key = m.data_key.rsplit("/", 1)[0] + "/" + MANIFEST_NAME
    client.put_object(Bucket=store_block.bucket, Key=key, Body=json.dumps(doc).encode())

    report = run_restore_test(db, store_block, decryption_block,
                              RestoreTestRequest(backup_id=m.backup_id),
                              now=lambda: m.finished_at + timedelta(minutes=5))
    assert report.passed and report.table_mismatches == []
    assert report.content_checks == [
        "row counts: 5 tables equal",
        "table checksums: not recorded (the backup predates this check)",
        "sequences: not recorded (the backup predates this check)",
        "large objects: not recorded (the backup predates this check)",
    ]
    md = render_markdown(report)
    assert "- sequences: not recorded" in md and "PASSED" in md


def test_survey_sees_the_exported_snapshot_not_later_commits(content_db, pg_server):
    db, _ = content_db
    before = survey_database(db, db.dbname)
    with exported_snapshot(db) as snap:
        _sql(pg_server, db.dbname, "INSERT INTO artists (name) VALUES ('after the snapshot')")
        _sql(pg_server, db.dbname, "UPDATE prices SET amount = 0 WHERE id = 3")
        _sql(pg_server, db.dbname, "SELECT lo_from_bytea(0, 'late'::bytea)")
        with surveying(db, snap.snapshot_id) as survey:
            content = survey.result()
    assert content.tables == before.tables and content.large_objects == before.large_objects
    after = survey_database(db, db.dbname)
    assert after.tables != before.tables and after.large_objects.count == 2


def test_survey_checksums_while_pg_dump_streams_the_same_snapshot(content_db):
    """The survey's table scans run while pg_dump runs: the survey's first table waits until
    pg_dump has produced output (it would wait forever if the survey ran before the dump)."""
    db, _ = content_db
    dump_started, survey_waited = threading.Event(), threading.Event()
    seen: list[str] = []

    def first_table_waits_for_the_dump(count: Any) -> None:
        if not seen:
            survey_waited.set()
            assert dump_started.wait(timeout=120), "pg_dump never produced output"
        seen.append(count.table)

    with exported_snapshot(db) as snap, db.libpq_env() as env:
        with surveying(db, snap.snapshot_id, on_table=first_table_waits_for_the_dump) as survey:
            argv = ["pg_dump", "--format=custom", "--no-password",
                    f"--snapshot={snap.snapshot_id}"]
            with Pipeline([Stage("pg_dump", argv, env=env)]) as pipe:
                head = pipe.output.read(5)
                dump_started.set()
                rest = pipe.output.read()
                pipe.check(timeout=120)
            content = survey.result()
    assert head == b"PGDMP" and rest and survey_waited.is_set()
    assert seen == [t.table for t in content.tables] and len(seen) == 5


def test_leaving_the_survey_early_stops_it_without_finishing(content_db, pg_server):
    """The dump failed: the survey stops at its next statement instead of scanning on."""
    db, _ = content_db
    in_first_table = threading.Event()
    seen: list[str] = []
    survey_ref: list[Any] = []
    handed_over = threading.Event()  # the first table can be counted before start() returns

    def first_table_waits_for_the_stop(count: Any) -> None:
        seen.append(count.table)
        in_first_table.set()
        assert handed_over.wait(timeout=120)
        assert survey_ref[0]._stopping.wait(timeout=120)

    with pytest.raises(RuntimeError, match="dump failed"), exported_snapshot(db) as snap:
        with surveying(db, snap.snapshot_id, on_table=first_table_waits_for_the_stop) as survey:
            survey_ref.append(survey)
            handed_over.set()
            assert in_first_table.wait(timeout=120)
            raise RuntimeError("dump failed")
    assert seen == ["messages"] and not survey_ref[0]._thread.is_alive()
    sessions = _sql(pg_server, "postgres", "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", db.dbname)
    assert sessions == [(0,)]
