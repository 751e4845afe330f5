"""Database-level state a restore into a new cluster must replay: owner, settings, grants.

``pg_dumpall --globals-only`` carries roles, and a ``pg_restore`` into a database created
by the restore carries what is inside it; neither gives the restored database its owner,
its ``ALTER DATABASE ... SET`` settings, the ``ALTER ROLE ... IN DATABASE ... SET``
settings or the GRANTs on the database itself (pg_restore applies those only with
``--create``, which restores under the source's name: no staging copy, no swap).

They are read at backup time and stored as their own encrypted object beside the dump
(``database.json.zst.gpg``, checksummed in the manifest), not in the manifest: settings
can hold secrets (PostgREST, for one, keeps its JWT secret in ``ALTER DATABASE ... SET``)
and the manifest is stored in clear. On restore they are replayed after the swap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from psycopg import sql
from pydantic import BaseModel, Field

from blocks.gpg import GpgDecryptionKey, Keyring
from blocks.postgres import PostgresDatabase
from errors import ExternalSystemError, IntegrityError, RecoveryError
from tasks.logs import ModuleLogger
from tasks.recovery.fetching import fetched_object
from tasks.recovery.manifest import Manifest
from tasks.recovery.postgres import connect, pg_errors

logger = ModuleLogger(__name__)  # run logger inside a run: lines reach the UI

# Settings whose value is a list of names (PostgreSQL's GUC_LIST_QUOTE; pg_dump's
# variable_is_guc_list_quote): each element is its own literal, or the list becomes one name.
LIST_SETTINGS = frozenset({
    "local_preload_libraries", "search_path", "session_preload_libraries",
    "shared_preload_libraries", "temp_tablespaces", "unix_socket_directories",
})


class DatabaseGrant(BaseModel):
    """One privilege on the database (from ``aclexplode``)."""

    grantee: str | None = Field(description="role name; None for PUBLIC")
    privilege: Literal["CONNECT", "CREATE", "TEMPORARY"]
    grantable: bool = False


class DatabaseState(BaseModel):
    """The source database's own properties, as read at backup time."""

    database: str
    owner: str
    settings: list[str] = Field(
        default_factory=list, description="ALTER DATABASE SET, as stored: 'name=value'")
    role_settings: dict[str, list[str]] = Field(
        default_factory=dict, description="ALTER ROLE r IN DATABASE SET, by role")
    grants: list[DatabaseGrant] = Field(
        default_factory=list, description="the whole ACL (a default ACL made explicit)")


def read_database_state(db: PostgresDatabase) -> DatabaseState:
    """Read the owner, settings, per-role settings and ACL of the block's database.

    Args:
        db: the database block.

    Returns:
        The state.
    """
    with connect(db) as conn:
        row = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ).fetchone()
        settings = conn.execute(
            """SELECT r.rolname, s.setconfig FROM pg_db_role_setting s
               JOIN pg_database d ON d.oid = s.setdatabase
               LEFT JOIN pg_roles r ON r.oid = s.setrole
               WHERE d.datname = current_database() ORDER BY 1 NULLS FIRST"""
        ).fetchall()
        grants = conn.execute(
            """SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END,
                      a.privilege_type, a.is_grantable
               FROM pg_database d,
                    aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
               WHERE d.datname = current_database() ORDER BY 1 NULLS FIRST, 2"""
        ).fetchall()
    state = DatabaseState(database=db.dbname, owner=str(row[0]) if row else "")
    for role, config in settings:
        if role is None:
            state.settings = list(config or [])
        else:
            state.role_settings[str(role)] = list(config or [])
    state.grants = [DatabaseGrant(grantee=g, privilege=p, grantable=bool(o))
                    for g, p, o in grants]
    return state


def split_list_setting(value: str) -> list[str]:
    """Split a list setting as stored (``app, "My Schema"``) into its names.

    Names are separated by commas; a double-quoted name keeps its case, spaces and commas
    (``""`` is a quote); whitespace around names is dropped (PostgreSQL's SplitGUCList).

    Args:
        value: the stored value.

    Returns:
        The names.
    """
    names: list[str] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i].isspace():
            i += 1
        if i >= n:
            break
        if value[i] == '"':
            name, i = [], i + 1
            while i < n and not (value[i] == '"' and not value.startswith('""', i)):
                name.append(value[i])
                i += 2 if value.startswith('""', i) else 1
            i += 1
            names.append("".join(name))
        else:
            start = i
            while i < n and value[i] != "," and not value[i].isspace():
                i += 1
            names.append(value[start:i])
        while i < n and value[i] != ",":
            i += 1
        i += 1
    return names


def set_clause(item: str) -> tuple[str, sql.Composed]:
    """``SET name TO value`` for a stored ``name=value`` (list settings element by element).

    Args:
        item: one entry of ``pg_db_role_setting.setconfig``.

    Returns:
        (the setting's name, the clause). The value is a literal: never log the clause.
    """
    name, _, value = item.partition("=")
    parts = (split_list_setting(value) or [""]) if name.lower() in LIST_SETTINGS else [value]
    values = sql.SQL(", ").join(sql.Literal(p) for p in parts)
    return name, sql.SQL("SET {} TO {}").format(sql.Identifier(name), values)


