"""Database-level state (owner, settings, per-role settings, grants): recorded, replayed."""

from __future__ import annotations

import uuid

import psycopg

from tasks.recovery.backup import run_backup
from tasks.recovery.dbstate import (
    DatabaseGrant,
    DatabaseState,
    plan_replay,
    read_database_state,
    set_clause,
    split_list_setting,
)
from tasks.recovery.restore_test import RestoreTestRequest, run_restore_test
from tasks.recovery.restoring import RestoreRequest, run_restore
from tests.fixtures.recovery import drop_db, make_db_block


def _sql(server, dbname, query):
    with psycopg.connect(server.conninfo(dbname), autocommit=True) as conn:
        cur = conn.execute(query)
        return cur.fetchall() if cur.description else None


def _text(composed):
    return composed.as_string(None)


def test_list_settings_are_replayed_name_by_name():
    assert split_list_setting('app, "My Schema", public') == ["app", "My Schema", "public"]
    assert split_list_setting('"a""b", "x,y"') == ['a"b', "x,y"]
    assert split_list_setting("") == []
    assert _text(set_clause('search_path=app, "My Schema"')[1]) == \
        """SET "search_path" TO 'app', 'My Schema'"""
    assert _text(set_clause("work_mem=8MB")[1]) == """SET "work_mem" TO '8MB'"""
    assert _text(set_clause("app.note=a, b=c")[1]) == """SET "app.note" TO 'a, b=c'"""


def _state():
    return DatabaseState(
        database="veza_db", owner="veza_app", settings=["work_mem=8MB"],
        role_settings={"veza_ro": ["statement_timeout=5s"], "gone": ["work_mem=1MB"]},
        grants=[DatabaseGrant(grantee="veza_app", privilege="CREATE"),
                DatabaseGrant(grantee="veza_ro", privilege="CONNECT", grantable=True),
                DatabaseGrant(grantee="gone", privilege="TEMPORARY")],
    )


def test_replay_plan_skips_the_owner_in_no_owner_mode_and_missing_roles():
    plan = plan_replay(_state(), "restored", roles={"veza_app", "veza_ro"}, no_owner=True)
    sqls = [_text(s) for _, s in plan.statements]
    assert not any("OWNER TO" in s for s in sqls)
    assert "owner veza_app not set (owner_mode no-owner)" in plan.notes
    assert 'REVOKE ALL ON DATABASE "restored" FROM PUBLIC' in sqls  # not from the owner
    assert 'GRANT CONNECT ON DATABASE "restored" TO "veza_ro" WITH GRANT OPTION' in sqls
    assert not any('"gone"' in s for s in sqls)
    assert "settings of role gone not set (no such role)" in plan.notes
    owned = plan_replay(_state(), "restored", roles={"veza_app", "veza_ro"}, no_owner=False)
    sqls = [_text(s) for _, s in owned.statements]
    assert sqls[0] == 'ALTER DATABASE "restored" OWNER TO "veza_app"'
    assert 'REVOKE ALL ON DATABASE "restored" FROM PUBLIC, "veza_app"' in sqls
    # descriptions name what failed without the values (settings may be secrets)
    assert "8MB" not in " ".join(what for what, _ in owned.statements)


def test_owner_settings_and_grants_reach_a_fresh_cluster(
    pg_server, dr_server, store_block, encryption_block, decryption_block
):
    tag = uuid.uuid4().hex[:6]
    owner, reader, name = f"veza_app_{tag}", f"veza_ro_{tag}", f"app_{tag}"
    target = f"restored_{tag}"
    _sql(pg_server, "postgres", f'CREATE ROLE "{owner}" LOGIN; CREATE ROLE "{reader}" LOGIN')
    _sql(pg_server, "postgres", f'CREATE DATABASE "{name}" OWNER "{owner}"')
    _sql(pg_server, "postgres", f"""
        ALTER DATABASE "{name}" SET search_path TO app, "My Schema", public;
        ALTER DATABASE "{name}" SET work_mem TO '8MB';
        ALTER DATABASE "{name}" SET app.settings.jwt_secret TO 's3cr3t-ab';
        ALTER ROLE "{reader}" IN DATABASE "{name}" SET statement_timeout TO '5s';
        REVOKE ALL ON DATABASE "{name}" FROM PUBLIC;
        GRANT CONNECT, TEMPORARY ON DATABASE "{name}" TO "{reader}";
        GRANT CONNECT ON DATABASE "{name}" TO "{owner}" WITH GRANT OPTION""")
    _sql(pg_server, name, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    source = make_db_block(pg_server, name)
    recorded = read_database_state(source)
    try:
        m = run_backup(source, store_block, encryption_block).manifest
        assert m.database_state is not None
        assert "s3cr3t" not in m.model_dump_json()  # settings travel encrypted only
        dr = make_db_block(dr_server, "postgres")
        out = run_restore(dr, store_block, decryption_block, RestoreRequest(
            backup_id=m.backup_id, target_database=target, source_database=name))
        assert "database state replayed" in out.database_state_note
        restored = read_database_state(make_db_block(dr_server, target))
        assert restored.model_dump(exclude={"database"}) == \
            recorded.model_dump(exclude={"database"})
        assert restored.owner == owner
        assert sorted(restored.settings) == sorted([
            'search_path=app, "My Schema", public', "work_mem=8MB",
            "app.settings.jwt_secret=s3cr3t-ab"])
        assert restored.role_settings == {reader: ["statement_timeout=5s"]}
        public = [g for g in restored.grants if g.grantee is None]
        assert public == []  # PUBLIC's default CONNECT stays revoked
        # the monthly test replays it on its scratch copy too (a failure would be a problem)
        report = run_restore_test(source, store_block, decryption_block,
                                  RestoreTestRequest(backup_id=m.backup_id), scratch_server=dr)
        assert report.passed and not report.state_failures
        assert report.database_state_note.startswith("database state replayed: owner " + owner)
    finally:
        drop_db(dr_server, target)
        drop_db(pg_server, name)
