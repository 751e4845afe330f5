"""The demo's PITR tier: its PostgreSQL archives WAL through pgBackRest into the sandbox's S3.

The demo's one database cluster is set up as an operator sets up a host (docs/recovery.md,
section 6): pgBackRest's config rendered from the ``veza-pitr`` block
(:func:`blocks.pgbackrest.render_config`, mode 0600, owned by the cluster's OS user) and the
``archive_mode``/``archive_command`` of :func:`blocks.pgbackrest.postgresql_settings`, with a
short ``archive_timeout`` so the RPO stays under a minute on a quiet demo database. The
PITR deployments are pointed at that cluster (their ``host`` parameter), so their schedules
run for real instead of staying paused. The sandbox is imported lazily (its own distribution).
"""

from __future__ import annotations

import argparse
import getpass
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from blocks.pgbackrest import DatabaseHost, PgBackRestRepository

ARCHIVE_TIMEOUT_S = 30  # a quiet demo database still closes a WAL segment every 30 s
PITR_ENTRYPOINTS = ("flows/pitr.py:", "flows/pitr_check.py:", "flows/pitr_restore_test.py:",
                    "flows/restore.py:pitr_restore_flow")


@dataclass(frozen=True)
class ArchivingSetup:
    """A database cluster's paths and settings before it starts (pgBackRest config written)."""

    root: Path
    host: DatabaseHost
    repo: PgBackRestRepository
    settings: dict[str, str]
    superuser: str


def _give(path: Path, ids: tuple[int, int] | None) -> None:
    if ids:
        os.chown(path, *ids)


