"""`veza-ops backups info`: the operators' view of the backup store (like pgBackRest's ``info``).

Per database: oldest and newest complete backup, count, size, current RPO, multipart uploads
in progress, objects without a manifest, and what the next prune would keep or delete. It
reads the store through the ``S3BackupStore`` block (default ``veza-backups``, the name
``prefect.yaml`` uses) from the Prefect API that PREFECT_API_URL points at; it writes nothing.

Exit codes: 0 the summary was printed; 2 a usage, block or S3 error (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TextIO

from veza_ops.blocks_setup import RecoveryBlockNames

if TYPE_CHECKING:
    from tasks.recovery.info import DatabaseInfo, StoreInfo

EXIT_OK = 0
EXIT_ERROR = 2
DEFAULT_STORE_BLOCK = RecoveryBlockNames().store_block  # the name prefect.yaml uses


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
    if info.frozen:
        lines.append(f"  prune {'FAILS' if info.alarm else 'frozen'}: {info.frozen}")
    for decision in info.to_delete:
        lines.append(
            f"  prune would delete {decision.record.backup_id}: {'; '.join(decision.reasons)}"
        )
    return lines


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
    if args.json:
        json.dump(store_dict(info), out, indent=2)
        out.write("\n")
    else:
        out.write(render(info))
    return EXIT_OK


def _cli_message(exc: Exception) -> str:
    """The error in one line; a bad input is named by the option that sets it."""
    from errors import InvalidInputError

    if isinstance(exc, InvalidInputError) and not exc.field.startswith("--"):
        return f"--{exc.field.replace('_', '-')}: {exc.problem} -- {exc.fix}"
    return str(exc)
