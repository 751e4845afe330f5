"""S3 backup store block: bucket, prefix and upload settings; hands out a boto3 S3 client.

Credentials reuse prefect-aws's ``AwsCredentials`` block rather than fields of our own:
operators already register it for other flows, it keeps the secret key as ``SecretStr``,
and its boto3 session supports profiles, session tokens and assumed roles that a pair of
key fields would not. The endpoint URL lives on this block (not in the credentials'
client parameters) so one set of credentials can serve several S3-compatible stores.
"""

from __future__ import annotations

from typing import Any, Literal

from botocore.config import Config
from prefect.blocks.core import Block
from prefect_aws import AwsCredentials
from pydantic import Field, model_validator

from blocks.s3_client import s3_client
from blocks.schema_cache import CachedSchema, cache_schema_of

cache_schema_of(AwsCredentials)  # nested here: its schema once per class, not per field

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last


class S3BackupStore(CachedSchema, Block):
    """Where backups go: an S3 (or S3-compatible) bucket and key prefix."""

    _block_type_name = "Veza S3 Backup Store"
    _block_type_slug = "veza-s3-backup-store"
    _description = "An S3 bucket and prefix holding veza-ops database backups."

    bucket: str = Field(description="Bucket name.")
    prefix: str = Field(default="postgres", description="Key prefix of every backup.")
    region: str | None = Field(default=None, description="AWS region of the bucket.")
    endpoint_url: str | None = Field(
        default=None, description="Endpoint of an S3-compatible store (MinIO, Ceph...)."
    )
    credentials: AwsCredentials = Field(
        default_factory=AwsCredentials, description="prefect-aws AwsCredentials block."
    )
    server_side_encryption: Literal["AES256", "aws:kms"] | None = Field(
        default=None, description="Server-side encryption of the uploaded objects."
    )
    kms_key_id: str | None = Field(default=None, description="KMS key id for aws:kms.")
    storage_class: str | None = Field(
        default=None, description="Storage class, e.g. STANDARD_IA (default: the bucket's)."
    )
    part_size_mib: int = Field(
        default=16, ge=5, le=512, description="Multipart upload part size in MiB (5-512)."
    )
    max_inflight_parts: int = Field(
        default=2, ge=1, le=8, description="Parts uploaded concurrently (memory ~ size x this)."
    )
    max_attempts: int = Field(
        default=5, ge=1, le=20,
        description="Attempts per S3 request (botocore standard retries: 5xx, throttling, "
        "resets and timeouts; 1 = no retry).",
    )
    read_timeout_s: float = Field(
        default=60.0, gt=0, le=900,
        description="Seconds without a byte from S3 before a request counts as stalled (retried).",
    )

    @model_validator(mode="after")
    def _kms_needs_key(self) -> S3BackupStore:
        if self.kms_key_id and self.server_side_encryption != "aws:kms":
            raise ValueError("kms_key_id is only used with server_side_encryption='aws:kms'")
        return self

    @property
    def part_size(self) -> int:
        """Multipart part size in bytes."""
        return max(MIN_PART_SIZE, self.part_size_mib * MiB)

    def get_client(self) -> Any:
        """Build a boto3 S3 client from the credentials block.

        Transient failures (5xx, throttling, connection resets, stalls past
        ``read_timeout_s``) are retried by botocore, ``max_attempts`` in all per request: the
        one retry style of the uploads (a part's body is in memory, so it can be resent).

        Returns:
            A ``botocore`` S3 client.
        """
        return s3_client(
            self.credentials,
            region_name=self.region or self.credentials.region_name,
            endpoint_url=self.endpoint_url,
            config=Config(
                retries={"total_max_attempts": self.max_attempts, "mode": "standard"},
                connect_timeout=min(self.read_timeout_s, 30.0),
                read_timeout=self.read_timeout_s,
            ),
        )

    def upload_extra_args(self) -> dict[str, str]:
        """Arguments for ``create_multipart_upload``/``put_object`` from the settings.

        Returns:
            ServerSideEncryption / SSEKMSKeyId / StorageClass when set.
        """
        extra: dict[str, str] = {}
        if self.server_side_encryption:
            extra["ServerSideEncryption"] = self.server_side_encryption
        if self.kms_key_id:
            extra["SSEKMSKeyId"] = self.kms_key_id
        if self.storage_class:
            extra["StorageClass"] = self.storage_class
        return extra