def prepare_archiving(repo: PgBackRestRepository, *, port: int,
                      archive_timeout_s: int = ARCHIVE_TIMEOUT_S) -> ArchivingSetup:
    """Lay out a cluster directory with pgBackRest's installed config, ready for ``initdb``.

    Under root the cluster runs as the ``postgres`` OS user (PostgreSQL refuses root), so the
    directory, the config, the CA file and pgBackRest's log/lock/spool paths are that user's;
    pgBackRest logs in through the socket by ``peer`` as the superuser of the same name.

    Args:
        repo: the repository block (its ``ca_file`` must be readable by the cluster's OS
            user: a copy goes into the directory and the returned block names it).
        port: the port the cluster will listen on.
        archive_timeout_s: PostgreSQL's ``archive_timeout`` (the RPO of a quiet database).

    Returns:
        The setup: pass ``root``, ``settings`` and ``superuser`` to ``start_postgres``.
    """
    from blocks.pgbackrest import DatabaseHost, postgresql_settings, render_config
    from sandbox.launchers.postgres import pg_bindir, server_owner_ids

    ids = server_owner_ids()
    root = Path(tempfile.mkdtemp(prefix="veza-demo-pg-"))
    _give(root, ids)
    etc = root / "pgbackrest"
    for path in (etc, etc / "log", etc / "lock", etc / "spool"):
        path.mkdir(mode=0o700)
        _give(path, ids)
    if repo.ca_file:
        ca_file = etc / "ca.pem"
        shutil.copyfile(repo.ca_file, ca_file)
        ca_file.chmod(0o644)
        repo = repo.model_copy(update={"ca_file": str(ca_file)})
    superuser = "postgres" if ids else getpass.getuser()
    host = DatabaseHost(
        data_directory=str(root / "data"), port=port, socket_dir=str(root / "sock"),
        user=superuser, os_user="postgres" if ids else None,
        config_path=str(etc / "pgbackrest.conf"), log_path=str(etc / "log"),
        lock_path=str(etc / "lock"), spool_path=str(etc / "spool"), pg_bin_dir=str(pg_bindir()),
    )
    fd = os.open(host.config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(render_config(repo, host))
    _give(Path(host.config_path), ids)
    settings = postgresql_settings(repo, host)
    settings.pop("restore_command")  # a restored cluster gets its own (tasks/recovery/pitr)
    settings["archive_timeout"] = str(archive_timeout_s)
    return ArchivingSetup(root=root, host=host, repo=repo, settings=settings,
                          superuser=superuser)


def point_pitr_deployments(host: DatabaseHost, *,
                           check_database_block: str | None = None) -> list[str]:
    """Give every PITR deployment the demo cluster's ``host`` and make sure none is paused.

    An idle database writes no WAL, so ``archive_timeout`` switches nothing and the newest
    archived segment just ages: pitr-check would report a growing RPO (and fail past its
    threshold) while nothing is at risk. With ``check_database_block`` each pitr-check run
    commits a marker row first (the PITR restore test checks those too), which keeps WAL
    flowing on the quiet demo database.

    Args:
        host: the demo cluster's paths (the deployments' default is Debian's).
        check_database_block: the PostgresDatabase block pitr-check writes its marker into.

    Returns:
        ``flow/deployment`` names updated (current Prefect settings' server).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate

    names: list[str] = []
    with get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows(limit=200)}
        for deployment in client.read_deployments(limit=200):
            entrypoint = deployment.entrypoint or ""
            if not entrypoint.startswith(PITR_ENTRYPOINTS):
                continue
            parameters = {**deployment.parameters, "host": host.model_dump(mode="json")}
            if check_database_block and entrypoint.startswith("flows/pitr_check.py:"):
                parameters["database_block"] = check_database_block
            client.update_deployment(deployment.id, DeploymentUpdate(parameters=parameters))
            if deployment.paused:
                client.resume_deployment(deployment.id)
            names.append(f"{flows.get(deployment.flow_id, '?')}/{deployment.name}")
    return sorted(names)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def rpo_lines(doc: dict[str, Any]) -> list[str]:
    """The demo's RPO summary from ``veza-ops backups info --json`` (pure).

    Args:
        doc: the JSON document (``databases`` and ``pitr``).

    Returns:
        One line for the PITR tier (seconds, from the live WAL archive) and one per
        database of the logical tier.
    """
    pitr = doc.get("pitr") or {}
    if pitr.get("rpo_seconds") is not None:
        met = "met" if pitr.get("rpo_met") else "NOT MET"
        lines = [f"RPO (PITR, live WAL archive): {pitr['rpo_seconds']:.0f} s "
                 f"(newest WAL {pitr.get('newest_wal')}; objective "
                 f"{_age(pitr['rpo_objective_seconds'])}: {met})"]
    else:
        lines = [f"RPO (PITR, live WAL archive): none ({pitr.get('error') or 'no archived WAL'})"]
    for database in doc.get("databases") or []:
        if database.get("rpo_seconds") is None:
            lines.append(f"RPO (logical backups of {database['database']}): no complete backup")
            continue
        met = "met" if database.get("rpo_met") else "NOT MET"
        lines.append(f"RPO (logical backups of {database['database']}): "
                     f"{_age(database['rpo_seconds'])} ({database['complete']} complete; "
                     f"objective {_age(database['rpo_objective_seconds'])}: {met})")
    return lines


def backups_info(json_output: bool) -> tuple[int, str]:
    """Run ``veza-ops backups info`` (both tiers) in this process, on the current server.

    Args:
        json_output: ``--json``.

    Returns:
        (exit code, what it printed on stdout).
    """
    from veza_ops.backups import add_backups_command, run_backups_command

    parser = argparse.ArgumentParser()
    add_backups_command(parser.add_subparsers())
    args = parser.parse_args(["backups", "info", *(["--json"] if json_output else [])])
    text = io.StringIO()
    code = run_backups_command(args, out=text)
    return code, text.getvalue()


def print_backups(out: TextIO) -> bool:
    """Print ``veza-ops backups info`` and the RPO of both tiers (current Prefect settings).

    Args:
        out: where it goes.

    Returns:
        Whether both tiers could be read and the PITR tier has an RPO.
    """
    code, text = backups_info(json_output=False)
    print(f"\n-- veza-ops backups info --\n{text.rstrip()}", file=out)
    json_code, doc_text = backups_info(json_output=True)
    doc = json.loads(doc_text) if json_code == 0 and doc_text.strip() else {}
    lines = rpo_lines(doc)
    print("\n" + "\n".join(lines), file=out)
    return code == 0 and json_code == 0 and (doc.get("pitr") or {}).get("rpo_seconds") is not None
