"""PostgreSQL database block: connection settings; hands out connections and a libpq env."""

from __future__ import annotations

import os
from typing import Literal

import psycopg
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class PostgresDatabase(Block):
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

    def subprocess_env(self, dbname: str | None = None) -> dict[str, str]:
        """Environment for libpq tools (pg_dump, pg_restore) so no secret is on a command line.

        Args:
            dbname: another database on the same server (default: ``self.dbname``).

        Returns:
            A copy of the current environment with the PG* variables set.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            PGHOST=self.host,
            PGPORT=str(self.port),
            PGUSER=self.user,
            PGPASSWORD=self.password.get_secret_value(),
            PGSSLMODE=self.sslmode,
            PGDATABASE=dbname or self.dbname,
            PGCONNECT_TIMEOUT=str(self.connect_timeout),
        )
        return env
