"""Streaming backup: pg_dump | zstd | gpg into a multipart upload, manifest last."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from errors import PipelineError
from tasks.recovery.backup import dump_stages, run_backup
from tasks.recovery.manifest import DATA_NAME, GLOBALS_NAME, MANIFEST_NAME, STATE_NAME, Manifest
from tests.fixtures.recovery import SEED_COUNTS


def _keys(client, bucket, prefix=""):
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


def test_backup_streams_encrypted_dump_and_writes_manifest_last(
    seeded_db, store_block, encryption_block, gpg_key, s3_client, tmp_path
):
    client = store_block.get_client()
    calls: list[str] = []
    client.meta.events.register(
        "before-call.s3.*", lambda model, **_: calls.append(model.name)
    )
    outcome = run_backup(seeded_db, store_block, encryption_block, client=client)
    m = outcome.manifest

    assert m.database == seeded_db.dbname and m.kind == "full" and m.snapshot_consistent
    assert m.server_version.startswith("15")
    assert m.recipients == [gpg_key.fingerprint]
    assert {(t.schema_name, t.table): t.rows for t in m.tables} == SEED_COUNTS
    root = f"{store_block.prefix}/{seeded_db.dbname}/{m.backup_id}/"
    assert _keys(s3_client, store_block.bucket) == sorted([
        root + DATA_NAME, root + GLOBALS_NAME, root + STATE_NAME, root + MANIFEST_NAME])
    # the manifest is written only after the objects (dump, globals, state) are complete
    assert calls.count("CompleteMultipartUpload") == 3
    assert calls.index("PutObject") > len(calls) - 1 - calls[::-1].index("CompleteMultipartUpload")
    assert m.globals is not None and m.globals.key == root + GLOBALS_NAME
    assert not m.globals.role_passwords and m.globals.bootstrap_role == seeded_db.user
    assert m.database_state is not None and m.database_state.key == root + STATE_NAME

    data = s3_client.get_object(Bucket=store_block.bucket, Key=m.data_key)["Body"].read()
    assert len(data) == m.size_bytes and hashlib.sha256(data).hexdigest() == m.sha256
    assert b"PGDMP" not in data and b"artist 1" not in data  # encrypted, no plaintext
    stored = Manifest.model_validate_json(
        s3_client.get_object(Bucket=store_block.bucket, Key=root + MANIFEST_NAME)["Body"].read()
    )
    assert stored == m

    # it decrypts (with the private key) and decompresses into a pg_dump archive
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--homedir", str(home), "--pinentry-mode", "loopback"]
    subprocess.run([*gpg, "--import"], input=gpg_key.private_armored.encode(), check=True,
                   capture_output=True)
    r, w = os.pipe()
    os.write(w, gpg_key.passphrase.encode() + b"\n")
    os.close(w)
    plain = subprocess.run(
        [*gpg, "--passphrase-fd", str(r), "--decrypt"], input=data, pass_fds=(r,),
        capture_output=True, check=True,
    ).stdout
    os.close(r)
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
    dump = subprocess.run(["zstd", "-d", "-c"], input=plain, capture_output=True, check=True)
    assert dump.stdout.startswith(b"PGDMP") and len(dump.stdout) == m.plain_bytes

    def globals_text(manifest: Manifest) -> str:
        assert manifest.globals is not None
        blob = s3_client.get_object(Bucket=store_block.bucket, Key=manifest.globals.key)
        body = blob["Body"].read()
        assert hashlib.sha256(body).hexdigest() == manifest.globals.sha256
        assert len(body) == manifest.globals.size_bytes and b"CREATE ROLE" not in body
        r, w = os.pipe()
        os.write(w, gpg_key.passphrase.encode() + b"\n")
        os.close(w)
        plain = subprocess.run([*gpg, "--passphrase-fd", str(r), "--decrypt"], input=body,
                               pass_fds=(r,), capture_output=True, check=True).stdout
        os.close(r)
        return subprocess.run(["zstd", "-d", "-c"], input=plain, capture_output=True,
                              check=True).stdout.decode()

    text = globals_text(m)
    assert f"CREATE ROLE {seeded_db.user};" in text and "PASSWORD" not in text
    with_passwords = run_backup(seeded_db, store_block, encryption_block, role_passwords=True,
                                now=lambda: m.started_at + timedelta(minutes=1)).manifest
    assert with_passwords.globals is not None and with_passwords.globals.role_passwords
    assert "PASSWORD 'SCRAM-SHA-256$" in globals_text(with_passwords)
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


def test_no_secret_on_any_command_line_or_environment(seeded_db, encryption_block):
    with encryption_block.keyring() as kr, seeded_db.libpq_env() as env:
        stages = dump_stages(seeded_db, env=env, snapshot_id="00000003-1", gnupghome=kr.home,
                             recipients=kr.fingerprints)
    password = seeded_db.password.get_secret_value()
    for stage in stages:
        assert not any(password in arg for arg in stage.argv)
        assert not any(password in value for value in (stage.env or {}).values())
    assert stages[0].env is not None and "PGPASSWORD" not in stages[0].env
    assert stages[0].env["PGPASSFILE"]


def _child_pg_dump() -> int | None:
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if comm == "pg_dump" and ppid == me:
            return int(entry.name)
    return None


def _add_blobs(pg_server, dbname: str, rows: int) -> None:
    """Incompressible rows (4 KiB each) so the dump outlasts the first part and zstd's buffers."""
    with psycopg.connect(pg_server.conninfo(dbname)) as conn:
        conn.execute("CREATE TABLE blobs (id int PRIMARY KEY, data bytea)")
        with conn.cursor().copy("COPY blobs (id, data) FROM STDIN") as copy:
            for i in range(rows):
                copy.write_row((i, os.urandom(4096)))


def _running(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] not in "ZX"


def test_pg_dump_killed_mid_stream_leaves_no_backup(seeded_db, pg_server, store_block,
                                                    encryption_block, s3_client):
    earlier = run_backup(seeded_db, store_block, encryption_block).manifest
    before = _keys(s3_client, store_block.bucket)
    _add_blobs(pg_server, seeded_db.dbname, rows=10_000)  # ~40 MiB
    killed: list[int] = []

    passfiles: list[Path] = []
    password = seeded_db.password.get_secret_value().encode()

    def kill_pg_dump(uploaded: int, _estimate: int) -> None:
        if not killed:  # first part read: pg_dump is blocked on a full pipe, mid-stream
            pid = _child_pg_dump()
            assert pid is not None and _running(pid)
            environ = Path(f"/proc/{pid}/environ").read_bytes()  # the running pg_dump's env
            assert password not in environ and b"PGPASSWORD=" not in environ
            passfile = Path(next(item.split(b"=", 1)[1] for item in environ.split(b"\0")
                                 if item.startswith(b"PGPASSFILE=")).decode())
            assert passfile.stat().st_mode & 0o777 == 0o600
            passfiles.append(passfile)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    with pytest.raises(PipelineError, match="pg_dump killed by SIGKILL"):
        run_backup(seeded_db, store_block, encryption_block, on_progress=kill_pg_dump,
                   kind="hourly")
    assert killed and passfiles and not passfiles[0].parent.exists()  # removed on error too
    # no data object, no manifest, no pending multipart upload; the earlier backup is intact
    assert _keys(s3_client, store_block.bucket) == before
    assert not s3_client.list_multipart_uploads(Bucket=store_block.bucket).get("Uploads")
    obj = s3_client.get_object(Bucket=store_block.bucket, Key=earlier.data_key)["Body"].read()
    assert hashlib.sha256(obj).hexdigest() == earlier.sha256
