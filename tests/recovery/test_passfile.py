"""libpq tools get the password through a private 0600 passfile, never through their environment."""

from __future__ import annotations

import stat
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr

from errors import InvalidInputError, PipelineError
from tasks.recovery.pipeline import Pipeline, Stage
from tests.fixtures.recovery import make_db_block


def _environ(raw: bytes) -> dict[str, str]:
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


def test_child_environment_has_no_password_and_the_passfile_is_private_then_gone(
    seeded_db, monkeypatch
):
    password = seeded_db.password.get_secret_value()
    monkeypatch.setenv("PGPASSWORD", password)  # a stray inherited one is dropped too
    with seeded_db.libpq_env() as env:
        passfile = Path(env["PGPASSFILE"])
        with Pipeline([Stage("child", ["cat", "/proc/self/environ"], env=env)]) as pipe:
            raw = pipe.output.read()
            pipe.check(timeout=30)
        assert password.encode() not in raw
        child = _environ(raw)
        assert "PGPASSWORD" not in child and child["PGPASSFILE"] == str(passfile)
        assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
        assert stat.S_IMODE(passfile.parent.stat().st_mode) == 0o700
        assert passfile.read_text().endswith(f":{seeded_db.user}:{password}\n")
        # and a real libpq tool logs in with it
        out = subprocess.run(["psql", "--no-password", "-Atc", "SELECT current_user"],
                             env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == seeded_db.user
    assert not passfile.exists() and not passfile.parent.exists()


def test_passfile_is_removed_when_the_block_fails(seeded_db):
    with pytest.raises(PipelineError), seeded_db.libpq_env() as env:
        passfile = Path(env["PGPASSFILE"])
        with Pipeline([Stage("psql", ["psql", "-c", "SELECT 1/0"], env=env)]) as pipe:
            pipe.check(timeout=30)
    assert not passfile.parent.exists()


def test_password_with_colon_and_backslash_reaches_libpq(pg_server, seeded_db):
    role, password = f"r_{uuid.uuid4().hex[:8]}", "p:a\\ss:w\\:rd"
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        block = make_db_block(pg_server, seeded_db.dbname).model_copy(
            update={"user": role, "password": SecretStr(password)})
        with block.libpq_env() as env:
            out = subprocess.run(["psql", "--no-password", "-Atc", "SELECT current_user"],
                                 env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == role
    finally:
        with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")


def test_a_password_with_a_line_break_is_refused_without_showing_it(seeded_db):
    block = seeded_db.model_copy(update={"password": SecretStr("sec\nret-xyz")})
    with pytest.raises(InvalidInputError) as err, block.libpq_env():
        pass
    assert err.value.field == "password" and "ret-xyz" not in str(err.value)
