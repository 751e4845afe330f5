"""Local spool cleanup: stray files older than N days in a configured directory."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from errors import InvalidInputError, PermanentSystemError


@dataclass(frozen=True)
class SpoolCleanup:
    """Files found too old in the spool, and which of them were removed."""

    directory: str
    stale: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def check_spool(directory: str, *, max_age_days: int) -> Path:
    """Validate the spool parameters before anything is touched.

    Args:
        directory: the spool directory (absolute).
        max_age_days: files older than this many days are stray.

    Returns:
        The spool as a resolved path.

    Raises:
        InvalidInputError: naming ``local_spool`` or ``spool_max_age_days`` and the fix.
    """
    if max_age_days < 0:
        raise InvalidInputError(
            "spool_max_age_days", f"must not be negative, got {max_age_days}", fix="pass 0 or more"
        )
    path = Path(directory)
    if not path.is_absolute():
        raise InvalidInputError(
            "local_spool",
            f"{directory!r} is not an absolute path",
            fix="pass an absolute directory",
        )
    if not path.is_dir():
        raise InvalidInputError(
            "local_spool",
            f"{directory!r} is not a directory",
            fix="create it, or leave local_spool empty to skip the spool cleanup",
        )
    resolved = path.resolve()
    if resolved == Path(resolved.anchor):
        raise InvalidInputError(
            "local_spool", "is the file system root", fix="pass the backup spool directory itself"
        )
    return resolved


def stale_files(directory: Path, *, max_age_days: int, now: datetime) -> list[Path]:
    """Regular files under ``directory`` (recursively) last modified more than N days ago.

    Symbolic links are neither followed nor listed.

    Args:
        directory: the spool.
        max_age_days: the age limit in days.
        now: the current time (timezone-aware).

    Returns:
        The stale files, sorted.
    """
    cutoff = (now - timedelta(days=max_age_days)).timestamp()
    found: list[Path] = []
    for root, _dirs, files in os.walk(directory, followlinks=False):
        for name in files:
            path = Path(root) / name
            info = path.lstat()
            if path.is_symlink() or not path.is_file():
                continue
            if info.st_mtime < cutoff:
                found.append(path)
    return sorted(found)


def clean_spool(directory: str, *, max_age_days: int, now: datetime, dry_run: bool) -> SpoolCleanup:
    """Remove (or, in a dry run, only list) stray spool files older than N days.

    Args:
        directory: the spool directory.
        max_age_days: the age limit in days.
        now: the current time (timezone-aware).
        dry_run: list only.

    Returns:
        What was found and removed.

    Raises:
        InvalidInputError: on a bad directory or age.
        PermanentSystemError: when a file cannot be removed.
    """
    spool = check_spool(directory, max_age_days=max_age_days)
    stale = stale_files(spool, max_age_days=max_age_days, now=now)
    removed: list[str] = []
    if not dry_run:
        for path in stale:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise PermanentSystemError(
                    "spool", f"cannot remove {path}: {exc.strerror}", hint="fix its permissions"
                ) from None
            removed.append(str(path))
    return SpoolCleanup(directory=str(spool), stale=[str(p) for p in stale], removed=removed)


@task(name="clean-local-spool", cache_policy=NO_CACHE)
def clean_spool_task(
    directory: str, *, max_age_days: int, now: datetime, dry_run: bool
) -> SpoolCleanup:
    """Prefect task: see :func:`clean_spool`.

    Args:
        directory: the spool directory.
        max_age_days: the age limit in days.
        now: the current time.
        dry_run: list only.

    Returns:
        What was found and removed.
    """
    result = clean_spool(directory, max_age_days=max_age_days, now=now, dry_run=dry_run)
    get_run_logger().info(
        "spool %s: %d stale file(s), %d removed",
        result.directory,
        len(result.stale),
        len(result.removed),
    )
    return result
