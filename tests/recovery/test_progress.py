"""Progress of backup and restore: the throttle, one unit on both sides, never fatal."""

from __future__ import annotations

import logging

import psycopg

from tasks.recovery import progress as progress_module
from tasks.recovery.backup import backup_task, run_backup
from tasks.recovery.catalogue import list_backups
from tasks.recovery.progress import ProgressArtifact, Throttle, dump_estimate_bytes, percent


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_percent_never_shows_100_before_the_end():
    assert percent(0, 100) == 0.0
    assert percent(25, 100) == 25.0
    assert percent(100, 100) == 99.0  # the download is done, pg_restore is not
    assert percent(300, 100) == 99.0  # an estimate outgrown: waits at 99 %
    assert percent(10, 0) == 0.0  # unknown total


def test_throttle_lets_through_steps_or_time_never_every_part():
    clock = Clock()
    throttle = Throttle(min_step_pct=5.0, min_interval_s=10.0, clock=clock)
    assert not throttle.due(0.0)  # created at 0 %: nothing new
    # 16 MiB parts of a 200 GiB dump: 0.008 % each, many per second
    small = [throttle.due(i * 0.008) for i in range(1, 200)]
    assert not any(small)
    clock.now = 10.0
    assert throttle.due(1.8)  # 10 s later: any move goes out
    assert not throttle.due(1.9)
    assert throttle.due(6.8)  # a 5-point step goes out at once
    clock.now = 100.0
    assert not throttle.due(6.8)  # no move: nothing to say, however long it has been
    # a whole fast operation: at most 100 / 5 calls from progress
    fast = Throttle(min_step_pct=5.0, min_interval_s=10.0, clock=Clock())
    assert sum(fast.due(p / 100) for p in range(1, 10_000)) == 19  # 5, 10, ..., 95 %


def test_backup_progress_counts_pg_dump_bytes_against_table_data(seeded_db, pg_server,
                                                                 store_block, encryption_block):
    seen: list[tuple[int, int]] = []
    # Autovacuum of the freshly seeded tables adds their free-space and visibility maps
    # (pg_table_size counts them) at any moment: once between the backup and the check below
    # (16 kB). Vacuumed first, the sizes stay put.
    with psycopg.connect(pg_server.conninfo(seeded_db.dbname), autocommit=True) as conn:
        conn.execute("VACUUM")
    m = run_backup(seeded_db, store_block, encryption_block,
                   on_progress=lambda done, total: seen.append((done, total))).manifest
    with psycopg.connect(pg_server.conninfo(seeded_db.dbname)) as conn:
        tables, whole = conn.execute(
            "SELECT sum(pg_table_size(c.oid)) + pg_table_size('pg_largeobject'), "
            "pg_database_size(current_database()) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname IN ('public', 'chat')").fetchone()
    assert seen and seen[-1][0] == m.plain_bytes  # numerator: what pg_dump wrote
    assert {total for _, total in seen} == {tables} == {dump_estimate_bytes(seeded_db)}
    assert tables < whole  # neither indexes nor catalogs in the denominator
    assert 0.5 < m.plain_bytes / tables < 2  # the same unit: bytes of table data


def test_a_failing_progress_update_never_fails_the_backup(
    prefect_harness, seeded_db, store_block, encryption_block, monkeypatch, caplog
):
    calls: list[float] = []

    def broken_update(artifact_id, progress, **_kw):
        calls.append(progress)
        raise RuntimeError("artifact API down")

    monkeypatch.setattr(progress_module, "update_progress_artifact", broken_update)
    caplog.set_level(logging.INFO)
    outcome = backup_task(seeded_db, store_block, encryption_block)
    records = list_backups(store_block.get_client(), store_block.bucket, store_block.prefix,
                           database=seeded_db.dbname)
    assert [(r.backup_id, r.complete) for r in records] == [(outcome.manifest.backup_id, True)]
    assert len(calls) == 1  # after the first failure the bar is left alone
    warnings = [r for r in caplog.records if "progress artifact" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "RuntimeError" in warnings[0].getMessage()


def test_a_failing_artifact_api_is_logged_once(monkeypatch, caplog):
    def down(*_a, **_kw):
        raise ConnectionError("no API")

    monkeypatch.setattr(progress_module, "create_progress_artifact", down)
    caplog.set_level(logging.INFO)
    bar = ProgressArtifact(key="restore-progress-x", description="d", what="restore of x",
                           throttle=Throttle(min_step_pct=1, clock=Clock())).start()
    for done in range(0, 101, 10):
        bar.update(done, 100)
    bar.finish()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "could not create" in warnings[0].getMessage()
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert lines[-1] == "restore of x: 100 %" and len(lines) == 11  # 10..99 % then 100 %
