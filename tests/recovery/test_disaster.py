"""Disaster-grade restore: a new cluster (roles), names never conninfo, swap, encoding/locale."""

from __future__ import annotations

import subprocess
import uuid
from datetime import timedelta

import psycopg
import pytest

from errors import InvalidInputError, PipelineError
from tasks.recovery.backup import _gpg_stage, run_backup, stream_to_store
from tasks.recovery.pipeline import Stage
from tasks.recovery.restore_test import RestoreTestRequest, run_restore_test
from tasks.recovery.restoring import RestoreRequest, run_restore
from tests.fixtures.recovery import databases, drop_db, make_db_block

APP_SQL = """
CREATE SEQUENCE invoice_no START 1000;
CREATE TABLE accounts (id serial PRIMARY KEY, email text NOT NULL UNIQUE);
INSERT INTO accounts (email) SELECT 'user' || g || '@veza.test' FROM generate_series(1, 50) g;
CREATE VIEW account_emails AS SELECT email FROM accounts;
SELECT setval('invoice_no', 1234);
"""
APP_OBJECTS = ("invoice_no", "accounts", "accounts_id_seq", "account_emails")


def _sql(server, dbname, query, params=None, *, autocommit=True):
    with psycopg.connect(server.conninfo(dbname), autocommit=autocommit) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else None


def _roles(server):
    return {r[0] for r in _sql(server, "postgres", "SELECT rolname FROM pg_roles")}


def _owners(server, dbname):
    rows = _sql(server, dbname, "SELECT relname, pg_get_userbyid(relowner) FROM pg_class "
                "WHERE relname = ANY(%s)", (list(APP_OBJECTS),))
    return dict(rows)


def _app_database(server, owner):
    """A source database whose tables, sequences and view belong to ``owner`` (not superuser)."""
    if owner not in _roles(server):
        _sql(server, "postgres", f'CREATE ROLE "{owner}" LOGIN NOSUPERUSER')
    name = f"app_{uuid.uuid4().hex[:10]}"
    _sql(server, "postgres", f'CREATE DATABASE "{name}" OWNER "{owner}"')
    with psycopg.connect(server.conninfo(name)) as conn:
        conn.execute(f'SET ROLE "{owner}"')
        conn.execute(APP_SQL)
    return name


@pytest.fixture()
def app_db(pg_server):
    """A database owned by the application role veza_app, plus a member role of it."""
    name = _app_database(pg_server, "veza_app")
    member = f"veza_ro_{uuid.uuid4().hex[:6]}"
    _sql(pg_server, "postgres", f'CREATE ROLE "{member}" NOLOGIN; GRANT veza_app TO "{member}"')
    yield make_db_block(pg_server, name), member
    drop_db(pg_server, name)


def test_restore_into_a_cluster_that_never_saw_the_roles(
    app_db, pg_server, dr_server, store_block, encryption_block, decryption_block
):
    source, member = app_db
    m = run_backup(source, store_block, encryption_block).manifest
    assert m.globals is not None and not m.globals.role_passwords
    assert not {"veza_app", member} & _roles(dr_server)  # the DR cluster never saw them
    dr = make_db_block(dr_server, "postgres")

    report = run_restore_test(source.model_copy(update={"port": 1}), store_block,
                              decryption_block, RestoreTestRequest(),
                              scratch_server=dr, now=lambda: m.finished_at + timedelta(minutes=1))
    assert report.passed and report.scratch_server == f"{dr_server.host}:{dr_server.port}"
    assert "veza_app" in report.roles_note and report.amcheck_indexes
    assert {"veza_app", member} <= _roles(dr_server)
    # start over: the real restore must recreate them too
    _sql(dr_server, "postgres", f'DROP ROLE "{member}"; DROP ROLE veza_app')

    target = f"restored_{uuid.uuid4().hex[:8]}"
    try:
        out = run_restore(dr, store_block, decryption_block, RestoreRequest(
            backup_id=m.backup_id, target_database=target, source_database=source.dbname))
        assert sorted(out.roles_created) == sorted(["veza_app", member])
        assert _owners(dr_server, target) == {o: "veza_app" for o in APP_OBJECTS}
        assert _owners(dr_server, target) == _owners(pg_server, source.dbname)
        members = _sql(dr_server, "postgres", "SELECT pg_has_role(%s, 'veza_app', 'MEMBER')",
                       (member,))
        assert members == [(True,)]
        attrs = _sql(dr_server, "postgres",
                     "SELECT rolcanlogin, rolsuper FROM pg_roles WHERE rolname = 'veza_app'")
        assert attrs == [(True, False)]
        assert _sql(dr_server, target, "SELECT count(*) FROM account_emails") == [(50,)]
        assert _sql(dr_server, target, "SELECT last_value FROM invoice_no") == [(1234,)]
    finally:
        drop_db(dr_server, target)


