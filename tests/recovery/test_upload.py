"""Streamed multipart upload: parts, checksum, abort on a failed producer; S3 errors translated."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from errors import NotFoundError, PipelineError
from errors.s3 import s3_errors
from tasks.recovery.upload import upload_stream


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
