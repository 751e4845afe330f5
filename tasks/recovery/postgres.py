"""PostgreSQL access: connections with translated errors, exported snapshots, databases."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from psycopg import sql

from blocks.postgres import PostgresDatabase
from errors.postgres import translate_pg_error
from tasks.logs import ModuleLogger

logger = ModuleLogger(__name__)  # run logger inside a run: lines reach the UI
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")


@contextlib.contextmanager
def pg_errors(db: PostgresDatabase, dbname: str | None = None) -> Iterator[None]:
    """Translate psycopg errors raised inside the block (the only place they are caught).

    Callers that tolerate a failed statement (amcheck, smoke SQL) catch the translated
    ``ExternalSystemError`` instead of ``psycopg.Error``.

    Args:
        db: the database block (server, role; never the password).
        dbname: the database talked to (default: the block's).

    Raises:
        ExternalSystemError: from :func:`errors.postgres.translate_pg_error`.
    """
    try:
        yield
    except psycopg.Error as exc:
        raise translate_pg_error(exc, user=db.user, host=db.host, port=db.port,
                                 dbname=dbname or db.dbname) from None


@contextlib.contextmanager
def connect(
    db: PostgresDatabase, dbname: str | None = None, *, autocommit: bool = False
) -> Iterator[psycopg.Connection]:
    """Open a connection; psycopg errors inside the block are translated (:func:`pg_errors`).

    Args:
        db: the database block.
        dbname: another database on that server.
        autocommit: autocommit mode.

    Yields:
        The open connection (closed afterwards).
    """
    name = dbname or db.dbname
    with pg_errors(db, name), db.connect(name, autocommit=autocommit) as conn:
        yield conn


def server_version(conn: psycopg.Connection) -> str:
    """The server's version string (``SHOW server_version``)."""
    row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


@dataclass(frozen=True)
class Snapshot:
    """An exported snapshot held open, and facts about the database it is of."""

    snapshot_id: str
    server_version: str
    database_bytes: int
    encoding: str = ""
    lc_collate: str = ""
    lc_ctype: str = ""
    bootstrap_role: str = ""


@contextlib.contextmanager
def exported_snapshot(db: PostgresDatabase) -> Iterator[Snapshot]:
    """Open a REPEATABLE READ transaction and export its snapshot.

    The transaction stays open until the block exits, so ``pg_dump --snapshot=ID`` and the
    content survey (``content.surveying``, which imports it) see exactly the same rows.

    Args:
        db: the database block.

    Yields:
        The snapshot id, the server's version, the database's size, encoding and locale.
    """
    with connect(db) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            row = conn.execute("SELECT pg_export_snapshot()").fetchone()
            snap_id = str(row[0]) if row else ""
            size_row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            loc = conn.execute(
                """SELECT pg_encoding_to_char(encoding), datcollate, datctype,
                          (SELECT rolname FROM pg_roles WHERE oid = 10)
                   FROM pg_database WHERE datname = current_database()"""
            ).fetchone() or ("", "", "", "")
            yield Snapshot(
                snapshot_id=snap_id,
                server_version=server_version(conn),
                database_bytes=int(size_row[0]) if size_row else 0,
                encoding=str(loc[0]), lc_collate=str(loc[1]), lc_ctype=str(loc[2]),
                bootstrap_role=str(loc[3]),
            )


def database_exists(db: PostgresDatabase, name: str) -> bool:
    """Tell whether database ``name`` exists on the block's server."""
    with connect(db, "postgres") as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def user_table_count(db: PostgresDatabase, name: str) -> int:
    """Number of user tables in database ``name`` (0 = empty)."""
    with connect(db, name) as conn:
        row = conn.execute(
            """SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
               AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg\\_%%'""",
            (list(_SYSTEM_SCHEMAS),),
        ).fetchone()
    return int(row[0]) if row else 0


def create_database(
    db: PostgresDatabase, name: str, *, encoding: str | None = None,
    lc_collate: str | None = None, lc_ctype: str | None = None,
) -> None:
    """CREATE DATABASE ``name`` from template0, with the source's encoding and locale if given.

    Args:
        db: the server block.
        name: the new database.
        encoding: e.g. ``LATIN1`` (server default when None).
        lc_collate: LC_COLLATE (server default when None).
        lc_ctype: LC_CTYPE (server default when None).
    """
    query = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
    for option, value in (("ENCODING", encoding), ("LC_COLLATE", lc_collate),
                          ("LC_CTYPE", lc_ctype)):
        if value:
            query += sql.SQL(" {} {}").format(sql.SQL(option), sql.Literal(value))
    with connect(db, "postgres", autocommit=True) as conn:
        conn.execute(query)
    logger.info("created database %s", name)


def drop_database(db: PostgresDatabase, name: str) -> None:
    """DROP DATABASE IF EXISTS ``name`` WITH (FORCE) (disconnects its sessions)."""
    with connect(db, "postgres", autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
    logger.info("dropped database %s", name)
