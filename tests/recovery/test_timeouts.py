"""Backups never hang behind a lock: pg_dump and our own sessions give up within their setting."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from errors import PipelineError, TransientSystemError
from tasks.recovery.backup import dump_stages, run_backup
from tasks.recovery.pipeline import Pipeline


@pytest.fixture()
def lock_holder(pg_server: Any, seeded_db: Any) -> Iterator[psycopg.Connection]:
    """Another session holding ACCESS EXCLUSIVE on ``tracks`` in an open transaction."""
    with psycopg.connect(pg_server.conninfo(seeded_db.dbname)) as conn:
        conn.execute("LOCK TABLE tracks IN ACCESS EXCLUSIVE MODE")
        yield conn


def _holder_unaffected(conn: psycopg.Connection) -> None:
    """The holder's transaction goes on and commits (nothing of ours cancelled it)."""
    conn.execute("INSERT INTO tracks (artist_id, title, duration_s) VALUES (1, 'late', 1)")
    conn.commit()
    assert conn.execute("SELECT count(*) FROM tracks WHERE title = 'late'").fetchone() == (1,)


def test_pg_dump_behind_a_lock_fails_with_a_clear_error(
    seeded_db, encryption_block, lock_holder, pg_server
):
    db = seeded_db.model_copy(update={"lock_wait_timeout_s": 1})
    with psycopg.connect(pg_server.conninfo(db.dbname)) as snap_conn:
        snap_conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        row = snap_conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        with encryption_block.keyring() as keyring, db.libpq_env() as env:
            stages = dump_stages(db, env=env, snapshot_id=row[0], gnupghome=keyring.home,
                                 recipients=keyring.fingerprints)
            assert "--lock-wait-timeout=1000" in stages[0].argv
            with Pipeline(stages) as pipe, pytest.raises(PipelineError) as caught:
                pipe.output.read()
                pipe.check(timeout=60)
    said = str(caught.value)  # pg_dump bounds its lock wait with a statement timeout
    assert "pg_dump said" in said and "canceling statement due to statement timeout" in said
    assert "LOCK TABLE public.tracks" in said
    _holder_unaffected(lock_holder)


def test_our_counting_session_behind_a_lock_fails_not_hangs(
    seeded_db, store_block, encryption_block, lock_holder, s3_client
):
    db = seeded_db.model_copy(update={"lock_wait_timeout_s": 1})
    with pytest.raises(TransientSystemError) as caught:
        run_backup(db, store_block, encryption_block)
    assert "gave up waiting for a table lock" in str(caught.value)
    assert "lock_wait_timeout_s" in (caught.value.hint or "")
    assert s3_client.list_objects_v2(Bucket=store_block.bucket).get("KeyCount") == 0
    _holder_unaffected(lock_holder)


def test_our_sessions_carry_their_time_limits(seeded_db):
    db = seeded_db.model_copy(
        update={"lock_wait_timeout_s": 7, "statement_timeout_s": 90,
                "idle_in_transaction_timeout_s": 3600}
    )
    with db.connect() as conn:
        settings = {
            name: conn.execute(f"SHOW {name}").fetchone()
            for name in ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout")
        }
    assert settings == {
        "lock_timeout": ("7s",), "statement_timeout": ("90s",),
        "idle_in_transaction_session_timeout": ("1h",),
    }