@dataclass
class Replay:
    """What to run on the restored database, each statement described without its values."""

    statements: list[tuple[str, sql.Composed]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def plan_replay(
    state: DatabaseState, target: str, *, roles: set[str], no_owner: bool
) -> Replay:
    """Decide the statements that give ``target`` the source database's state.

    Roles missing on the target cluster are skipped (named in the notes), as is the owner
    in no-owner mode. The ACL is replaced: ``REVOKE ALL`` from PUBLIC and the owner, then
    every recorded privilege granted again (a default ACL was recorded explicitly).

    Args:
        state: the recorded state.
        target: the restored database's name.
        roles: role names of the target cluster.
        no_owner: owner_mode no-owner (the restoring role keeps ownership).

    Returns:
        The plan.
    """
    plan, db = Replay(), sql.Identifier(target)
    owner_set = False
    if no_owner:
        plan.notes.append(f"owner {state.owner} not set (owner_mode no-owner)")
    elif state.owner not in roles:
        plan.notes.append(f"owner {state.owner} not set (no such role on this cluster)")
    else:
        owner_set = True
        plan.statements.append((f"owner {state.owner}", sql.SQL(
            "ALTER DATABASE {} OWNER TO {}").format(db, sql.Identifier(state.owner))))
    for item in state.settings:
        name, clause = set_clause(item)
        plan.statements.append((f"setting {name}", sql.SQL("ALTER DATABASE {} ").format(db)
                                + clause))
    for role, items in sorted(state.role_settings.items()):
        if role not in roles:
            plan.notes.append(f"settings of role {role} not set (no such role)")
            continue
        for item in items:
            name, clause = set_clause(item)
            plan.statements.append((f"setting {name} of role {role}", sql.SQL(
                "ALTER ROLE {} IN DATABASE {} ").format(sql.Identifier(role), db) + clause))
    revoke_from: list[sql.Composable] = [sql.SQL("PUBLIC")]
    if owner_set:
        revoke_from.append(sql.Identifier(state.owner))
    plan.statements.append(("grants reset", sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(
        db, sql.SQL(", ").join(revoke_from))))
    for g in state.grants:
        if g.grantee is not None and g.grantee not in roles:
            plan.notes.append(f"{g.privilege} of role {g.grantee} not granted (no such role)")
            continue
        who = sql.SQL("PUBLIC") if g.grantee is None else sql.Identifier(g.grantee)
        option = sql.SQL(" WITH GRANT OPTION" if g.grantable else "")
        plan.statements.append((f"{g.privilege} to {g.grantee or 'PUBLIC'}", sql.SQL(
            "GRANT {} ON DATABASE {} TO {}{}").format(sql.SQL(g.privilege), db, who, option)))
    return plan


def fetch_database_state(
    client: Any, bucket: str, manifest: Manifest, *, decryption: GpgDecryptionKey,
    keyring: Keyring,
) -> DatabaseState | None:
    """Download, verify and decrypt a backup's database state (None when not recorded).

    Args:
        client: boto3 S3 client.
        bucket: the bucket.
        manifest: the backup's manifest.
        decryption: the private key block.
        keyring: its imported keyring.

    Returns:
        The state, or None for backups made before it was recorded.

    Raises:
        IntegrityError: the object differs from the manifest or is not a state document.
    """
    ref = manifest.database_state
    if ref is None:
        return None
    with fetched_object(
        client, bucket=bucket, backup_id=manifest.backup_id, key=ref.key,
        size_bytes=ref.size_bytes, sha256=ref.sha256, decryption=decryption, keyring=keyring,
        name="database.json",
    ) as path:
        try:
            return DatabaseState.model_validate_json(path.read_bytes())
        except ValueError:
            raise IntegrityError(
                f"backup {manifest.backup_id}: {ref.key} is not a database state document",
                hint="restore another backup, or this one with the state set by hand",
            ) from None


def replay_database_state(
    db: PostgresDatabase, target: str, state: DatabaseState | None, *, no_owner: bool,
    final_name: str | None = None,
) -> str:
    """Give the restored database ``target`` the recorded owner, settings and grants.

    Every statement is tried; the ones that fail are named (never with their values) in
    one error raised at the end, so a bad setting does not keep the grants from being set.

    Args:
        db: the server block.
        target: the restored database: its staging copy, before the swap (owner, settings
            and grants follow a database through a rename, so it is never visible under its
            final name with default privileges).
        final_name: the name the database will have, for the messages (default ``target``).
        state: the recorded state (None: the backup predates it; nothing is done).
        no_owner: owner_mode no-owner.

    Returns:
        A sentence for the report.

    Raises:
        RecoveryError: naming every statement that failed.
    """
    if state is None:
        return "database owner, settings and grants not recorded (the backup predates them)"
    with connect(db, "postgres", autocommit=True) as conn:
        roles = {str(r[0]) for r in conn.execute("SELECT rolname FROM pg_roles")}
        plan = plan_replay(state, target, roles=roles, no_owner=no_owner)
        failed: list[str] = []
        for what, statement in plan.statements:
            try:
                with pg_errors(db, "postgres"):
                    conn.execute(statement)
            except ExternalSystemError:
                failed.append(what)
    done = len(plan.statements) - len(failed)
    note = (f"database state replayed: owner {state.owner if not no_owner else 'unchanged'}, "
            f"{len(state.settings)} settings, "
            f"{sum(len(v) for v in state.role_settings.values())} role settings, "
            f"{len(state.grants)} privileges ({done} statements)")
    if plan.notes:
        note += "; " + "; ".join(plan.notes)
    logger.info("%s: %s", target, note)
    if failed:
        name = final_name or target
        raise RecoveryError(
            f"database {name} was restored, but its recorded state could not be fully "
            "replayed: " + ", ".join(failed),
            hint=f"{name} is in place; set those by hand (docs/recovery.md, DR procedure)",
        )
    return note