def test_no_owner_mode_creates_no_role(
    pg_server, dr_server, store_block, encryption_block, decryption_block
):
    owner = f"veza_app_{uuid.uuid4().hex[:6]}"
    name = _app_database(pg_server, owner)
    target = f"restored_{uuid.uuid4().hex[:8]}"
    try:
        source = make_db_block(pg_server, name)
        m = run_backup(source, store_block, encryption_block).manifest
        out = run_restore(make_db_block(dr_server, "postgres"), store_block, decryption_block,
                          RestoreRequest(backup_id=m.backup_id, target_database=target,
                                         source_database=name, owner_mode="no-owner"))
        assert out.roles_created == [] and "no-owner" in out.roles_note
        assert owner not in _roles(dr_server)
        assert set(_owners(dr_server, target).values()) == {dr_server.user}
        assert _sql(dr_server, target, "SELECT count(*) FROM accounts") == [(50,)]
    finally:
        drop_db(dr_server, target)
        drop_db(pg_server, name)


@pytest.mark.parametrize("make_value", [
    lambda db: f"dbname={db}", lambda db: f"postgresql://localhost/{db}", lambda db: "",
    lambda db: "x" * 64,
])
def test_target_that_libpq_would_expand_is_refused_before_any_change(
    make_value, seeded_db, store_block, encryption_block, decryption_block, pg_server
):
    m = run_backup(seeded_db, store_block, encryption_block).manifest
    _sql(pg_server, seeded_db.dbname, "DELETE FROM chat.messages WHERE id > 10")
    before = databases(pg_server)
    with pytest.raises(InvalidInputError) as err:
        run_restore(seeded_db, store_block, decryption_block, RestoreRequest(
            backup_id=m.backup_id, target_database=make_value(seeded_db.dbname),
            confirm_overwrite=make_value(seeded_db.dbname)))
    assert err.value.field == "target_database" and "plain database name" in err.value.fix
    assert databases(pg_server) == before
    assert _sql(pg_server, seeded_db.dbname, "SELECT count(*) FROM chat.messages") == [(10,)]


def _truncate_dump(db, store, encryption, client, manifest, tmp_path):
    """Replace the backup's dump by a truncated one with a matching manifest (checksums pass)."""
    dump = tmp_path / "full.pgc"
    with db.libpq_env() as env:
        subprocess.run(["pg_dump", "--format=custom", "--compress=0", f"--file={dump}"],
                       env=env, check=True)
    with encryption.keyring() as kr:
        stages = [Stage("head", ["head", "-c", str(dump.stat().st_size // 2), str(dump)],
                        count_output=True),
                  Stage("zstd", ["zstd", "-q", "-c"]), _gpg_stage(kr.home, kr.fingerprints)]
        upload, _ = stream_to_store(client, store, manifest.data_key, stages)
    doc = manifest.model_copy(update={"size_bytes": upload.size, "sha256": upload.sha256})
    client.put_object(Bucket=store.bucket, Key=manifest.data_key.rsplit("/", 1)[0]
                      + "/manifest.json", Body=doc.model_dump_json())


def test_failed_restore_leaves_the_target_intact(
    seeded_db, store_block, encryption_block, decryption_block, pg_server, tmp_path
):
    m = run_backup(seeded_db, store_block, encryption_block).manifest
    _truncate_dump(seeded_db, store_block, encryption_block, store_block.get_client(), m,
                   tmp_path)
    _sql(pg_server, seeded_db.dbname, "DELETE FROM chat.messages WHERE id > 10")
    before = databases(pg_server)
    with pytest.raises(PipelineError, match="pg_restore"):
        run_restore(seeded_db, store_block, decryption_block, RestoreRequest(
            backup_id=m.backup_id, target_database=seeded_db.dbname,
            confirm_overwrite=seeded_db.dbname))
    assert databases(pg_server) == before  # no staging copy, no _before_ left behind
    assert _sql(pg_server, seeded_db.dbname, "SELECT count(*) FROM chat.messages") == [(10,)]


def test_restore_keeps_the_source_encoding_and_locale(
    pg_server, store_block, encryption_block, decryption_block
):
    name, target = f"latin_{uuid.uuid4().hex[:8]}", f"restored_{uuid.uuid4().hex[:8]}"
    _sql(pg_server, "postgres", f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'LATIN1' "
         "LC_COLLATE 'C' LC_CTYPE 'C'")
    locale_sql = ("SELECT pg_encoding_to_char(encoding), datcollate, datctype "
                  "FROM pg_database WHERE datname = %s")
    try:
        _sql(pg_server, name, "CREATE TABLE words (w text); INSERT INTO words VALUES ('été')")
        source = make_db_block(pg_server, name)
        m = run_backup(source, store_block, encryption_block).manifest
        assert (m.encoding, m.lc_collate, m.lc_ctype) == ("LATIN1", "C", "C")
        run_restore(source, store_block, decryption_block,
                    RestoreRequest(backup_id=m.backup_id, target_database=target))
        assert _sql(pg_server, "postgres", locale_sql, (target,)) == [("LATIN1", "C", "C")]
        assert _sql(pg_server, target, "SELECT w FROM words") == [("été",)]
    finally:
        drop_db(pg_server, target)
        drop_db(pg_server, name)
