"""Multipart upload from a stream: parts read in order, SHA-256 and size, abort on failure."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

from errors.s3 import s3_errors

logger = logging.getLogger(__name__)


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
    around ``(max_inflight + 1) * part_size``. The object only appears when
    ``complete_multipart_upload`` succeeds, which happens after ``before_complete`` (the
    caller's check of every producer's exit status) returned. Any failure aborts the upload.

    Args:
        client: boto3 S3 client.
        bucket: the bucket.
        key: the object key.
        stream: readable binary stream (e.g. the last pipeline stage's stdout).
        part_size: bytes per part (>= 5 MiB except the last).
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
        except Exception:  # keep the original error; the parts expire with a lifecycle rule
            logger.exception("could not abort the multipart upload of s3://%s/%s", bucket, key)
        raise
    return UploadResult(key=key, size=size, sha256=digest.hexdigest(), parts=len(parts))
