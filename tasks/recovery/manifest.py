"""The backup manifest and the object layout of a backup in the store.

A backup ``ID`` of database ``DB`` lives under ``{prefix}/{DB}/{ID}/``:

- ``dump.pgc.zst.gpg``: ``pg_dump -Fc -Z0`` output, zstd-compressed, gpg-encrypted;
- ``globals.sql.zst.gpg``: ``pg_dumpall --globals-only`` (roles, memberships), same path;
- ``manifest.json``: this model, uploaded last. A backup without its manifest does not exist.

IDs sort chronologically: ``20261127T030000Z-full`` (UTC start time, then the kind).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

BackupKind = Literal["full", "hourly"]

DATA_NAME = "dump.pgc.zst.gpg"
GLOBALS_NAME = "globals.sql.zst.gpg"
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 2  # 2: content checksums, sequences, large objects (all optional)


def backup_id(started_at: datetime, kind: BackupKind) -> str:
    """Build the sortable id of a backup.

    Args:
        started_at: when the backup started (timezone-aware).
        kind: full or hourly.

    Returns:
        For example ``20261127T030000Z-full``.
    """
    return f"{started_at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{kind}"


def parse_backup_id(value: str) -> tuple[datetime, BackupKind]:
    """Split a backup id into its start time and kind.

    Args:
        value: an id made by :func:`backup_id`.

    Returns:
        (start time in UTC, kind).

    Raises:
        ValueError: when ``value`` is not a backup id.
    """
    stamp, _, kind = value.partition("-")
    if kind not in ("full", "hourly"):
        raise ValueError(f"not a backup id: {value!r} (expected e.g. 20261127T030000Z-full)")
    started = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return started, kind  # type: ignore[return-value]


def backup_prefix(prefix: str, database: str, bid: str) -> str:
    """Key prefix (ending in ``/``) of one backup.

    Args:
        prefix: the store's prefix (may be empty).
        database: database name.
        bid: backup id.

    Returns:
        ``{prefix}/{database}/{bid}/`` without a leading slash.
    """
    parts = [p.strip("/") for p in (prefix, database, bid) if p.strip("/")]
    return "/".join(parts) + "/"


class TableCount(BaseModel):
    """Rows of one table, counted in the dump's snapshot, and a checksum of their content."""

    schema_name: str
    table: str
    rows: int
    checksum: str | None = Field(
        default=None,
        description="order-independent content checksum (see Manifest.content_method); "
        "None in backups made before checksums",
    )


class SequenceValue(BaseModel):
    """A sequence's state, read just before pg_dump started."""

    schema_name: str
    name: str
    last_value: int
    is_called: bool
    increment: int = 1

    def next_value(self) -> int:
        """The value ``nextval`` would hand out next."""
        return self.last_value + self.increment if self.is_called else self.last_value


class LargeObjects(BaseModel):
    """The large objects in the dump's snapshot."""

    count: int
    checksum: str = Field(description="SHA-256 of the 'oid:md5' lines in oid order")
    objects: dict[int, str] | None = Field(
        default=None, description="md5 of each object's content by oid (None when too many)"
    )


class GlobalsObject(BaseModel):
    """The cluster's globals (``pg_dumpall --globals-only``) stored beside the dump."""

    key: str
    size_bytes: int = Field(description="bytes of the encrypted object as uploaded")
    sha256: str = Field(description="hex SHA-256 of the encrypted object as uploaded")
    role_passwords: bool = Field(description="password hashes included (operator opt-in)")
    bootstrap_role: str = Field(description="the source's bootstrap superuser (never recreated)")


class Manifest(BaseModel):
    """What a backup contains and how to verify it; written last."""

    manifest_version: int = MANIFEST_VERSION
    backup_id: str
    kind: BackupKind
    database: str
    server_version: str
    started_at: datetime
    finished_at: datetime
    data_key: str
    size_bytes: int = Field(description="bytes of the encrypted object as uploaded")
    sha256: str = Field(description="hex SHA-256 of the encrypted object as uploaded")
    plain_bytes: int = Field(description="bytes pg_dump produced")
    compression: str = "zstd"
    encryption: str = "gpg"
    recipients: list[str] = Field(description="fingerprints of the keys it is encrypted to")
    tables: list[TableCount]
    tool_version: str
    snapshot_consistent: bool = Field(
        description="row counts and checksums were taken in the very snapshot pg_dump dumped"
    )
    globals: GlobalsObject | None = Field(
        default=None, description="roles and memberships (None in backups made before them)"
    )
    encoding: str | None = Field(default=None, description="the source database's encoding")
    lc_collate: str | None = Field(default=None, description="the source's LC_COLLATE")
    lc_ctype: str | None = Field(default=None, description="the source's LC_CTYPE")
    content_method: str | None = Field(
        default=None,
        description="how table checksums and large objects were summed up (None: not recorded)",
    )
    sequences: list[SequenceValue] | None = Field(
        default=None, description="every sequence's state (None in backups made before them)"
    )
    large_objects: LargeObjects | None = Field(
        default=None, description="large objects' count and checksums (None: not recorded)"
    )
