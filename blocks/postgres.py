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
