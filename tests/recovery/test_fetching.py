"""Fetching verifies the download against the manifest before anything is restored."""

from __future__ import annotations

import json

import pytest

from errors import IntegrityError
from tasks.recovery.backup import run_backup
from tasks.recovery.manifest import MANIFEST_NAME, backup_prefix
from tasks.recovery.restore_test import run_restore_test, scratch_name
from tasks.recovery.restoring import RestoreRequest, run_restore
from tests.fixtures.recovery import databases


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
        run_restore(seeded_db, store_block, decryption_block,
                    RestoreRequest(backup_id=m.backup_id, target_database=target))
    assert "nothing was restored" in str(err.value)
    assert target not in databases(pg_server)
    with pytest.raises(IntegrityError, match="SHA-256"):
        run_restore_test(seeded_db, store_block, decryption_block)
    assert scratch_name(m.backup_id) not in databases(pg_server)
