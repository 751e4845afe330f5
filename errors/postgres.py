"""The psycopg boundary: psycopg errors become veza-ops errors naming server, role and database."""

from __future__ import annotations

import psycopg

from errors import (
    AuthenticationError,
    ExternalSystemError,
    NotFoundError,
    PermanentSystemError,
    TransientSystemError,
    UnreachableError,
)

SYSTEM = "PostgreSQL"


def translate_pg_error(exc: psycopg.Error, *, user: str, host: str, port: int,
                       dbname: str) -> ExternalSystemError:
    """Turn a psycopg error into a veza-ops error naming the server, user and database.

    Args:
        exc: the psycopg error.
        user: the role we logged in as (never the password).
        host: the server's host.
        port: the server's port.
        dbname: the database we were talking to.

    Returns:
        The error to raise ``from None``.
    """
    where = f"{user}@{host}:{port}/{dbname}"
    text = str(exc).lower()
    state = getattr(exc, "sqlstate", None) or ""
    if state in ("28P01", "28000") or "password authentication failed" in text:
        return AuthenticationError(
            SYSTEM, f"login refused for {where}",
            hint="fix the user/password fields of the PostgresDatabase block",
        )
    if state == "3D000" or ("database" in text and "does not exist" in text):
        return NotFoundError(
            SYSTEM, f"database {dbname!r} does not exist on {host}:{port}",
            hint="fix the dbname field of the PostgresDatabase block",
        )
    if isinstance(exc, psycopg.OperationalError) and not state:
        return UnreachableError(
            SYSTEM, f"cannot reach {host}:{port} ({_first_line(exc)})",
            hint="check host/port/sslmode of the PostgresDatabase block and that the server runs",
        )
    if state == "55P03" or "lock timeout" in text:
        return TransientSystemError(
            SYSTEM, f"{where}: gave up waiting for a table lock ({_first_line(exc)})",
            hint="another session holds a lock (see pg_locks); the wait is bounded by "
            "lock_wait_timeout_s of the PostgresDatabase block",
        )
    if state.startswith(("08", "53", "57", "40")):
        return TransientSystemError(SYSTEM, f"{where}: {_first_line(exc)}")
    return PermanentSystemError(SYSTEM, f"{where}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
