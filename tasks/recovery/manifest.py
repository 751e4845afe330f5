"""The backup manifest and the object layout of a backup in the store.

A backup ``ID`` of database ``DB`` lives under ``{prefix}/{DB}/{ID}/``:

- ``dump.pgc.zst.gpg``: ``pg_dump -Fc -Z0`` output, zstd-compressed, gpg-encrypted;
- ``globals.sql.zst.gpg``: ``pg_dumpall --globals-only`` (roles, memberships), same path;
- ``database.json.zst.gpg``: the database's owner, settings and grants (``dbstate.py``);
- ``manifest.json``: this model, uploaded last. A backup without its manifest does not exist.

IDs sort chronologically: ``20261127T030000Z-full`` (UTC start time, then the kind).

Legacy archives, made before veza-ops by the deployment guide's script (``pg_dump -Fc``
then ``gpg --encrypt``, no zstd, no manifest), sit directly under the prefix as
``{prefix}/{DB}_YYYYMMDD_HHMMSS.dump.gpg``; their id is ``20251101T020000Z-legacy`` (the
time in the name, which the script took from the host's clock, read as UTC).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

BackupKind = Literal["full", "hourly"]
RecordKind = Literal["full", "hourly", "legacy"]
"""What a record in the store can be: a veza-ops backup (full, hourly) or a legacy archive."""

DATA_NAME = "dump.pgc.zst.gpg"
GLOBALS_NAME = "globals.sql.zst.gpg"
STATE_NAME = "database.json.zst.gpg"
LEGACY_CHECKS = "legacy archive: integrity by gpg, no manifest checks"
_LEGACY = re.compile(r"^(?P<db>.+)_(?P<stamp>\d{8}_\d{6})\.dump\.gpg$")
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 3  # 2: content checksums, sequences, large objects; 3: database_state


def backup_id(started_at: datetime, kind: RecordKind) -> str:
    """Build the sortable id of a backup.

    Args:
        started_at: when the backup started (timezone-aware).
        kind: full or hourly (legacy for a legacy archive).

    Returns:
        For example ``20261127T030000Z-full``.
    """
    return f"{started_at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{kind}"


def parse_backup_id(value: str) -> tuple[datetime, RecordKind]:
    """Split a backup id (or a legacy archive's id) into its start time and kind.

    Args:
        value: an id made by :func:`backup_id`, or ``...-legacy``.

    Returns:
        (start time in UTC, kind).

    Raises:
        ValueError: when ``value`` is not a backup id.
    """
    stamp, _, kind = value.partition("-")
    if kind not in ("full", "hourly", "legacy"):
        raise ValueError(f"not a backup id: {value!r} (expected e.g. 20261127T030000Z-full)")
    started = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return started, kind  # type: ignore[return-value]


def legacy_name(database: str, started: datetime) -> str:
    """The file name the guide's script gives an archive: ``veza_db_20251101_020000.dump.gpg``.

    Args:
        database: database name.
        started: the time in the name (UTC).

    Returns:
        The name (a key segment directly under the store's prefix).
    """
    return f"{database}_{started.astimezone(UTC):%Y%m%d_%H%M%S}.dump.gpg"


def parse_legacy_name(name: str) -> tuple[str, datetime] | None:
    """Read a legacy archive's database and time from its file name.

    Args:
        name: the last key segment, e.g. ``veza_db_20251101_020000.dump.gpg``.

    Returns:
        (database, time read as UTC), or None when ``name`` is not a legacy archive's.
    """
    match = _LEGACY.match(name)
    if match is None:
        return None
    try:
        started = datetime.strptime(match["stamp"], "%Y%m%d_%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return match["db"], started


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


class EncryptedObject(BaseModel):
    """Another encrypted object of a backup (zstd then gpg, like the dump)."""

    key: str
    size_bytes: int = Field(description="bytes of the encrypted object as uploaded")
    sha256: str = Field(description="hex SHA-256 of the encrypted object as uploaded")


class Manifest(BaseModel):
    """What a backup contains and how to verify it; written last.

    A legacy archive has no manifest: the catalogue describes it with one made up from its
    listing (``kind`` legacy, no checksum, no tables; see :func:`legacy_manifest`).
    """

    manifest_version: int = MANIFEST_VERSION
    backup_id: str
    kind: RecordKind
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
    database_state: EncryptedObject | None = Field(
        default=None,
        description="the database's owner, settings and grants, encrypted (None: not recorded)",
    )

    @property
    def legacy(self) -> bool:
        """True for a legacy archive (no manifest: integrity rests on gpg alone)."""
        return self.kind == "legacy"


def legacy_manifest(database: str, key: str, size_bytes: int, started: datetime) -> Manifest:
    """Describe a legacy archive as a manifest would, from what its listing tells.

    Args:
        database: database name (from the file name).
        key: the archive's key.
        size_bytes: its size in the store.
        started: the time in its name.

    Returns:
        A manifest of kind ``legacy``: no checksum, recipients, tables or globals.
    """
    return Manifest(
        backup_id=backup_id(started, "legacy"),
        kind="legacy", database=database, server_version="unknown", started_at=started,
        finished_at=started, data_key=key, size_bytes=size_bytes, sha256="", plain_bytes=0,
        compression="pg_dump -Fc", recipients=[], tables=[],
        tool_version="the deployment guide's script (pg_dump -Fc, gpg --encrypt)",
        snapshot_consistent=False,
    )
