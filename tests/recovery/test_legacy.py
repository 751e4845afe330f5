"""Legacy archives (the deployment guide's script, before veza-ops): listed, kept, restored."""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from errors import IntegrityError
from tasks.recovery.catalogue import list_backups
from tasks.recovery.info import store_dict, store_info
from tasks.recovery.manifest import LEGACY_CHECKS, legacy_name
from tasks.recovery.pruning import LEGACY_KEPT, plan_with_legacy
from tasks.recovery.restore_test import RestoreTestRequest, render_markdown, run_restore_test
from tasks.recovery.restoring import RestoreRequest, run_restore
from tasks.recovery.retention import RetentionPolicy
from tests.fixtures.recovery import SEED_COUNTS, databases, drop_db
from veza_ops.backups import render


def _guide_archive(db, encryption, tmp_path, *, damage: bool = False) -> bytes:
    """``pg_dump -Fc -f X.dump DB`` then ``gpg --encrypt --recipient KEY X.dump`` (the guide)."""
    dump = tmp_path / "veza_db.dump"
    with db.libpq_env() as env:
        subprocess.run(["pg_dump", "-Fc", "-f", str(dump), db.dbname], env=env, check=True)
    with encryption.keyring() as kr:
        subprocess.run(["gpg", "--homedir", str(kr.home), "--batch", "--trust-model", "always",
                        "--encrypt", "--recipient", kr.fingerprints[0], str(dump)], check=True)
    data = bytearray((tmp_path / "veza_db.dump.gpg").read_bytes())
    if damage:
        data[len(data) // 2] ^= 0xFF
    return bytes(data)


def _upload(store, database, started, body) -> str:
    key = f"{store.prefix}/{legacy_name(database, started)}"
    store.get_client().put_object(Bucket=store.bucket, Key=key, Body=body)  # aws s3 cp
    return key


def _counts(server, dbname):
    with psycopg.connect(server.conninfo(dbname)) as conn:
        return {(s, t): conn.execute(f'SELECT count(*) FROM "{s}"."{t}"').fetchone()[0]
                for s, t in SEED_COUNTS}


def test_legacy_archive_is_listed_kept_restored_and_tested(
    seeded_db, pg_server, store_block, encryption_block, decryption_block, tmp_path
):
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    key = _upload(store_block, seeded_db.dbname, started,
                  _guide_archive(seeded_db, encryption_block, tmp_path))
    client = store_block.get_client()
    [record] = list_backups(client, store_block.bucket, store_block.prefix,
                            database=seeded_db.dbname)
    bid = started.strftime("%Y%m%dT%H%M%SZ") + "-legacy"
    assert (record.backup_id, record.kind, record.started_at, record.complete) == \
        (bid, "legacy", started, True)
    assert record.data_key == key and record.data_size == client.head_object(
        Bucket=store_block.bucket, Key=key)["ContentLength"]

    summary = store_info(client, store_block.bucket, store_block.prefix,
                         database=seeded_db.dbname)
    text = render(summary)  # veza-ops backups info
    assert "legacy archives     1 (made before veza-ops, no checksum)" in text
    assert f"legacy: {bid} {key} (" in text and "backups             0 complete" in text
    info = store_dict(summary)["databases"][0]
    assert info["legacy"] == [{"backup_id": bid, "key": key, "started_at": started.isoformat(),
                               "size_bytes": record.data_size, "checksum": None}]
    assert info["prune"]["decisions"][0]["reasons"] == [LEGACY_KEPT]

    target = f"restored_{uuid.uuid4().hex[:8]}"
    try:
        out = run_restore(seeded_db, store_block, decryption_block,
                          RestoreRequest(backup_id=bid, target_database=target))
        assert out.checks_note == LEGACY_CHECKS
        assert _counts(pg_server, target) == SEED_COUNTS
    finally:
        drop_db(pg_server, target)
    report = run_restore_test(seeded_db, store_block, decryption_block,
                              RestoreTestRequest(backup_id=bid))
    assert report.passed and report.backup_id == bid
    assert report.content_checks == [LEGACY_CHECKS] and report.amcheck_indexes
    assert LEGACY_CHECKS in render_markdown(report)


def test_prune_keeps_legacy_archives_unless_told(s3_client, store_block):
    old = datetime(2025, 1, 5, 2, 0, tzinfo=UTC)
    _upload(store_block, "veza_db", old, b"archive")
    records = list_backups(s3_client, store_block.bucket, store_block.prefix)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    policy = RetentionPolicy(max_full_age_h=0)
    [kept] = plan_with_legacy(records, policy, now)
    assert kept.keep and kept.reasons == [LEGACY_KEPT]
    newer = datetime(2025, 1, 6, 2, 0, tzinfo=UTC)
    _upload(store_block, "veza_db", newer, b"archive")
    records = list_backups(s3_client, store_block.bucket, store_block.prefix)
    told = plan_with_legacy(records, policy, now, prune_legacy=True)
    assert {d.record.started_at: d.keep for d in told} == {newer: True, old: False}


@pytest.mark.parametrize("damage", ["flipped byte", "not a pg_dump archive"])
def test_damaged_legacy_archive_is_refused_before_any_change(
    damage, seeded_db, pg_server, store_block, encryption_block, decryption_block, tmp_path
):
    if damage == "flipped byte":
        body = _guide_archive(seeded_db, encryption_block, tmp_path, damage=True)
    else:
        plain = tmp_path / "notes.txt"
        plain.write_text("not a dump\n" * 100)
        with encryption_block.keyring() as kr:
            body = subprocess.run(
                ["gpg", "--homedir", str(kr.home), "--batch", "--trust-model", "always",
                 "--encrypt", "--recipient", kr.fingerprints[0], "--output", "-", str(plain)],
                check=True, capture_output=True).stdout
    started = datetime.now(UTC).replace(microsecond=0)
    _upload(store_block, seeded_db.dbname, started, body)
    before = databases(pg_server)
    with pytest.raises(IntegrityError) as err:
        run_restore(seeded_db, store_block, decryption_block, RestoreRequest(
            backup_id=started.strftime("%Y%m%dT%H%M%SZ") + "-legacy",
            target_database=f"restored_{uuid.uuid4().hex[:8]}"))
    what = "gpg's integrity check failed" if damage == "flipped byte" else "pg_restore --list"
    assert what in err.value.message and "nothing was restored" in (err.value.hint or "")
    assert databases(pg_server) == before
