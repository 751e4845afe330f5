"""Backups through the S3 fault proxy: failed, reset and stalled parts are retried or aborted."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from errors import TransientSystemError
from sandbox.launchers.s3_faults import S3FaultProxy
from tasks.recovery.backup import run_backup
from tests.fixtures.recovery import create_empty_db, drop_db, make_db_block

ROWS = 1500  # 4 KiB of random bytes each: over 5 MiB encrypted, two parts or more


@pytest.fixture(scope="module")
def two_part_db(pg_server: Any) -> Iterator[Any]:
    """A database whose backup takes two parts (shared by the module: only read)."""
    name = f"veza_parts_{uuid.uuid4().hex[:8]}"
    create_empty_db(pg_server, name)
    with psycopg.connect(pg_server.conninfo(name)) as conn:
        conn.execute("CREATE TABLE blobs (id int PRIMARY KEY, data bytea)")
        with conn.cursor().copy("COPY blobs (id, data) FROM STDIN") as copy:
            for i in range(ROWS):
                copy.write_row((i, os.urandom(4096)))
    yield make_db_block(pg_server, name)
    drop_db(pg_server, name)


@pytest.fixture()
def proxy(s3_server: Any) -> Iterator[S3FaultProxy]:
    with S3FaultProxy(s3_server.endpoint_url) as running:
        yield running


@pytest.fixture()
def faulty_store(store_block: Any, proxy: S3FaultProxy) -> Any:
    """The test's store, reached through the proxy; 3 attempts per request, 2 s stall limit."""
    return store_block.model_copy(
        update={"endpoint_url": proxy.url, "max_attempts": 3, "read_timeout_s": 2.0}
    )


def _keys(client: Any, bucket: str) -> set[str]:
    return {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}


def _backup_is_sound(s3_client: Any, store: Any, outcome: Any) -> None:
    m = outcome.manifest
    body = s3_client.get_object(Bucket=store.bucket, Key=m.data_key)["Body"].read()
    assert outcome.parts >= 2 and len(body) == m.size_bytes
    assert hashlib.sha256(body).hexdigest() == m.sha256


@pytest.mark.parametrize(
    "fault",
    [
        {"error_rate": 1.0, "status": 500},
        {"reset_rate": 1.0},
        {"stall_s": 60.0},  # longer than the store's read timeout: botocore gives up, retries
    ],
    ids=["500", "reset", "stall"],
)
def test_a_part_failing_once_is_retried_and_the_backup_succeeds(
    fault, two_part_db, faulty_store, encryption_block, proxy, s3_client
):
    proxy.add_fault(operation="UploadPart", part_numbers=[2], count=1, **fault)
    outcome = run_backup(two_part_db, faulty_store, encryption_block)
    assert proxy.counters("UploadPart")["faults"] == 1, "part 2 did fail once"
    _backup_is_sound(s3_client, faulty_store, outcome)
    assert not s3_client.list_multipart_uploads(Bucket=faulty_store.bucket).get("Uploads")


def test_a_part_failing_for_good_aborts_naming_the_part(
    two_part_db, faulty_store, encryption_block, proxy, s3_client
):
    earlier = run_backup(two_part_db, faulty_store, encryption_block)
    before = _keys(s3_client, faulty_store.bucket)
    proxy.add_fault(operation="UploadPart", part_numbers=[2], error_rate=1.0, status=500)

    with pytest.raises(TransientSystemError) as caught:
        run_backup(two_part_db, faulty_store, encryption_block, kind="hourly")
    assert "upload part 2" in str(caught.value) and "InternalError" in str(caught.value)
    assert proxy.counters("UploadPart")["errors"] == 3, "each attempt of part 2 failed"
    assert proxy.counters("AbortMultipartUpload")["requests"] == 1
    # no data object, no manifest, no pending upload; the earlier backup is intact
    assert _keys(s3_client, faulty_store.bucket) == before
    assert not s3_client.list_multipart_uploads(Bucket=faulty_store.bucket).get("Uploads")
    _backup_is_sound(s3_client, faulty_store, earlier)
