"""pgBackRest's ``info --output=json`` as a typed model, and the PITR window it gives (pure).

One stanza's document looks like (pgBackRest 2.45, fields we use)::

    {"name": "veza", "status": {"code": 0, "message": "ok"}, "cipher": "aes-256-cbc",
     "archive": [{"id": "15-1", "min": "000000010000000000000001",
                  "max": "000000010000000000000007"}],
     "backup": [{"label": "20240101-120000F", "type": "full", "prior": null,
                 "timestamp": {"start": 1704110400, "stop": 1704110410},
                 "archive": {"start": "...0003", "stop": "...0003"},
                 "info": {"size": 23000000, "delta": 23000000,
                          "repository": {"size": 3000000, "delta": 3000000}}}]}

The PITR window opens at the start of the oldest backup (nothing earlier can be restored)
and closes at the newest archived WAL. ``info`` names that WAL segment but not its time:
the caller passes the time when it knows it (``pg_stat_archiver.last_archived_time`` on the
database); otherwise the window is only known to reach the newest backup's stop.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from errors import PermanentSystemError
from errors.pgbackrest import SYSTEM

BackupType = Literal["full", "diff", "incr"]


class PitrBackup(BaseModel):
    """One backup set of the repository."""

    label: str
    type: BackupType
    prior: str | None = Field(default=None, description="The backup it depends on.")
    started_at: datetime
    stopped_at: datetime
    wal_start: str | None = None
    wal_stop: str | None = None
    size_bytes: int = Field(default=0, description="Database size at backup time.")
    repo_size_bytes: int = Field(default=0, description="Stored size (compressed, this set).")


class ArchiveRange(BaseModel):
    """The WAL archive of one PostgreSQL version/system id (``15-1``)."""

    id: str
    min_wal: str | None = None
    max_wal: str | None = None


class PitrWindow(BaseModel):
    """From when to when a point-in-time restore is possible."""

    start: datetime = Field(description="Start of the oldest backup.")
    end_wal: str | None = Field(description="Newest archived WAL segment.")
    end: datetime = Field(
        description="Time of the newest archived WAL when known, else the newest backup's stop."
    )
    end_is_exact: bool = Field(description="False when `end` is only the newest backup's stop.")


class StanzaInfo(BaseModel):
    """What the repository holds for one stanza."""

    stanza: str
    status_code: int
    status_message: str
    cipher: str | None = None
    backups: list[PitrBackup] = Field(default_factory=list)
    archives: list[ArchiveRange] = Field(default_factory=list)
    repo_messages: list[str] = Field(
        default_factory=list, description="Status messages of repositories that are not ok."
    )

    @property
    def ok(self) -> bool:
        """True when pgBackRest rates the stanza ok (0) or only lacking backups (2)."""
        return self.status_code in (0, 2)

    @property
    def newest_wal(self) -> str | None:
        """The newest archived WAL segment over every archive id (same timeline order)."""
        names = [a.max_wal for a in self.archives if a.max_wal]
        return max(names, key=lambda n: (n[8:], n[:8])) if names else None

    @property
    def oldest_wal(self) -> str | None:
        """The oldest archived WAL segment over every archive id."""
        names = [a.min_wal for a in self.archives if a.min_wal]
        return min(names, key=lambda n: (n[8:], n[:8])) if names else None

    @property
    def newest_full(self) -> PitrBackup | None:
        """The newest full backup (pgBackRest never expires it)."""
        fulls = [b for b in self.backups if b.type == "full"]
        return fulls[-1] if fulls else None


def _time(epoch: object) -> datetime:
    return datetime.fromtimestamp(float(epoch), tz=UTC)  # type: ignore[arg-type]


def parse_info(text: str, stanza: str) -> StanzaInfo:
    """Parse ``pgbackrest info --output=json`` and pick the stanza.

    Args:
        text: the command's stdout.
        stanza: the stanza asked for.

    Returns:
        The stanza's backups (oldest first) and archive ranges.

    Raises:
        PermanentSystemError: output that is not the expected JSON, or no such stanza.
    """
    try:
        doc = json.loads(text, strict=False)  # a wrongly decrypted file prints raw bytes
        entry = next(s for s in doc if s.get("name") == stanza)
    except (ValueError, TypeError, AttributeError, StopIteration):
        raise PermanentSystemError(
            SYSTEM, f"info: no JSON document for stanza {stanza!r}",
            hint="check the pgBackRest version (2.45 or newer)",
        ) from None
    try:
        backups = [
            PitrBackup(
                label=b["label"], type=b["type"], prior=b.get("prior"),
                started_at=_time(b["timestamp"]["start"]),
                stopped_at=_time(b["timestamp"]["stop"]),
                wal_start=(b.get("archive") or {}).get("start"),
                wal_stop=(b.get("archive") or {}).get("stop"),
                size_bytes=int((b.get("info") or {}).get("size") or 0),
                repo_size_bytes=int(((b.get("info") or {}).get("repository") or {}).get("delta")
                                    or 0),
            )
            for b in entry.get("backup") or []
        ]
        archives = [
            ArchiveRange(id=a["id"], min_wal=a.get("min"), max_wal=a.get("max"))
            for a in entry.get("archive") or []
        ]
        status = entry.get("status") or {}
        repo_messages = [
            str(r["status"].get("message", "")) for r in entry.get("repo") or []
            if (r.get("status") or {}).get("code", 0) not in (0, 2)
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise PermanentSystemError(
            SYSTEM, f"info: unexpected JSON for stanza {stanza!r} ({type(exc).__name__}: {exc})"
        ) from None
    cipher = entry.get("cipher")
    return StanzaInfo(
        stanza=stanza,
        status_code=int(status.get("code", -1)),
        status_message=str(status.get("message", "")),
        cipher=str(cipher) if cipher is not None else None,
        backups=sorted(backups, key=lambda b: b.started_at),
        archives=archives,
        repo_messages=repo_messages,
    )


def pitr_window(info: StanzaInfo, last_archived_at: datetime | None = None) -> PitrWindow | None:
    """The restorable window: oldest backup start to newest archived WAL.

    Args:
        info: the parsed ``info``.
        last_archived_at: when the newest WAL segment was archived
            (``pg_stat_archiver.last_archived_time``), when known.

    Returns:
        The window, or None without any backup (nothing can be restored).
    """
    if not info.backups:
        return None
    newest_stop = max(b.stopped_at for b in info.backups)
    exact = last_archived_at is not None and last_archived_at >= newest_stop
    return PitrWindow(
        start=info.backups[0].started_at,
        end_wal=info.newest_wal,
        end=last_archived_at if exact and last_archived_at else newest_stop,
        end_is_exact=exact,
    )
