"""Streamed multipart upload: parts, checksum, abort on a failed producer; S3 errors translated."""

from __future__ import annotations

import hashlib
import io
import math
import os

import pytest

from errors import InvalidInputError, NotFoundError, PermanentSystemError, PipelineError
from errors.s3 import s3_errors
from tasks.recovery import upload
from tasks.recovery.upload import attempt_timeout_s, part_size_for, upload_stream


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


def test_part_size_fits_any_estimate_within_s3_limits():
    mib, gib = 1024 * 1024, 1024 ** 3
    assert part_size_for(0) == 5 * mib  # unknown size: the floor
    assert part_size_for(1 * gib, minimum=16 * mib) == 16 * mib  # small: the configured size
    # over ~156 GiB, the old fixed 16 MiB needed more than 10,000 parts; now the part grows
    for estimate in (157 * gib, 1024 * gib, 20 * 1024 * gib):
        size = part_size_for(estimate, minimum=16 * mib)
        assert size % mib == 0 and 5 * mib <= size <= 5 * gib
        # even a stream twice the estimate fits in 9,000 parts (1,000 spare)
        assert math.ceil(2 * estimate / size) <= 9_000
    assert 16 * mib * 10_000 < 157 * gib  # what the fixed size could not do
    assert part_size_for(10**20) == 5 * gib  # beyond S3's reach: the cap


def test_a_stream_beyond_10000_parts_is_refused_and_aborted(s3_client, s3_bucket, monkeypatch):
    monkeypatch.setattr(upload, "MAX_PARTS", 2)  # the limit itself, lowered: 3 parts exceed it
    data = io.BytesIO(os.urandom(11 * 1024 * 1024))
    with pytest.raises(PermanentSystemError, match="more than 2 parts"):
        upload_stream(s3_client, bucket=s3_bucket, key="big", stream=data,
                      part_size=5 * 1024 * 1024)
    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    assert not s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


def test_attempt_timeout_is_expected_duration_times_factor():
    assert attempt_timeout_s(60, 3) == 3 * 3600
    for kwargs, field in (({"expected_minutes": 0, "factor": 3}, "expected_minutes"),
                          ({"expected_minutes": 60, "factor": 0.5}, "timeout_factor")):
        with pytest.raises(InvalidInputError) as caught:
            attempt_timeout_s(**kwargs)
        assert caught.value.field == field
