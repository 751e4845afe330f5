"""Units of the recovery pipeline: process chains, streamed multipart upload, comparisons."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess

import pytest

from errors import NotFoundError, PipelineError
from errors.s3 import s3_errors
from tasks.recovery.integrity import compare_counts
from tasks.recovery.manifest import TableCount
from tasks.recovery.pipeline import Pipeline, Stage
from tasks.recovery.restore_test import scratch_name
from tasks.recovery.upload import upload_stream


def test_pipeline_streams_counts_and_checks_every_status():
    with Pipeline([
        Stage("src", ["head", "-c", "3000000", "/dev/zero"], count_output=True),
        Stage("zstd", ["zstd", "-q", "-c"]),
        Stage("unzstd", ["zstd", "-d", "-q", "-c"]),
    ]) as pipe:
        out = pipe.output.read()
        results = pipe.check()
        assert pipe.counted("src") == 3_000_000
    assert len(out) == 3_000_000 and all(r.ok for r in results)


def test_pipeline_names_a_failed_middle_stage_even_when_the_last_succeeds():
    with pytest.raises(PipelineError, match="mid exited with 3") as err:
        with Pipeline([
            Stage("src", ["head", "-c", "1000", "/dev/zero"]),
            Stage("mid", ["sh", "-c", "head -c 10; echo broken >&2; exit 3"]),
            Stage("sink", ["cat"]),
        ]) as pipe:
            pipe.output.read()
            pipe.check()
    assert "broken" in str(err.value)


def test_upload_stream_in_parts_with_checksum(s3_client, s3_bucket):
    data = os.urandom(11 * 1024 * 1024)
    seen: list[int] = []
    result = upload_stream(s3_client, bucket=s3_bucket, key="a/obj", stream=io.BytesIO(data),
                           part_size=5 * 1024 * 1024, on_part=seen.append)
    assert result.parts == 3 and result.size == len(data) and seen[-1] == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    body = s3_client.get_object(Bucket=s3_bucket, Key="a/obj")["Body"].read()
    assert body == data


def test_upload_is_aborted_when_the_producer_failed(s3_client, s3_bucket):
    def producer_failed() -> None:
        raise PipelineError("pg_dump killed by SIGKILL")

    with pytest.raises(PipelineError):
        upload_stream(s3_client, bucket=s3_bucket, key="a/obj", stream=io.BytesIO(b"x" * 100),
                      part_size=5 * 1024 * 1024, before_complete=producer_failed)
    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    assert not s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


def test_botocore_errors_never_escape(s3_client, s3_bucket):
    with pytest.raises(NotFoundError, match="does not exist"):
        with s3_errors(action="read", bucket=s3_bucket, key="nope"):
            s3_client.get_object(Bucket=s3_bucket, Key="nope")


def test_compare_counts_lists_every_difference():
    want = [TableCount(schema_name="public", table="a", rows=1),
            TableCount(schema_name="public", table="b", rows=2)]
    got = [TableCount(schema_name="public", table="a", rows=5),
           TableCount(schema_name="x", table="c", rows=0)]
    assert compare_counts(want, got) == [
        "table public.b missing after restore",
        "table x.c not in the manifest",
        "table public.a: 5 rows, manifest says 1",
    ]
    assert compare_counts(want, want) == []


def test_scratch_name_is_a_safe_identifier():
    assert scratch_name("20261127T030000Z-full") == "restore_test_20261127t030000z_full"


def test_zstd_and_gpg_are_installed():
    for tool in ("zstd", "gpg", "pg_dump", "pg_restore"):
        assert subprocess.run([tool, "--version"], capture_output=True).returncode == 0
