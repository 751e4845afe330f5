"""Database names for libpq: validated as identifiers, quoted as conninfo, siblings derived."""

from __future__ import annotations

import re

from psycopg.conninfo import make_conninfo

from errors import InvalidInputError

MAX_IDENTIFIER_BYTES = 63


def check_db_identifier(field: str, value: str) -> str:
    """Refuse a database name PostgreSQL or libpq would not take literally.

    libpq expands a ``dbname`` holding ``=`` or a ``postgres(ql)://`` URI into connection
    parameters, so ``dbname=veza_db`` would reach ``veza_db``: such values are refused.

    Args:
        field: the parameter's name (for the error).
        value: the name.

    Returns:
        The name, unchanged.

    Raises:
        InvalidInputError: naming ``field`` and the fix.
    """
    problem = None
    if not value.strip():
        problem = "is empty"
    elif len(value.encode()) > MAX_IDENTIFIER_BYTES:
        problem = f"is {len(value.encode())} bytes long (PostgreSQL's limit is 63)"
    elif "\x00" in value:
        problem = "contains a NUL character"
    elif "=" in value or value.lower().startswith(("postgresql://", "postgres://")):
        problem = "looks like a connection string, not a database name"
    if problem:
        raise InvalidInputError(
            field, f"{value!r} {problem}",
            fix="give a plain database name (1-63 bytes, no '=' and no URI), e.g. veza_db",
        )
    return value


def dbname_conninfo(name: str) -> str:
    """A conninfo string naming only the database, quoted per libpq rules (never expanded).

    Args:
        name: a database name (checked with :func:`check_db_identifier`).

    Returns:
        e.g. ``dbname=veza_db`` or ``dbname='my db'``; host, port and user come from the env.
    """
    return make_conninfo(dbname=name)


def sibling_name(target: str, tag: str, backup_id: str) -> str:
    """``<target>_<tag>_<backup id>`` lower-cased and sanitised, cut to 63 bytes.

    The target part is shortened (on a character boundary) so the suffix always survives.

    Args:
        target: the database being replaced.
        tag: e.g. ``before`` or ``restoring``.
        backup_id: the backup restored.

    Returns:
        A valid identifier of at most 63 bytes.
    """
    suffix = f"_{tag}_" + re.sub(r"[^a-z0-9_]", "_", backup_id.lower())
    room = MAX_IDENTIFIER_BYTES - len(suffix.encode())
    head = target.encode()[:room].decode(errors="ignore")
    return head + suffix
