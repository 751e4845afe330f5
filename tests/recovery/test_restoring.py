"""The real restore (plain function) against real PostgreSQL, gpg and moto."""

from __future__ import annotations

import psycopg
import pytest

from errors import RestoreRefusedError
from tasks.recovery.backup import run_backup
from tasks.recovery.dbnames import sibling_name
from tasks.recovery.restoring import RestoreRequest, run_restore
from tests.fixtures.recovery import SEED_COUNTS, databases, drop_db


def _content_checksum(server, dbname):
    with psycopg.connect(server.conninfo(dbname)) as conn:
        return conn.execute(
            """SELECT md5(string_agg(x, ',' ORDER BY x)) FROM (
                 SELECT t::text AS x FROM artists t UNION ALL SELECT t::text FROM tracks t
                 UNION ALL SELECT t::text FROM chat.messages t) s"""
        ).fetchone()[0]


def test_restore_into_new_database_then_guarded_overwrite(
    seeded_db, store_block, encryption_block, decryption_block, pg_server
):
    m = run_backup(seeded_db, store_block, encryption_block).manifest

    def request(target: str, **more: str) -> RestoreRequest:
        return RestoreRequest(backup_id=m.backup_id, target_database=target, **more)

    target = seeded_db.dbname + "_copy"
    try:
        out = run_restore(seeded_db, store_block, decryption_block, request(target))
        assert not out.overwrote and out.rows == sum(SEED_COUNTS.values())
        assert _content_checksum(pg_server, target) == _content_checksum(
            pg_server, seeded_db.dbname)
        with psycopg.connect(pg_server.conninfo(target)) as conn:
            conn.execute("DELETE FROM chat.messages WHERE id > 10")
        with pytest.raises(RestoreRefusedError, match="confirm_overwrite"):
            run_restore(seeded_db, store_block, decryption_block,
                        request(target, confirm_overwrite="yes"))
        with psycopg.connect(pg_server.conninfo(target)) as conn:  # untouched
            assert conn.execute("SELECT count(*) FROM chat.messages").fetchone()[0] == 10
        out = run_restore(seeded_db, store_block, decryption_block,
                          request(target, confirm_overwrite=target))
        assert out.overwrote and out.kept_previous_as == sibling_name(target, "before", m.backup_id)
        assert _content_checksum(pg_server, target) == _content_checksum(
            pg_server, seeded_db.dbname)
        with psycopg.connect(pg_server.conninfo(out.kept_previous_as)) as conn:  # the old one
            assert conn.execute("SELECT count(*) FROM chat.messages").fetchone()[0] == 10
        with pytest.raises(RestoreRefusedError, match="in the way"):  # would clobber the kept one
            run_restore(seeded_db, store_block, decryption_block,
                        request(target, confirm_overwrite=target))
        drop_db(pg_server, sibling_name(target, "before", m.backup_id))
        out = run_restore(seeded_db, store_block, decryption_block, RestoreRequest(
            backup_id=m.backup_id, target_database=target, confirm_overwrite=target,
            drop_previous=True))
        assert out.kept_previous_as is None
        assert sibling_name(target, "before", m.backup_id) not in databases(pg_server)
    finally:
        drop_db(pg_server, target)
        drop_db(pg_server, sibling_name(target, "before", m.backup_id))
