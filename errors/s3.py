"""The botocore boundary: S3 client errors translated into the veza-ops error tree."""

from __future__ import annotations

from contextlib import AbstractContextManager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from errors import (
    AccessDeniedError,
    AuthenticationError,
    ExternalSystemError,
    NotFoundError,
    PermanentSystemError,
    TransientSystemError,
    UnreachableError,
)
from errors.boundary import translating

SYSTEM = "S3"
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
_TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable"}


def translate(exc: BaseException, *, action: str, bucket: str, key: str | None = None) -> (
    ExternalSystemError
):
    """Turn a botocore exception into a veza-ops error naming the bucket/key and the fix.

    Args:
        exc: the botocore exception.
        action: what we were doing (``upload``, ``list backups``...).
        bucket: the bucket.
        key: the object key, when there is one.

    Returns:
        The error to raise (``from None``: botocore details may carry request data).
    """
    where = f"s3://{bucket}/{key}" if key else f"bucket {bucket!r}"
    fix_bucket = "check the bucket field of the S3BackupStore block, or create the bucket"
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code == "NoSuchBucket" or (status == 404 and not key):
            return NotFoundError(SYSTEM, f"{action}: {where} does not exist", hint=fix_bucket)
        if code in ("NoSuchKey", "NoSuchUpload") or status == 404:
            return NotFoundError(
                SYSTEM, f"{action}: {where} does not exist", hint="list the backups to pick one"
            )
        if code in _AUTH_CODES:
            return AuthenticationError(
                SYSTEM,
                f"{action}: credentials refused for {where} ({code})",
                hint="fix the AwsCredentials block referenced by the store block",
            )
        if code == "AccessDenied" or status == 403:
            return AccessDeniedError(
                SYSTEM,
                f"{action}: access denied to {where}",
                hint="grant the credentials s3:ListBucket/GetObject/PutObject/"
                "AbortMultipartUpload on the bucket (bucket policy or IAM)",
            )
        if code in _TRANSIENT_CODES or status >= 500:
            return TransientSystemError(SYSTEM, f"{action}: {where}: {code or status}")
        return PermanentSystemError(SYSTEM, f"{action}: {where}: {code or status}")
    if isinstance(exc, NoCredentialsError):
        return AuthenticationError(
            SYSTEM, f"{action}: no AWS credentials found", hint="fill the AwsCredentials block"
        )
    if isinstance(exc, BotoConnectionError):
        return UnreachableError(
            SYSTEM, f"{action}: cannot reach the S3 endpoint", hint="check endpoint_url/region"
        )
    return TransientSystemError(SYSTEM, f"{action}: {where}: {type(exc).__name__}")


def s3_errors(*, action: str, bucket: str, key: str | None = None
              ) -> AbstractContextManager[None]:
    """Translate botocore errors raised inside the block.

    Args:
        action: what we are doing, for the message.
        bucket: the bucket.
        key: the object key, when there is one.

    Returns:
        The boundary; it raises the translated error, never chained to the original.
    """
    return translating((ClientError, BotoCoreError),
                       lambda exc: translate(exc, action=action, bucket=bucket, key=key))
