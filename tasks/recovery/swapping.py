"""Swap a restored database in under the target's name; the old one is kept aside, renamed."""

from __future__ import annotations

from psycopg import sql

from blocks.postgres import PostgresDatabase
from tasks.logs import ModuleLogger
from tasks.recovery.postgres import connect

logger = ModuleLogger(__name__)  # run logger inside a run: lines reach the UI
TERMINATE_WAIT_MS = 10_000


def swap_databases(db: PostgresDatabase, target: str, restored: str, keep_as: str) -> None:
    """Rename ``target`` to ``keep_as`` and ``restored`` to ``target``, in one transaction.

    New connections to ``target`` are refused first (ALLOW_CONNECTIONS false) and its
    sessions terminated (waiting for them to end); both renames then commit together, so
    the name never points at nothing. On failure ``target`` accepts connections again.

    Args:
        db: the server block.
        target: the database being replaced (must exist).
        restored: the restored, verified database.
        keep_as: the old database's new name (must not exist).
    """
    t, r, k = sql.Identifier(target), sql.Identifier(restored), sql.Identifier(keep_as)
    with connect(db, "postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(t))
        try:
            conn.execute(
                """SELECT pg_terminate_backend(pid, %s) FROM pg_stat_activity
                   WHERE datname = %s AND pid <> pg_backend_pid()""",
                (TERMINATE_WAIT_MS, target),
            )
            with conn.transaction():
                conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(t, k))
                conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(k))
                conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(r, t))
        except BaseException:
            conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(t))
            raise
    logger.info("database %s replaced by the restored copy; the old one is now %s",
                target, keep_as)


def rename_database(db: PostgresDatabase, old: str, new: str) -> None:
    """ALTER DATABASE ``old`` RENAME TO ``new`` (``old`` must have no session)."""
    with connect(db, "postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
            sql.Identifier(old), sql.Identifier(new)))
