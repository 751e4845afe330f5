"""PostgreSQL database block: connection settings; hands out connections and a libpq env."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import psycopg
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.schema_cache import CachedSchema
from errors import InvalidInputError

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class PostgresDatabase(CachedSchema, Block):
    """A PostgreSQL database: where it is and how to log in (the password is a secret)."""

    _block_type_name = "Veza Postgres Database"
    _block_type_slug = "veza-postgres-database"
    _description = "A PostgreSQL database backed up and restored by veza-ops."

    host: str = Field(description="Server host name or address.")
    port: int = Field(default=5432, ge=1, le=65535, description="Server TCP port.")
    user: str = Field(description="Role to log in as (needs to read every table).")
    password: SecretStr = Field(description="Password of that role.")
    dbname: str = Field(description="The database to back up (or the server's main database).")
    sslmode: SslMode = Field(default="prefer", description="libpq sslmode.")
    connect_timeout: int = Field(default=10, ge=1, description="Seconds to wait for a connection.")
    lock_wait_timeout_s: int = Field(
        default=300, ge=1,
        description="Seconds pg_dump and our own sessions wait for a table lock before failing.",
    )
    statement_timeout_s: int = Field(
        default=3600, ge=1, description="Longest statement of our own sessions, in seconds."
    )
    idle_in_transaction_timeout_s: int = Field(
        default=12 * 3600, ge=1,
        description="Our sessions idle in a transaction this long are ended by the server (the "
        "snapshot session idles while pg_dump runs: keep it above the longest backup).",
    )

    def session_options(self) -> str:
        """The libpq ``options`` bounding every wait of our sessions (locks, statements, idling).

        Returns:
            ``-c lock_timeout=... -c statement_timeout=... -c idle_in_transaction_session_timeout``.
        """
        return " ".join(
            f"-c {name}={seconds * 1000}"
            for name, seconds in (
                ("lock_timeout", self.lock_wait_timeout_s),
                ("statement_timeout", self.statement_timeout_s),
                ("idle_in_transaction_session_timeout", self.idle_in_transaction_timeout_s),
            )
        )

    def connect(self, dbname: str | None = None, *, autocommit: bool = False) -> psycopg.Connection:
        """Open a psycopg connection (library errors are translated by ``tasks.pg``).

        Args:
            dbname: another database on the same server (default: ``self.dbname``).
            autocommit: open in autocommit mode (needed for CREATE/DROP DATABASE).

        Returns:
            An open connection; close it (or use it as a context manager).
        """
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password.get_secret_value(),
            dbname=dbname or self.dbname,
            sslmode=self.sslmode,
            connect_timeout=self.connect_timeout,
            autocommit=autocommit,
            application_name="veza-ops",
            options=self.session_options(),
        )

    def subprocess_env(
        self, dbname: str | None = None, *, passfile: Path | None = None
    ) -> dict[str, str]:
        """Environment for libpq tools (pg_dump, pg_restore, psql): never the password itself.

        Every inherited ``PG*`` variable is dropped (a stray ``PGPASSWORD`` included), so the
        tool only knows what this block says. The password reaches the tool through
        ``passfile`` (see :meth:`libpq_env`), not through its environment, which other
        processes of the same user can read in ``/proc/<pid>/environ``.

        Args:
            dbname: another database on the same server (default: ``self.dbname``).
            passfile: the passfile the tool reads (``PGPASSFILE``); None sets none.

        Returns:
            A copy of the current environment with the PG* variables set.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            PGHOST=self.host,
            PGPORT=str(self.port),
            PGUSER=self.user,
            PGSSLMODE=self.sslmode,
            PGDATABASE=dbname or self.dbname,
            PGCONNECT_TIMEOUT=str(self.connect_timeout),
        )
        if passfile is not None:
            env["PGPASSFILE"] = str(passfile)
        return env

    @contextlib.contextmanager
    def passfile(self) -> Iterator[Path]:
        """A libpq passfile holding this block's password, removed when the block exits.

        The file is created 0600 (libpq ignores a group- or world-readable passfile) inside a
        fresh 0700 directory of its own, and the directory is removed on leaving, error or
        not. Its one line matches any host, port and database (``*``) for this block's user:
        the tools are pointed at the block's server by ``PGHOST``/``PGPORT`` anyway, and
        libpq's host matching would otherwise miss Unix-socket and ``hostaddr`` spellings.
        Only a SIGKILL of this process can leave it behind (in the temp dir, 0600).

        Yields:
            The passfile's path (for ``PGPASSFILE``).

        Raises:
            InvalidInputError: the password holds a line break (a passfile cannot carry it).
        """
        secret = self.password.get_secret_value()
        if "\n" in secret or "\r" in secret:
            raise InvalidInputError(
                "password", "contains a line break, which libpq's passfile cannot carry",
                fix="give the role a password without line breaks",
            )
        directory = Path(tempfile.mkdtemp(prefix="veza-pgpass-"))
        try:
            path = directory / "pgpass"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(f"*:*:*:{_passfile_field(self.user)}:{_passfile_field(secret)}\n")
            yield path
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    @contextlib.contextmanager
    def libpq_env(self, dbname: str | None = None) -> Iterator[dict[str, str]]:
        """:meth:`subprocess_env` with a :meth:`passfile` that lives as long as the block.

        Keep the block open until the tool has exited: ``pg_restore -j`` opens its worker
        connections late, and each reads the passfile.

        Args:
            dbname: another database on the same server (default: ``self.dbname``).

        Yields:
            The environment to start the tool with.
        """
        with self.passfile() as path:
            yield self.subprocess_env(dbname, passfile=path)


def _passfile_field(value: str) -> str:
    r"""Escape ``\`` and ``:`` as libpq's passfile format requires."""
    return value.replace("\\", "\\\\").replace(":", "\\:")
