"""`veza-ops backups info`: the operators' view of both backup tiers (like pgBackRest's ``info``).

Logical tier, per database: oldest and newest complete backup, count, size, current RPO,
multipart uploads in progress, objects without a manifest, and what the next prune would keep
or delete, read through the ``S3BackupStore`` block (default ``veza-backups``). PITR tier
(pgBackRest, when its ``PgBackRestRepository`` block exists, default ``veza-pitr``): backups,
PITR window, newest archived WAL and the RPO it gives. Blocks come from the Prefect API that
PREFECT_API_URL points at; it writes nothing.

Exit codes: 0 the summary was printed; 2 a usage, block or S3 error (one line on stderr), or
the PITR tier could not be read (the rest is printed, the PITR section says why).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TextIO

from veza_ops.blocks_setup import PITR_BLOCK_NAME, RecoveryBlockNames

if TYPE_CHECKING:
    from tasks.recovery.info import DatabaseInfo, StoreInfo
    from tasks.recovery.pitr.tier import PitrTier

EXIT_OK = 0
EXIT_ERROR = 2
DEFAULT_STORE_BLOCK = RecoveryBlockNames().store_block  # the name prefect.yaml uses
DEFAULT_PITR_BLOCK = PITR_BLOCK_NAME


def add_backups_command(subparsers: Any) -> None:
    """Register ``veza-ops backups info`` on an argparse subparsers object.

    Args:
        subparsers: the object returned by ``add_subparsers``.
    """
    p = subparsers.add_parser("backups", help="look at the backup store")
    sub = p.add_subparsers(dest="backups_command", required=True)
    info = sub.add_parser(
        "info",
        help="per database: complete backups, size, RPO, incomplete uploads, objects without "
        "a manifest, and what the next prune would delete",
    )
    info.add_argument("--database", default=None, help="only this database")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.add_argument(
        "--store-block", default=DEFAULT_STORE_BLOCK,
        help=f"name of the S3BackupStore block (default {DEFAULT_STORE_BLOCK})",
    )
    info.add_argument(
        "--pitr-block", default=DEFAULT_PITR_BLOCK,
        help=f"name of the PgBackRestRepository block (default {DEFAULT_PITR_BLOCK}; the PITR "
        "section says when it does not exist); needs pgbackrest on this machine",
    )
    info.add_argument("--no-pitr", action="store_true", help="leave the PITR tier out")
    info.add_argument(
        "--rpo-objective-hours", type=float, default=1.0, help="RPO objective (guide: 1 h)"
    )
    for name, default, what in (
        ("daily", 30, "daily fulls kept"),
        ("weekly", 12, "weekly fulls kept"),
        ("monthly", 24, "monthly fulls kept"),
        ("hourly-hours", 48, "hours hourlies are kept"),
        ("max-full-age-h", 48, "newest full older than this freezes the prune"),
    ):
        info.add_argument(
            f"--{name}", type=int, default=default,
            help=f"retention as the prune runs it: {what} (default {default})",
        )
    info.add_argument(
        "--delete-incomplete", action="store_true",
        help="plan as a prune run with delete_incomplete=true",
    )


def _size(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{value} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"  # pragma: no cover - loop always returns


def _age(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 0:
        return f"{-minutes} min in the future"
    if minutes < 60:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours // 24} d {hours % 24} h" if hours >= 24 else f"{hours} h {minutes % 60} min"


def render_database(info: DatabaseInfo, *, now: Any) -> list[str]:
    """One database's section of the human-readable output.

    Args:
        info: the summary.
        now: the time the summary was taken (for ages).

    Returns:
        The lines.
    """
    lines = [f"database {info.database}"]
    rows: list[tuple[str, str]] = [
        ("backups", f"{info.complete} complete of {info.backups} listed"),
        ("total size", f"{_size(info.total_bytes)} (complete backups' data objects)"),
        ("oldest complete", f"{info.oldest.backup_id}" if info.oldest else "none"),
        ("newest complete", f"{info.newest.backup_id}" if info.newest else "none"),
    ]
    if info.rpo is None:
        rows.append(("RPO", "no complete backup: NOT MET"))
    else:
        verdict = "met" if info.rpo_met else "NOT MET"
        objective = _age(info.rpo_objective)
        rows.append(("RPO", f"{_age(info.rpo)} (objective {objective}: {verdict})"))
    rows.append(("incomplete uploads", str(len(info.uploads))))
    rows.append(("without manifest", f"{len(info.orphans)} ({_size(info.incomplete_bytes)})"))
    rows.append(("legacy archives", f"{len(info.legacy)} (made before veza-ops, no checksum)"))
    keep = len(info.decisions) - len(info.to_delete)
    rows.append(("next prune", f"keep {keep}, delete {len(info.to_delete)}"))
    width = max(len(k) for k, _ in rows)
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    for upload in info.uploads:
        lines.append(
            f"  upload in progress: {upload.key} (started {_age(now - upload.initiated)} ago)"
        )
    for record in info.orphans:
        lines.append(f"  without manifest: {record.backup_id} ({record.missing})")
    for record in info.legacy:
        lines.append(f"  legacy: {record.backup_id} {record.data_key} "
                     f"({_size(record.data_size or 0)}, no checksum)")
    if info.frozen:
        lines.append(f"  prune {'FAILS' if info.alarm else 'frozen'}: {info.frozen}")
    for decision in info.to_delete:
        lines.append(
            f"  prune would delete {decision.record.backup_id}: {'; '.join(decision.reasons)}"
        )
    return lines


def render_pitr(tier: PitrTier | None, note: str, *, now: Any) -> list[str]:
    """The PITR section of the human-readable output.

    Args:
        tier: the PITR tier, or None when it could not be (or was not) read.
        note: why there is no tier.
        now: the time of the look.

    Returns:
        The lines.
    """
    if tier is None:
        return [f"pitr (pgBackRest): {note}"]
    types = ", ".join(f"{sum(b.type == t for b in tier.backups)} {t}"
                      for t in ("full", "diff", "incr"))
    rows: list[tuple[str, str]] = [
        ("backups", f"{len(tier.backups)} ({types}), {_size(tier.stored_bytes)} stored"),
        ("oldest", tier.backups[0].label if tier.backups else "none"),
        ("newest", tier.backups[-1].label if tier.backups else "none"),
    ]
    if tier.window is None:
        rows.append(("PITR window", "none: no backup, nothing can be restored"))
    else:
        rows.append(("PITR window", f"{tier.window.start:%Y-%m-%d %H:%M:%S} UTC to "
                     f"{tier.window.end:%Y-%m-%d %H:%M:%S} UTC"))
    arrived = (f" (archived {_age(now - tier.newest_archived_at)} ago)"
               if tier.newest_archived_at else "")
    rows.append(("newest WAL", f"{tier.newest_wal or 'none'}{arrived}"))
    if tier.rpo is None:
        rows.append(("RPO", "no archived WAL: NOT MET"))
    else:
        verdict = "met" if tier.rpo_met else "NOT MET"
        rows.append(("RPO", f"{tier.rpo.total_seconds():.0f} s (objective "
                     f"{_age(tier.rpo_objective)}: {verdict})"))
    rows.append(("retention", tier.retention))
    width = max(len(k) for k, _ in rows)
    return ([f"pitr (pgBackRest) stanza {tier.stanza} in {tier.location}"]
            + [f"  {k.ljust(width)}  {v}" for k, v in rows])


def render(info: StoreInfo) -> str:
    """The human-readable summary of the store.

    Args:
        info: the summary.

    Returns:
        Text: a heading, then one section per database.
    """
    where = f"s3://{info.bucket}/{info.prefix.strip('/')}".rstrip("/")
    lines = [f"backups in {where} at {info.now:%Y-%m-%d %H:%M:%S} UTC"]
    if not info.databases:
        lines.append("no backups found")
    for database in info.databases:
        lines.append("")
        lines += render_database(database, now=info.now)
    return "\n".join(lines) + "\n"


def run_backups_command(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Execute ``veza-ops backups info`` from parsed arguments.

    Args:
        args: parsed arguments.
        out: where the summary goes (default stdout); errors go to stderr.

    Returns:
        The process exit code.
    """
    from blocks.loading import load_block
    from blocks.s3 import S3BackupStore
    from errors import VezaOpsError
    from errors.http import translate_http_errors
    from tasks.recovery.info import store_dict, store_info
    from tasks.recovery.retention import RetentionPolicy

    out = out or sys.stdout
    try:
        if args.rpo_objective_hours <= 0:
            raise VezaOpsError(
                "--rpo-objective-hours: must be positive", hint="pass e.g. 1 (the guide's RPO)"
            )
        policy = RetentionPolicy(
            daily=args.daily, weekly=args.weekly, monthly=args.monthly,
            hourly_hours=args.hourly_hours, max_full_age_h=args.max_full_age_h,
            delete_incomplete=args.delete_incomplete,
        )
        with translate_http_errors(
            system="Prefect API", action=f"load block {args.store_block!r}",
            hint="check PREFECT_API_URL (and PREFECT_API_KEY or PREFECT_API_AUTH_STRING)",
        ):
            store = load_block(S3BackupStore, args.store_block, field="--store-block")
        info = store_info(
            store.get_client(), store.bucket, store.prefix,
            database=args.database, policy=policy,
            rpo_objective=timedelta(hours=args.rpo_objective_hours),
        )
    except VezaOpsError as exc:
        print(f"veza-ops backups info: {_cli_message(exc)}", file=sys.stderr)
        return EXIT_ERROR
    tier, note = _pitr(args, info.now, timedelta(hours=args.rpo_objective_hours))
    if args.json:
        doc = store_dict(info)
        if not args.no_pitr:
            from tasks.recovery.pitr.tier import tier_dict

            doc["pitr"] = tier_dict(tier) if tier else {"error": note}
        json.dump(doc, out, indent=2)
        out.write("\n")
    else:
        out.write(render(info))
        if not args.no_pitr:
            out.write("\n" + "\n".join(render_pitr(tier, note, now=info.now)) + "\n")
    if tier is None and note.startswith("ERROR"):
        print(f"veza-ops backups info: PITR tier: {note}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _pitr(args: argparse.Namespace, now: Any, objective: timedelta) -> tuple[PitrTier | None, str]:
    """Read the PITR tier; a missing block is a note, any other failure an ``ERROR`` note."""
    from blocks.loading import load_block
    from blocks.pgbackrest import DatabaseHost, PgBackRestRepository
    from errors import BlockNotFoundError, VezaOpsError
    from tasks.recovery.pitr.tier import pitr_tier

    if args.no_pitr:
        return None, "left out (--no-pitr)"
    try:
        repo = load_block(PgBackRestRepository, args.pitr_block, field="--pitr-block")
    except BlockNotFoundError:
        return None, (f"not set up (no PgBackRestRepository block {args.pitr_block!r}; "
                      "docs/recovery.md, section 6)")
    try:
        return pitr_tier(repo, DatabaseHost(), now=now, rpo_objective=objective), ""
    except VezaOpsError as exc:
        return None, f"ERROR: {_cli_message(exc)}"


def _cli_message(exc: Exception) -> str:
    """The error in one line; a bad input is named by the option that sets it."""
    from errors import InvalidInputError

    if isinstance(exc, InvalidInputError) and not exc.field.startswith("--"):
        return f"--{exc.field.replace('_', '-')}: {exc.problem} -- {exc.fix}"
    return str(exc)
