"""Point-in-time restore into a NEW data directory (never over a running cluster).

pgBackRest picks the newest backup that ends before the target, copies it into the
directory and writes the recovery settings (``recovery_target_time``,
``recovery_target_action=promote``, ``restore_command``, ``recovery.signal``). Starting a
PostgreSQL on the directory then replays WAL from the repository up to the target and
promotes. The ``restore_command`` written names the host's INSTALLED config file
(:func:`blocks.pgbackrest.postgresql_settings`), not the run's private copy, which is gone
by the time the restored cluster starts.
"""

from __future__ import annotations

import os
import pwd
from datetime import UTC, datetime
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.pgbackrest import DatabaseHost, PgBackRestRepository, postgresql_settings
from errors import InvalidInputError, RestoreRefusedError
from tasks.logs import ModuleLogger
from tasks.recovery.pitr.runner import run_pgbackrest

logger = ModuleLogger(__name__)


def format_target(target: datetime) -> str:
    """A recovery_target_time PostgreSQL parses unambiguously (UTC, microseconds).

    Args:
        target: an aware datetime.

    Returns:
        e.g. ``2026-11-27 12:00:00.123456+00``.

    Raises:
        InvalidInputError: a naive datetime (its time zone would be guessed).
    """
    if target.tzinfo is None:
        raise InvalidInputError(
            "target_time", "has no time zone", fix="give it with an offset, e.g. ...Z or +00:00"
        )
    return target.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def check_restore_target(target_dir: Path, host: DatabaseHost) -> None:
    """Refuse any directory that is not new or empty, before anything is written.

    Args:
        target_dir: where the restore would go.
        host: the host (its live data directory is refused by name too).

    Raises:
        RestoreRefusedError: a relative path, the live data directory, a file, a
            directory holding anything (a ``postmaster.pid`` above all).
    """
    if not target_dir.is_absolute():
        raise RestoreRefusedError(f"restore target {target_dir} must be an absolute path")
    if target_dir.resolve() == Path(host.data_directory).resolve():
        raise RestoreRefusedError(
            f"restore target {target_dir} is the host's live data directory: choose a new one"
        )
    if not target_dir.exists():
        return
    if not target_dir.is_dir():
        raise RestoreRefusedError(f"restore target {target_dir} exists and is not a directory")
    if (target_dir / "postmaster.pid").exists():
        raise RestoreRefusedError(
            f"restore target {target_dir} holds a postmaster.pid: a cluster may be running "
            "there; a PITR restore never overwrites one: choose a new directory"
        )
    if any(target_dir.iterdir()):
        raise RestoreRefusedError(
            f"restore target {target_dir} is not empty: a PITR restore goes into a new, empty "
            "data directory"
        )


def _prepare(target_dir: Path, host: DatabaseHost) -> None:
    """Create the directory (0700, owned by the cluster's OS user) when missing."""
    target_dir.mkdir(mode=0o700, parents=False, exist_ok=True)
    target_dir.chmod(0o700)
    if host.os_user and os.geteuid() == 0:
        entry = pwd.getpwnam(host.os_user)
        os.chown(target_dir, entry.pw_uid, entry.pw_gid)


def restore_to_time(
    repo: PgBackRestRepository,
    host: DatabaseHost,
    target_dir: Path,
    target_time: datetime,
    *,
    timeout_s: float,
) -> str:
    """Restore the stanza as of ``target_time`` into ``target_dir`` (new or empty).

    Only files are written: start a PostgreSQL on the directory (its own port) to replay
    WAL up to the target; it promotes when it gets there (``recovery_target_action=promote``)
    and fails to start ("recovery ended before configured recovery target was reached")
    when the archive does not reach the target yet.

    Args:
        repo: the repository block.
        host: the host (installed config file, OS user).
        target_dir: the new data directory (its parent must exist).
        target_time: the moment to recover to (inclusive).
        timeout_s: the restore is killed after this many seconds.

    Returns:
        The target as passed to PostgreSQL.

    Raises:
        RestoreRefusedError: the directory is not new or empty (nothing written).
    """
    target = format_target(target_time)
    check_restore_target(target_dir, host)
    _prepare(target_dir, host)
    restore_command = postgresql_settings(repo, host, data_directory=str(target_dir))[
        "restore_command"
    ]
    run_pgbackrest(
        repo, host, "restore",
        [
            f"--pg1-path={target_dir}",
            "--type=time",
            f"--target={target}",
            "--target-action=promote",
            f"--recovery-option=restore_command={restore_command}",
        ],
        timeout_s=timeout_s,
    )
    logger.info("pgBackRest restored stanza %s to %s into %s", repo.stanza, target, target_dir)
    return target


@task(name="pitr-restore", cache_policy=NO_CACHE)
def restore_to_time_task(
    repo: PgBackRestRepository, host: DatabaseHost, target_dir: str, target_time: datetime,
    timeout_s: float,
) -> str:
    """Task of :func:`restore_to_time`."""
    return restore_to_time(repo, host, Path(target_dir), target_time, timeout_s=timeout_s)
