"""Run one ``pgbackrest`` command as a child process with a private, short-lived config file.

The config (secrets included) is written by :func:`blocks.pgbackrest.render_config` into a
file of mode 0600 in a fresh 0700 directory owned by the OS user pgBackRest runs as, and
removed when the child exits, whatever happens. The command line carries paths and
options only, never a secret; the child's environment is built from scratch (no inherited
``PGBACKREST_*`` variable can override the file). Errors are translated by
:mod:`errors.pgbackrest` with every secret redacted.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from blocks.pgbackrest import DatabaseHost, PgBackRestRepository, render_config
from errors import InvalidInputError, TransientSystemError
from errors.pgbackrest import SYSTEM, redact, translate
from tasks.logs import ModuleLogger

logger = ModuleLogger(__name__)

CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class RunResult:
    """What a successful run printed (stderr already redacted)."""

    command: str
    stdout: str
    stderr: str


def _owner(host: DatabaseHost) -> tuple[int, int] | None:
    """(uid, gid) to run as, or None to run as ourselves."""
    if host.os_user is None:
        return None
    try:
        entry = pwd.getpwnam(host.os_user)
    except KeyError:
        raise InvalidInputError(
            "host.os_user", f"no OS user {host.os_user!r} on this host",
            fix="name the PostgreSQL cluster's owner (usually postgres)",
        ) from None
    if entry.pw_uid == os.geteuid():
        return None
    if os.geteuid() != 0:
        raise InvalidInputError(
            "host.os_user", f"running as {host.os_user!r} needs the worker to run as root",
            fix="run the worker as the cluster's owner and leave os_user empty",
        )
    return entry.pw_uid, entry.pw_gid


def os_user_ids(host: DatabaseHost) -> tuple[int, int] | None:
    """(uid, gid) of ``host.os_user`` when the worker must switch to it, else None.

    Args:
        host: the host.

    Returns:
        The ids, or None to run as the worker's own user.

    Raises:
        InvalidInputError: no such OS user, or switching needs root.
    """
    return _owner(host)


@contextlib.contextmanager
def private_config(
    repo: PgBackRestRepository, host: DatabaseHost
) -> Iterator[Path]:
    """A private copy of the rendered config, removed on exit.

    Args:
        repo: the repository block.
        host: the host.

    Yields:
        The directory holding ``pgbackrest.conf`` (0600) and an empty ``conf.d``.
    """
    ids = _owner(host)
    directory = Path(tempfile.mkdtemp(prefix="veza-pgbackrest-"))
    try:
        path = directory / "pgbackrest.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(render_config(repo, host))
        (directory / "conf.d").mkdir(mode=0o700)
        if ids:
            for item in (directory, path, directory / "conf.d"):
                os.chown(item, *ids)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def build_argv(host: DatabaseHost, config_dir: Path, stanza: str, command: str,
               options: Sequence[str] = ()) -> list[str]:
    """The child's command line: paths and options only (tests check it holds no secret).

    Console output goes nowhere and warnings and errors to stderr, so stdout is only the
    command's own output (the JSON of ``info``); the run's own log file is off (the
    host's log-path is for the archiver).

    Args:
        host: the host (the program).
        config_dir: the private config directory.
        stanza: the stanza.
        command: the pgBackRest command.
        options: extra ``--name=value`` options.

    Returns:
        The argv.
    """
    return [
        host.executable,
        f"--config={config_dir / 'pgbackrest.conf'}",
        f"--config-include-path={config_dir / 'conf.d'}",
        f"--stanza={stanza}",
        "--log-level-console=off",
        "--log-level-stderr=warn",
        "--log-level-file=off",
        *options,
        command,
    ]


def run_pgbackrest(
    repo: PgBackRestRepository,
    host: DatabaseHost,
    command: str,
    options: Sequence[str] = (),
    *,
    timeout_s: float,
) -> RunResult:
    """Run ``pgbackrest COMMAND`` to completion with a private config.

    Args:
        repo: the repository block.
        host: the host.
        command: ``stanza-create``, ``check``, ``backup``, ``info``, ``expire``, ``restore``...
        options: extra options (never secrets).
        timeout_s: the child is killed after this many seconds (a transient error).

    Returns:
        Its output.

    Raises:
        ExternalSystemError: the translated pgBackRest error (secrets redacted).
        TransientSystemError: the timeout.
    """
    ids = _owner(host)
    secrets = repo.secrets()
    with private_config(repo, host) as config_dir:
        argv = build_argv(host, config_dir, repo.stanza, command, options)
        env = {"PATH": CHILD_PATH, "LANG": "C.UTF-8", "TZ": "UTC"}
        logger.info("pgbackrest %s (stanza %s)", command, repo.stanza)
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, errors="replace", env=env, cwd=config_dir,
                stdin=subprocess.DEVNULL, timeout=timeout_s, check=False,
                user=ids[0] if ids else None, group=ids[1] if ids else None,
                extra_groups=[] if ids else None,
            )
        except subprocess.TimeoutExpired:
            raise TransientSystemError(
                SYSTEM, f"{command} (stanza {repo.stanza}) did not finish in {timeout_s:.0f} s",
                hint="raise the timeout or look at the repository's speed",
            ) from None
        except FileNotFoundError:
            raise InvalidInputError(
                "host.executable", f"{host.executable!r} not found",
                fix="install pgBackRest (apt-get install pgbackrest)",
            ) from None
    stderr = redact(proc.stderr, secrets)
    if proc.returncode != 0:
        raise translate(command, proc.returncode, proc.stderr, secrets=secrets, stanza=repo.stanza)
    for line in stderr.splitlines():
        if line.strip():
            logger.warning("pgbackrest %s: %s", command, line.strip()[:400])
    return RunResult(command=command, stdout=proc.stdout, stderr=stderr)
