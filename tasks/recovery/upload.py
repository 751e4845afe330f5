"""Multipart upload from a stream: parts read in order, SHA-256 and size, abort on failure."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

from errors import InvalidInputError, PermanentSystemError
from errors.s3 import s3_errors
from tasks.logs import ModuleLogger

logger = ModuleLogger(__name__)  # run logger inside a run: lines reach the UI

MiB = 1024 * 1024
MIN_PART = 5 * MiB  # S3: every part but the last
MAX_PART = 5 * 1024 * MiB  # S3: 5 GiB
MAX_PARTS = 10_000  # S3: parts per upload
PLANNED_PARTS = 9_000  # what the size estimate may use: the rest is spare
HEADROOM = 2.0  # the stream may outgrow the estimate (bytea as hex, incompressible data)


def part_size_for(estimate_bytes: int, *, minimum: int = MIN_PART) -> int:
    """The part size that fits a stream of about ``estimate_bytes`` within S3's 10,000 parts.

    The estimate (the database's size on disk) is multiplied by ``HEADROOM`` and spread over
    ``PLANNED_PARTS`` parts, rounded up to a whole MiB; never below ``minimum`` (the store's
    setting) nor 5 MiB, never above 5 GiB (S3's limits).

    Args:
        estimate_bytes: expected size of the stream (0 or less: unknown, the minimum).
        minimum: the configured part size.

    Returns:
        Bytes per part.
    """
    needed = math.ceil(max(estimate_bytes, 0) * HEADROOM / PLANNED_PARTS / MiB) * MiB
    return min(MAX_PART, max(MIN_PART, minimum, needed))


@dataclass(frozen=True)
class UploadResult:
    """What was uploaded."""

    key: str
    size: int
    sha256: str
    parts: int


def _read_part(stream: IO[bytes], size: int) -> bytes:
    chunks: list[bytes] = []
    missing = size
    while missing:
        chunk = stream.read(missing)
        if not chunk:
            break
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks) if len(chunks) != 1 else chunks[0]


def upload_stream(
    client: Any,
    *,
    bucket: str,
    key: str,
    stream: IO[bytes],
    part_size: int,
    max_inflight: int = 2,
    extra_args: dict[str, str] | None = None,
    on_part: Callable[[int], None] | None = None,
    before_complete: Callable[[], None] | None = None,
) -> UploadResult:
    """Upload ``stream`` to ``s3://bucket/key`` as a multipart upload, memory bounded.

    At most ``max_inflight`` parts are being sent while the next is read, so memory stays
    around ``(max_inflight + 1) * part_size``. Each part's bytes stay in memory until S3
    accepted it, so the client's botocore retries (the one retry style: 5xx, throttling,
    resets, read timeouts; see ``S3BackupStore.get_client``) can resend a part the stream
    could not give again. The object only appears when ``complete_multipart_upload``
    succeeds, which happens after ``before_complete`` (the caller's check of every
    producer's exit status) returned. Any failure, including a part still failing after its
    retries (the error names the part), aborts the upload: no object, no pending parts.

    Args:
        client: boto3 S3 client.
        bucket: the bucket.
        key: the object key.
        stream: readable binary stream (e.g. the last pipeline stage's stdout).
        part_size: bytes per part (>= 5 MiB; see :func:`part_size_for`).
        max_inflight: parts uploaded concurrently.
        extra_args: create_multipart_upload extras (SSE, storage class).
        on_part: called with the running byte count after each part is read.
        before_complete: called at end of stream; raising aborts the upload.

    Returns:
        Key, size, SHA-256 (hex) and number of parts of what was uploaded.
    """
    with s3_errors(action="start upload", bucket=bucket, key=key):
        upload_id = client.create_multipart_upload(
            Bucket=bucket, Key=key, **(extra_args or {})
        )["UploadId"]
    logger.info("multipart upload started for s3://%s/%s", bucket, key)
    digest = hashlib.sha256()
    size = 0
    parts: list[dict[str, Any]] = []
    pending: list[Future[dict[str, Any]]] = []

    def send(number: int, body: bytes) -> dict[str, Any]:
        with s3_errors(action=f"upload part {number}", bucket=bucket, key=key):
            etag = client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )["ETag"]
        return {"PartNumber": number, "ETag": etag}

    try:
        with ThreadPoolExecutor(max_workers=max_inflight, thread_name_prefix="s3-part") as pool:
            number = 0
            while True:
                body = _read_part(stream, part_size)
                if not body and number > 0:
                    break
                number += 1
                if number > MAX_PARTS:
                    raise PermanentSystemError(
                        "S3", f"s3://{bucket}/{key}: the stream needs more than {MAX_PARTS} "
                        f"parts of {part_size} bytes",
                        hint="the size estimate was far too low: raise part_size_mib",
                    )
                digest.update(body)
                size += len(body)
                if on_part is not None:
                    on_part(size)
                while len(pending) >= max_inflight:
                    parts.append(pending.pop(0).result())
                pending.append(pool.submit(send, number, body))
                del body
                if size == 0:
                    break
            while pending:
                parts.append(pending.pop(0).result())
        if before_complete is not None:
            before_complete()
        with s3_errors(action="complete upload", bucket=bucket, key=key):
            client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
    except BaseException:
        for future in pending:
            future.cancel()
        logger.warning("aborting multipart upload of s3://%s/%s", bucket, key)
        try:
            with s3_errors(action="abort upload", bucket=bucket, key=key):
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception:  # keep the original error; the bucket lifecycle rule aborts it later
            # (AbortIncompleteMultipartUpload, docs/recovery.md; `veza-ops backups info` lists it)
            logger.exception("could not abort the multipart upload of s3://%s/%s", bucket, key)
        raise
    return UploadResult(key=key, size=size, sha256=digest.hexdigest(), parts=len(parts))


def attempt_timeout_s(expected_minutes: float, factor: float) -> float:
    """Seconds one backup attempt may take: the expected duration times a safety factor.

    Args:
        expected_minutes: how long a backup usually takes.
        factor: how many times that before the attempt is stopped (>= 1).

    Returns:
        The timeout in seconds.

    Raises:
        InvalidInputError: naming the field and the fix.
    """
    if not expected_minutes > 0:
        raise InvalidInputError(
            "expected_minutes", f"must be positive, got {expected_minutes!r}",
            fix="pass the usual backup duration in minutes, e.g. 60",
        )
    if not factor >= 1:
        raise InvalidInputError(
            "timeout_factor", f"must be at least 1, got {factor!r}", fix="pass e.g. 3"
        )
    return expected_minutes * 60 * factor
