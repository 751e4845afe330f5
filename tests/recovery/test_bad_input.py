"""Bad input: each case fails with a clear error naming the thing and the fix, before any change."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import boto3
import httpx
import pytest
from prefect_aws import AwsCredentials
from pydantic import SecretStr

from blocks.gpg import GpgDecryptionKey, GpgEncryption
from blocks.s3 import S3BackupStore
from errors import (
    AccessDeniedError,
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    UnreachableError,
)
from sandbox.launchers.gpg import generate_key
from sandbox.procs import free_port, spawn, stop_pid, wait_until
from tasks.recovery.backup import run_backup
from tasks.recovery.restore_test import RestoreTestRequest, run_restore_test
from tasks.recovery.restoring import RestoreRequest, run_restore


def _objects(s3_client, bucket):
    return s3_client.list_objects_v2(Bucket=bucket).get("KeyCount", 0)


def test_unreachable_database(pg_server, seeded_db, store_block, encryption_block, s3_client):
    db = seeded_db.model_copy(update={"port": free_port(), "connect_timeout": 2})
    with pytest.raises(UnreachableError) as err:
        run_backup(db, store_block, encryption_block)
    assert f"127.0.0.1:{db.port}" in str(err.value) and "PostgresDatabase block" in str(err.value)
    assert err.value.transient
    assert _objects(s3_client, store_block.bucket) == 0


def test_wrong_password(pg_server, seeded_db, store_block, encryption_block, s3_client):
    db = seeded_db.model_copy(update={"password": SecretStr("not-the-password")})
    with pytest.raises(AuthenticationError) as err:
        run_backup(db, store_block, encryption_block)
    assert "login refused" in str(err.value) and "user/password" in str(err.value)
    assert "not-the-password" not in str(err.value) and not err.value.transient
    assert _objects(s3_client, store_block.bucket) == 0


@pytest.mark.parametrize("case", ["private", "garbage", "expired"])
def test_bad_recipient_key(case, gpg_key, seeded_db, store_block, s3_client):
    armored = {
        "private": gpg_key.private_armored,
        "garbage": "-----BEGIN PGP PUBLIC KEY BLOCK-----\nnot a key\n",
        "expired": generate_key("old-key", expired=True).public_armored if case == "expired"
        else "",
    }[case]
    enc = GpgEncryption(recipients=[gpg_key.public_armored, armored])
    with pytest.raises(InvalidInputError) as err:
        run_backup(seeded_db, store_block, enc)
    assert err.value.field == "recipients[1]"
    expected = {"private": "PRIVATE key", "garbage": "not an armored", "expired": "expired on"}
    assert expected[case] in str(err.value) and err.value.fix
    assert _objects(s3_client, store_block.bucket) == 0


def test_missing_or_wrong_decryption_key(seeded_db, store_block, encryption_block, gpg_key):
    m = run_backup(seeded_db, store_block, encryption_block).manifest
    other = generate_key("someone-else")
    with pytest.raises(InvalidInputError) as err:
        run_restore_test(seeded_db, store_block,
                         GpgDecryptionKey(private_key=other.private_armored))
    assert err.value.field == "decryption_block" and gpg_key.fingerprint in str(err.value)
    with pytest.raises(InvalidInputError) as err:
        run_restore_test(seeded_db, store_block, GpgDecryptionKey(private_key=""))
    assert err.value.field == "private_key"
    with pytest.raises(InvalidInputError) as err:
        run_restore_test(seeded_db, store_block,
                         GpgDecryptionKey(private_key=gpg_key.public_armored))
    assert err.value.field == "private_key" and "public key" in str(err.value)
    with pytest.raises(InvalidInputError) as err:
        run_restore(seeded_db, store_block,
                    GpgDecryptionKey(private_key=gpg_key.private_armored, passphrase="wrong"),
                    RestoreRequest(backup_id=m.backup_id, target_database="never_created"))
    assert err.value.field == "passphrase"


def test_bucket_missing(seeded_db, store_block, encryption_block):
    store = store_block.model_copy(update={"bucket": f"missing-{uuid.uuid4().hex[:8]}"})
    with pytest.raises(NotFoundError) as err:
        run_backup(seeded_db, store, encryption_block)
    assert store.bucket in str(err.value) and "bucket field" in str(err.value)


@pytest.fixture()
def s3_with_auth(tmp_path):
    """A moto server that enforces IAM: the first 3 requests are free, then keys must be known."""
    port = free_port()
    proc = spawn([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1",
                  "-p", str(port)], log_path=tmp_path / "moto.log",
                 env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3"))
    url = f"http://127.0.0.1:{port}"

    def ready():
        try:
            return httpx.get(f"{url}/moto-api/", timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=60, what="moto with IAM")
        yield url
    finally:
        stop_pid(proc.pid)


def test_access_denied(s3_with_auth, seeded_db, encryption_block):
    admin = dict(endpoint_url=s3_with_auth, aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
                 aws_secret_access_key="admin", region_name="us-east-1")
    boto3.client("s3", **admin).create_bucket(Bucket="veza-denied")
    iam = boto3.client("iam", **admin)
    iam.create_user(UserName="backup-bot")  # no policy: every S3 action is denied
    key = iam.create_access_key(UserName="backup-bot")["AccessKey"]
    store = S3BackupStore(
        bucket="veza-denied", endpoint_url=s3_with_auth, region="us-east-1",
        credentials=AwsCredentials(aws_access_key_id=key["AccessKeyId"],
                                   aws_secret_access_key=key["SecretAccessKey"]),
    )
    with pytest.raises(AccessDeniedError) as err:
        run_backup(seeded_db, store, encryption_block)
    assert "veza-denied" in str(err.value) and "grant" in str(err.value)


def test_unknown_backup_id(seeded_db, store_block, encryption_block, decryption_block):
    with pytest.raises(NotFoundError, match="no complete backup"):
        run_restore_test(seeded_db, store_block, decryption_block)
    run_backup(seeded_db, store_block, encryption_block)
    with pytest.raises(InvalidInputError) as err:
        run_restore(seeded_db, store_block, decryption_block,
                    RestoreRequest(backup_id="20200101T000000Z-full",
                                   target_database="never_created"))
    assert err.value.field == "backup_id" and "catalogue" in str(err.value)
    with pytest.raises(InvalidInputError) as err:
        run_restore_test(seeded_db, store_block, decryption_block,
                         RestoreTestRequest(backup_id="latest"))
    assert err.value.field == "backup_id" and "20261127T030000Z-full" in str(err.value)


def test_errors_never_leak_the_db_password(pg_server, seeded_db, store_block, encryption_block):
    secret = seeded_db.password.get_secret_value()
    for db in (seeded_db.model_copy(update={"port": free_port(), "connect_timeout": 2}),
               seeded_db.model_copy(update={"dbname": "no_such_database"})):
        with pytest.raises(Exception) as err:
            run_backup(db, store_block, encryption_block)
        assert secret not in str(err.value) and secret not in repr(err.value)


@pytest.mark.parametrize("name", ["veza/db", "..", "veza\ndb"])
def test_database_name_unusable_as_a_key_segment_is_refused(
    name, pg_server, seeded_db, store_block, encryption_block, s3_client
):
    db = seeded_db.model_copy(update={"dbname": name})
    with pytest.raises(InvalidInputError) as err:
        run_backup(db, store_block, encryption_block)
    assert err.value.field == "database_block" and "key segment" in str(err.value)
    assert "'/'" in err.value.fix
    assert _objects(s3_client, store_block.bucket) == 0
    assert not s3_client.list_multipart_uploads(Bucket=store_block.bucket).get("Uploads")
