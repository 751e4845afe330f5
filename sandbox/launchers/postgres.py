"""Launch a throwaway PostgreSQL 15 cluster on a free loopback port (tests and the demo)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from sandbox.procs import SandboxError, free_port, stop_pid, wait_until

PG_USER = "veza"
PG_PASSWORD = "sandbox-pg-password"  # noqa: S105 - a throwaway local cluster
SERVER_OWNER = "postgres"


def pg_bindir() -> Path:
    """Find the bin directory of PostgreSQL 15 (or the newest installed).

    Returns:
        The directory holding ``initdb`` and ``postgres``.

    Raises:
        SandboxError: when PostgreSQL is not installed.
    """
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    preferred = [c for c in candidates if "/15/" in c]
    for cand in preferred + candidates:
        if (Path(cand) / "initdb").exists():
            return Path(cand)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise SandboxError("PostgreSQL not found: apt-get install postgresql-15")


@dataclass
class PgServer:
    """A running throwaway PostgreSQL cluster."""

    host: str
    port: int
    user: str
    password: str
    root: Path
    pid: int
    _removable: bool = field(default=True, repr=False)

    def conninfo(self, dbname: str = "postgres") -> str:
        """Build a libpq connection string (for tests; it contains the password).

        Args:
            dbname: the database.

        Returns:
            The conninfo string.
        """
        return (
            f"host={self.host} port={self.port} user={self.user} "
            f"password={self.password} dbname={dbname}"
        )

    def stop(self) -> None:
        """Stop the server and remove its files."""
        stop_pid(self.pid, timeout=20)
        if self._removable:
            shutil.rmtree(self.root, ignore_errors=True)


def server_owner_ids() -> tuple[int, int] | None:
    """(uid, gid) the cluster's files and server get: ``postgres``'s under root, else None.

    Returns:
        The ids, or None when running as an ordinary user (the cluster is then that user's).

    Raises:
        SandboxError: running as root without a ``postgres`` system user.
    """
    return _owner_ids()


def _owner_ids() -> tuple[int, int] | None:
    """Return (uid, gid) of the ``postgres`` user when running as root, else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVER_OWNER)
    except KeyError as exc:
        raise SandboxError("running as root needs the `postgres` system user") from exc
    return entry.pw_uid, entry.pw_gid


def _run_as(argv: list[str], ids: tuple[int, int] | None, log: Path) -> None:
    with open(log, "ab") as out:
        proc = subprocess.run(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            user=ids[0] if ids else None,
            group=ids[1] if ids else None,
            check=False,
        )
    if proc.returncode != 0:
        raise SandboxError(f"{argv[0]} failed ({proc.returncode}); see {log}")


def start_postgres(
    *,
    user: str = PG_USER,
    password: str = PG_PASSWORD,
    port: int | None = None,
    timeout: float = 60,
    root: Path | None = None,
    local_auth: str = "scram-sha-256",
    settings: Mapping[str, str] | None = None,
) -> PgServer:
    """Create a cluster in a private temp dir, start it on 127.0.0.1, wait until it answers.

    When running as root the cluster is owned and run by the ``postgres`` system user
    (PostgreSQL refuses to run as root). Password auth (scram-sha-256) over TCP.

    Args:
        user: the bootstrap superuser.
        password: its password.
        port: the port (a free one when None).
        timeout: seconds to wait for it to accept connections.
        root: an existing private directory for the cluster (``data``, ``sock`` and the
            server's log go in it; it is removed on stop); a fresh temp dir when None. A
            caller that must know the paths first (a WAL-archiving cluster's pgBackRest
            config names the data directory) passes its own.
        local_auth: authentication on the Unix socket (``peer`` lets pgBackRest, running as
            the cluster's OS user, log in as the superuser of the same name).
        settings: extra ``postgresql.conf`` settings given on the command line
            (``archive_mode``, ``archive_command``...).

    Returns:
        The running server.
    """
    bindir = pg_bindir()
    ids = _owner_ids()
    root = Path(tempfile.mkdtemp(prefix="veza-pg-")) if root is None else root
    data, sock, log = root / "data", root / "sock", root / "server.log"
    sock.mkdir()
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    if ids:
        for path in (root, sock, pwfile):
            os.chown(path, *ids)
    log.touch()
    try:
        _run_as(
            [
                str(bindir / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256", f"--auth-local={local_auth}",
                "-E", "UTF8", "--locale=C", "--no-sync",
            ],
            ids,
            log,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    port = port or free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sock}",
                "-c", "fsync=off", "-c", "full_page_writes=off",
                "-c", "synchronous_commit=off", "-c", "max_connections=60",
                *(arg for name, value in (settings or {}).items()
                  for arg in ("-c", f"{name}={value}")),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            user=ids[0] if ids else None,
            group=ids[1] if ids else None,
            start_new_session=True,
        )
    server = PgServer(
        host="127.0.0.1", port=port, user=user, password=password, root=root, pid=proc.pid
    )

    def _ready() -> bool:
        if proc.poll() is not None:
            raise SandboxError(f"postgres exited with {proc.returncode}; see {log}")
        with contextlib.suppress(psycopg.OperationalError):
            with psycopg.connect(server.conninfo(), connect_timeout=2):
                return True
        return False

    try:
        wait_until(_ready, timeout=timeout, what=f"PostgreSQL on port {port}")
    except BaseException:
        server.stop()
        raise
    return server
