"""Recreate the roles a restore needs from a backup's globals: only missing ones, never alter."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from psycopg import sql

from blocks.postgres import PostgresDatabase
from tasks.logs import ModuleLogger
from tasks.recovery.postgres import connect

logger = ModuleLogger(__name__)  # run logger inside a run: lines reach the UI
_GRANTED_BY = re.compile(r"\s+GRANTED BY\s+.*;$", re.DOTALL)


@dataclass
class RolePlan:
    """What to run on the target cluster to recreate missing roles.

    Attributes:
        statements: SQL to run in one transaction (may hold password hashes: never log them).
        created: roles the statements create.
        existing: roles of the backup already on the target (left exactly as they are).
        skipped: statements not replayed, in words (no secret in them).
    """

    statements: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def read_identifier(text: str, pos: int) -> tuple[str, int]:
    """Read one SQL identifier (bare or double-quoted) starting at ``pos``.

    Args:
        text: the statement.
        pos: index of the identifier's first character.

    Returns:
        (the name as stored in the catalogue, index just after it).
    """
    if text.startswith('"', pos):
        name, i = [], pos + 1
        while i < len(text):
            if text[i] == '"':
                if text.startswith('""', i):
                    name.append('"')
                    i += 2
                    continue
                return "".join(name), i + 1
            name.append(text[i])
            i += 1
        raise ValueError(f"unterminated quoted identifier in {text[:40]!r}")
    match = re.compile(r"[^\s;,]+").match(text, pos)
    if match is None:
        raise ValueError(f"no identifier at {pos} in {text[:40]!r}")
    return match.group(0), match.end()


def split_statements(script: str) -> list[str]:
    """The statements of a ``pg_dumpall --globals-only`` script (comments and blanks dropped)."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        if not current and (not line.strip() or line.startswith("--")):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).strip())
            current = []
    return statements


def plan_roles(script: str, existing: set[str], skip: set[str]) -> RolePlan:
    """Decide which statements of the globals script recreate MISSING roles only.

    ``CREATE ROLE``, ``ALTER ROLE ... WITH``/``SET`` and ``COMMENT ON ROLE`` are kept only for
    roles absent from the target; a ``GRANT role TO member`` only when one side is created
    now and both will exist (its ``GRANTED BY`` dropped: the grantor may not exist).
    Per-database role settings, tablespaces and everything else are not replayed.

    Args:
        script: the decrypted ``pg_dumpall --globals-only`` output.
        existing: role names already on the target cluster.
        skip: roles never created (the source's bootstrap superuser).

    Returns:
        The plan.
    """
    plan = RolePlan()
    create = re.compile(r"CREATE ROLE\s+")
    for stmt in split_statements(script):
        if create.match(stmt):
            name, _ = read_identifier(stmt, create.match(stmt).end())  # type: ignore[union-attr]
            if name in existing:
                plan.existing.append(name)
            elif name in skip:
                plan.skipped.append(f"role {name} (the source's bootstrap superuser)")
            else:
                plan.created.append(name)
                plan.statements.append(stmt)
    created = set(plan.created)
    for stmt in split_statements(script):
        for head in ("ALTER ROLE ", "COMMENT ON ROLE "):
            if stmt.startswith(head):
                name, end = read_identifier(stmt, len(head))
                if name not in created:
                    break
                if stmt[end:].lstrip().startswith("IN DATABASE"):
                    plan.skipped.append(f"per-database settings of role {name}")
                else:
                    plan.statements.append(stmt)
        if stmt.startswith("GRANT "):
            granted, end = read_identifier(stmt, len("GRANT "))
            rest = stmt[end:].lstrip()
            if not rest.startswith("TO "):
                continue
            member, _ = read_identifier(rest, len("TO "))
            will_exist = existing | created
            if (granted in created or member in created) and {granted, member} <= will_exist:
                plan.statements.append(_GRANTED_BY.sub(";", stmt))
    return plan


def existing_roles(db: PostgresDatabase) -> set[str]:
    """Names of every role of the block's cluster."""
    with connect(db, "postgres") as conn:
        return {str(r[0]) for r in conn.execute("SELECT rolname FROM pg_roles")}


def recreate_missing_roles(db: PostgresDatabase, script: str, bootstrap_role: str) -> RolePlan:
    """Create the backup's roles missing from the block's cluster, in one transaction.

    Existing roles are never altered; the statements are never logged (with the operator's
    opt-in they carry password hashes). Needs CREATEROLE (or superuser) on the target.

    Args:
        db: the target server.
        script: the decrypted globals script.
        bootstrap_role: the source's bootstrap superuser (never recreated).

    Returns:
        The plan that was applied.
    """
    plan = plan_roles(script, existing_roles(db), {bootstrap_role})
    if plan.statements:
        with connect(db, "postgres") as conn, conn.transaction():
            for stmt in plan.statements:
                conn.execute(sql.SQL(stmt))
    logger.info(
        "roles: created %s; already present %s",
        ", ".join(plan.created) or "none", ", ".join(plan.existing) or "none",
    )
    return plan
