"""Grandfather-father-son retention: which backups to keep and why (pure, no I/O, time injected)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from errors import InvalidInputError
from tasks.recovery.catalogue import BackupRecord, newest_first


@dataclass(frozen=True)
class RetentionPolicy:
    """How many backups of each class to keep; the guide's numbers are the defaults.

    Attributes:
        daily: keep the newest complete full backup of each of the last N days (UTC).
        weekly: keep the newest complete full backup of each of the last N ISO weeks.
        monthly: keep the newest complete full backup of each of the last N months.
        hourly_hours: keep hourly backups younger than this many hours.
        incomplete_grace_hours: never touch an incomplete backup younger than this (it may
            still be uploading).
        delete_incomplete: delete incomplete backups (no manifest or no data) older than the
            grace period. Off by default: the mission says prune never deletes anything whose
            manifest is missing; an operator turns it on to clear known debris.
        max_full_age_h: while the newest complete full backup of a database is older than
            this many hours (or there is none), nothing of that database is deleted and the
            prune fails loudly: fulls have stopped. 0 turns the check off.
    """

    daily: int = 30
    weekly: int = 12
    monthly: int = 24
    hourly_hours: int = 48
    incomplete_grace_hours: int = 24
    delete_incomplete: bool = False
    max_full_age_h: int = 48

    def __post_init__(self) -> None:
        """Reject values that make no sense before anything is planned.

        Raises:
            InvalidInputError: naming the first field that is negative or not an integer.
        """
        for name in (
            "daily", "weekly", "monthly", "hourly_hours", "incomplete_grace_hours",
            "max_full_age_h",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInputError(
                    name, f"must be a whole number, got {value!r}", fix=f"pass {name} as an integer"
                )
            if value < 0:
                raise InvalidInputError(
                    name,
                    f"must not be negative, got {value}",
                    fix=f"pass {name} >= 0 (0 keeps none of that class)",
                )


@dataclass(frozen=True)
class Decision:
    """What retention decided for one backup, and every reason behind it.

    ``alarm`` is set on every decision of a database frozen because its fulls stopped: the
    prune must then fail loudly (see :func:`alarms`).
    """

    record: BackupRecord
    keep: bool
    reasons: list[str] = field(default_factory=list)
    alarm: bool = False


def _day_label(day: date) -> str:
    return day.isoformat()


def _week_label(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def _month_label(day: date) -> str:
    return f"{day.year}-{day.month:02d}"


def _kept_periods(policy: RetentionPolicy, today: date) -> list[tuple[str, str, set[str]]]:
    """Labels of the periods (days, ISO weeks, months) whose newest full backup is kept."""
    days = {_day_label(today - timedelta(days=i)) for i in range(policy.daily)}
    monday = today - timedelta(days=today.weekday())
    weeks = {_week_label(monday - timedelta(weeks=i)) for i in range(policy.weekly)}
    index = today.year * 12 + today.month - 1
    months = set()
    for i in range(policy.monthly):
        year, month0 = divmod(index - i, 12)
        months.add(f"{year}-{month0 + 1:02d}")
    return [
        ("daily", "day", days),
        ("weekly", "week", weeks),
        ("monthly", "month", months),
    ]


_LABELLERS = {"day": _day_label, "week": _week_label, "month": _month_label}


def _age(delta: timedelta) -> str:
    minutes = int(abs(delta).total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours // 24} d {hours % 24} h" if hours >= 24 else f"{hours} h"


def _freeze(
    ordered: list[BackupRecord], policy: RetentionPolicy, now: datetime
) -> tuple[str, bool] | None:
    """Why nothing of this database may be deleted (and whether to alarm), or None."""
    newest = ordered[0]
    if not newest.complete and newest.started_at > now:
        return (
            f"frozen: the newest backup {newest.backup_id} of {newest.database} is incomplete "
            f"({newest.missing}) and dated {_age(newest.started_at - now)} in the future "
            "(clock skew, or a hand-made key?): it stays the newest until the clock passes it; "
            "nothing is deleted until an operator looks (delete it if it is debris)",
            False,
        )
    if not newest.complete:
        return (
            f"frozen: the newest backup {newest.backup_id} of {newest.database} is incomplete "
            f"({newest.missing}); nothing is deleted until an operator looks",
            False,
        )
    if policy.max_full_age_h:
        full = next((r for r in ordered if r.complete and r.kind == "full"), None)
        limit = timedelta(hours=policy.max_full_age_h)
        if full is None or now - full.started_at > limit:
            age = "there is none" if full is None else f"it is {_age(now - full.started_at)} old"
            return (
                f"frozen: no recent full backup of {newest.database} ({age}, "
                f"max_full_age_h={policy.max_full_age_h}); nothing is deleted until fulls resume",
                True,
            )
    return None


def _plan_database(
    records: Sequence[BackupRecord], policy: RetentionPolicy, now: datetime
) -> list[Decision]:
    ordered = newest_first(records)
    frozen = _freeze(ordered, policy, now)
    if frozen is not None:
        frozen_why, alarm = frozen
        return [Decision(r, keep=True, reasons=[frozen_why], alarm=alarm) for r in ordered]

    reasons: dict[str, list[str]] = defaultdict(list)
    complete = [r for r in ordered if r.complete]
    reasons[complete[0].backup_id].append("newest complete")
    fulls = [r for r in complete if r.kind == "full"]
    if fulls:
        reasons[fulls[0].backup_id].append("newest complete full")

    today = now.date()
    for label, unit, wanted in _kept_periods(policy, today):
        labeller = _LABELLERS[unit]
        newest: dict[str, BackupRecord] = {}
        newest_full: dict[str, BackupRecord] = {}
        for record in complete:  # newest first: the first one seen in a period is its newest
            period = labeller(record.started_at.astimezone(UTC).date())
            if period in wanted:
                newest.setdefault(period, record)
                if record.kind == "full":
                    newest_full.setdefault(period, record)
        for period, record in newest.items():
            if period in newest_full:
                reasons[newest_full[period].backup_id].append(f"{label} {period}")
            else:  # fulls stopped: the period still keeps a backup rather than a gap
                reasons[record.backup_id].append(
                    f"{label} {period} (no full that {unit}: its newest backup)"
                )

    hourly_window = timedelta(hours=policy.hourly_hours)
    grace = timedelta(hours=policy.incomplete_grace_hours)
    decisions: list[Decision] = []
    for record in ordered:
        age = now - record.started_at
        why = reasons[record.backup_id]
        if not record.complete:
            if age < grace:
                why.append(
                    f"incomplete ({record.missing}) but younger than "
                    f"{policy.incomplete_grace_hours} h: it may still be uploading"
                )
            elif not policy.delete_incomplete:
                why.append(
                    f"incomplete ({record.missing}): kept for an operator to look at "
                    "(delete_incomplete is off)"
                )
            else:
                decisions.append(
                    Decision(
                        record,
                        keep=False,
                        reasons=[
                            f"incomplete debris ({record.missing}) older than "
                            f"{policy.incomplete_grace_hours} h"
                        ],
                    )
                )
                continue
        elif record.kind == "hourly":
            if age <= hourly_window:
                why.append(f"within {policy.hourly_hours} h")
            elif not why:
                decisions.append(
                    Decision(
                        record, keep=False, reasons=[f"hourly older than {policy.hourly_hours} h"]
                    )
                )
                continue
        elif not why:
            decisions.append(
                Decision(
                    record,
                    keep=False,
                    reasons=["full outside retention: not the newest of a kept day, week or month"],
                )
            )
            continue
        decisions.append(Decision(record, keep=True, reasons=list(why)))
    return decisions


def plan_retention(
    records: Iterable[BackupRecord], policy: RetentionPolicy, now: datetime
) -> list[Decision]:
    """Decide, for every backup, whether grandfather-father-son retention keeps it.

    Each database is planned on its own. Full backups: the newest complete one of each of the
    last ``daily`` days, ``weekly`` ISO weeks and ``monthly`` months (calendar periods ending
    at ``now``, UTC) is kept; a period without any full keeps its newest complete backup of
    any kind instead. Hourly backups are kept ``hourly_hours``. The newest complete backup
    (and the newest complete full) is always kept. Nothing of a database is deleted when its
    newest backup is incomplete or dated in the future, or when its newest full is older than
    ``policy.max_full_age_h`` (those decisions carry ``alarm``). Incomplete backups younger
    than the grace period are kept; older ones are deleted only when
    ``policy.delete_incomplete``.

    Args:
        records: the catalogue (any order, one or several databases).
        policy: the retention policy.
        now: the current time (timezone-aware, any zone: converted to UTC), injected so the
            plan is reproducible.

    Returns:
        One decision per record, grouped by database (sorted), newest first.

    Raises:
        InvalidInputError: when ``now`` is naive.
    """
    if now.tzinfo is None:
        raise InvalidInputError(
            "now", "is a naive datetime", fix="pass a timezone-aware time, e.g. datetime.now(UTC)"
        )
    now = now.astimezone(UTC)
    by_database: dict[str, list[BackupRecord]] = defaultdict(list)
    for record in records:
        by_database[record.database].append(record)
    decisions: list[Decision] = []
    for database in sorted(by_database):
        decisions.extend(_plan_database(by_database[database], policy, now))
    return decisions


def freezes(decisions: Iterable[Decision]) -> dict[str, str]:
    """Why each frozen database is frozen.

    Args:
        decisions: the plan.

    Returns:
        Database -> the freeze reason, for every database nothing of which may be deleted.
    """
    return {
        d.record.database: d.reasons[0]
        for d in decisions
        if d.reasons and d.reasons[0].startswith("frozen")
    }


def alarms(decisions: Iterable[Decision]) -> dict[str, str]:
    """The freezes the prune must fail on (fulls stopped), by database.

    Args:
        decisions: the plan.

    Returns:
        Database -> the reason naming it and its newest full's age.
    """
    return {d.record.database: d.reasons[0] for d in decisions if d.alarm}


def decision_rows(decisions: Iterable[Decision], *, dry_run: bool) -> list[dict[str, str]]:
    """Rows of the kept/deleted table artifact.

    Args:
        decisions: the plan.
        dry_run: whether deletions are only planned.

    Returns:
        One row per decision: database, backup id, kind, started, action, reasons.
    """
    deleted = "would delete" if dry_run else "delete"
    return [
        {
            "database": d.record.database,
            "backup": d.record.backup_id,
            "kind": d.record.kind,
            "started (UTC)": f"{d.record.started_at:%Y-%m-%d %H:%M}",
            "complete": "yes" if d.record.complete else "no",
            "action": "keep" if d.keep else deleted,
            "reasons": "; ".join(d.reasons),
        }
        for d in decisions
    ]


@task(name="plan-retention", cache_policy=NO_CACHE)
def plan_retention_task(
    records: list[BackupRecord], policy: RetentionPolicy, now: datetime
) -> list[Decision]:
    """Prefect task: see :func:`plan_retention`; logs the counts.

    Args:
        records: the catalogue.
        policy: the retention policy.
        now: the current time.

    Returns:
        The decisions.
    """
    decisions = plan_retention(records, policy, now)
    get_run_logger().info(
        "retention: keep %d, delete %d of %d backups",
        sum(d.keep for d in decisions),
        sum(not d.keep for d in decisions),
        len(decisions),
    )
    return decisions


@task(name="publish-prune-report", cache_policy=NO_CACHE)
def publish_decisions_task(decisions: list[Decision], *, key: str, dry_run: bool) -> None:
    """Prefect task: publish the kept/deleted table artifact.

    Args:
        decisions: the plan.
        key: artifact key (lowercase letters, digits, dashes).
        dry_run: whether deletions are only planned.

    """
    deleted = sum(not d.keep for d in decisions)
    mode = "dry run: nothing deleted" if dry_run else "deleting"
    create_table_artifact(
        table=decision_rows(decisions, dry_run=dry_run),
        key=key,
        description=f"prune-backups ({mode}): keep {len(decisions) - deleted}, delete {deleted}",
    )
