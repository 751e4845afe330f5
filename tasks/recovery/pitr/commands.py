"""pgBackRest commands as functions and tasks: bucket check, stanza, backup, info, expire.

Each function takes the repository block and the host and runs one command through
:func:`tasks.recovery.pitr.runner.run_pgbackrest`. :func:`check_bucket` runs first in every
flow: an unreachable endpoint or a missing bucket is refused in seconds, before pgBackRest
starts (pgBackRest would retry each request for its whole ``io-timeout``).
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.pgbackrest import DatabaseHost, PgBackRestRepository
from errors import PermanentSystemError, retry_on_transient
from errors.pgbackrest import translate_status
from errors.s3 import s3_errors
from tasks.logs import ModuleLogger
from tasks.recovery.pitr.info import PitrBackup, StanzaInfo, parse_info
from tasks.recovery.pitr.runner import run_pgbackrest

logger = ModuleLogger(__name__)

BackupType = Literal["full", "diff", "incr"]
SHORT_TIMEOUT_S = 300.0


def check_bucket(repo: PgBackRestRepository) -> None:
    """Check that the repository's bucket is reachable and accessible, before pgBackRest runs.

    Args:
        repo: the repository block.

    Raises:
        UnreachableError: the endpoint does not answer (TLS included).
        NotFoundError: the bucket does not exist.
        AuthenticationError, AccessDeniedError: credentials refused or lacking rights.
    """
    with s3_errors(action="check the pgBackRest repository", bucket=repo.bucket):
        repo.get_s3_client().head_bucket(Bucket=repo.bucket)


def stanza_create(repo: PgBackRestRepository, host: DatabaseHost) -> None:
    """Create the stanza (idempotent: an existing, matching stanza is left as it is).

    The cipher passphrase is fixed here: the repository's info files are encrypted with it.

    Args:
        repo: the repository block.
        host: the host (PostgreSQL must be running: pgBackRest reads its system id).
    """
    run_pgbackrest(repo, host, "stanza-create", timeout_s=SHORT_TIMEOUT_S)


def check(repo: PgBackRestRepository, host: DatabaseHost) -> None:
    """``pgbackrest check``: the config, the repository and that WAL archiving works.

    It switches to a new WAL segment and waits until that segment is in the repository
    (``archive-timeout``, 60 s by default): a broken ``archive_command`` fails here.

    Args:
        repo: the repository block.
        host: the host.
    """
    run_pgbackrest(repo, host, "check", timeout_s=SHORT_TIMEOUT_S)


def info(repo: PgBackRestRepository, host: DatabaseHost) -> StanzaInfo:
    """``pgbackrest info --output=json`` for the stanza, parsed.

    Args:
        repo: the repository block.
        host: the host.

    Returns:
        The stanza's backups and archive ranges.

    Raises:
        ExternalSystemError: the stanza is missing or unreadable (wrong passphrase...).
    """
    result = run_pgbackrest(repo, host, "info", ["--output=json"], timeout_s=SHORT_TIMEOUT_S)
    parsed = parse_info(result.stdout, repo.stanza)
    if not parsed.ok:
        # info exits 0 on a repository it cannot read: the status says why
        raise translate_status(
            "info", (parsed.repo_messages or [parsed.status_message])[0],
            secrets=repo.secrets(), stanza=repo.stanza,
        )
    return parsed


def backup(
    repo: PgBackRestRepository, host: DatabaseHost, kind: BackupType, *, timeout_s: float
) -> PitrBackup:
    """Take one backup and return it as ``info`` records it.

    pgBackRest turns a ``diff`` or ``incr`` without a prior full into a full (with a
    warning, logged): the returned record says the type really taken.

    Args:
        repo: the repository block.
        host: the host.
        kind: ``full``, ``diff`` or ``incr``.
        timeout_s: the backup is killed after this many seconds.

    Returns:
        The new backup.

    Raises:
        PermanentSystemError: the backup reported success but ``info`` does not list it.
    """
    before = {b.label for b in info(repo, host).backups}
    run_pgbackrest(repo, host, "backup", [f"--type={kind}"], timeout_s=timeout_s)
    after = info(repo, host)
    new = [b for b in after.backups if b.label not in before]
    if not new:
        raise PermanentSystemError(
            "pgBackRest", f"backup --type={kind} succeeded but info lists no new backup"
        )
    logger.info("pgBackRest %s backup %s taken", new[-1].type, new[-1].label)
    return new[-1]


def expire(repo: PgBackRestRepository, host: DatabaseHost) -> StanzaInfo:
    """``pgbackrest expire`` with the block's retention; returns what remains.

    pgBackRest never expires the newest full backup, whatever the retention says.

    Args:
        repo: the repository block.
        host: the host.

    Returns:
        The stanza after expiry.
    """
    run_pgbackrest(repo, host, "expire", timeout_s=SHORT_TIMEOUT_S * 4)
    return info(repo, host)


# --- Prefect tasks (the flows' steps) -------------------------------------------------

_TASK: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "retry_condition_fn": retry_on_transient,
}


@task(name="pitr-check-bucket", **_TASK)
def check_bucket_task(repo: PgBackRestRepository) -> None:
    """Task of :func:`check_bucket`."""
    check_bucket(repo)


@task(name="pitr-stanza-create", **_TASK)
def stanza_create_task(repo: PgBackRestRepository, host: DatabaseHost) -> None:
    """Task of :func:`stanza_create`."""
    stanza_create(repo, host)


@task(name="pitr-check", **_TASK)
def check_task(repo: PgBackRestRepository, host: DatabaseHost) -> None:
    """Task of :func:`check`."""
    check(repo, host)


@task(name="pitr-backup", **_TASK)
def backup_task(
    repo: PgBackRestRepository, host: DatabaseHost, kind: BackupType, timeout_s: float
) -> PitrBackup:
    """Task of :func:`backup`."""
    return backup(repo, host, kind, timeout_s=timeout_s)


@task(name="pitr-info", **_TASK)
def info_task(repo: PgBackRestRepository, host: DatabaseHost) -> StanzaInfo:
    """Task of :func:`info`."""
    return info(repo, host)


@task(name="pitr-expire", **_TASK)
def expire_task(repo: PgBackRestRepository, host: DatabaseHost) -> StanzaInfo:
    """Task of :func:`expire`."""
    return expire(repo, host)
