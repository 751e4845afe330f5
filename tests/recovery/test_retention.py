"""Grandfather-father-son retention on a synthetic calendar (time injected, nothing slept)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from errors import InvalidInputError
from tasks.recovery.catalogue import BackupRecord
from tasks.recovery.manifest import backup_id
from tasks.recovery.retention import (
    Decision,
    RetentionPolicy,
    alarms,
    decision_rows,
    freezes,
    plan_retention,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # a Friday, ISO week 2026-W48


def record(
    started: datetime, kind: str = "full", *, database: str = "veza_db", complete: bool = True
) -> BackupRecord:
    bid = backup_id(started, kind)  # type: ignore[arg-type]
    base = f"pg/{database}/{bid}/"
    return BackupRecord(
        database=database,
        backup_id=bid,
        kind=kind,  # type: ignore[arg-type]
        started_at=started,
        data_key=base + "dump.pgc.zst.gpg",
        data_size=1234,
        manifest_key=base + "manifest.json" if complete else None,
    )


def calendar(
    days: int = 400, *, now: datetime = NOW, database: str = "veza_db"
) -> list[BackupRecord]:
    """A nightly full at 03:00 and an hourly every other hour, for ``days`` days up to ``now``."""
    records = []
    first = (now - timedelta(days=days - 1)).replace(hour=0, minute=0)
    hour = first
    while hour <= now:
        kind = "full" if hour.hour == 3 else "hourly"
        records.append(record(hour, kind, database=database))
        hour += timedelta(hours=1)
    return records


def kept(decisions: list[Decision]) -> list[Decision]:
    return [d for d in decisions if d.keep]


def with_reason(decisions: list[Decision], prefix: str) -> list[Decision]:
    return [d for d in decisions if any(r.startswith(prefix) for r in d.reasons)]


def test_guide_policy_on_400_days_keeps_each_class():
    records = calendar()
    decisions = plan_retention(records, RetentionPolicy(), NOW)
    assert len(decisions) == len(records)

    daily = with_reason(kept(decisions), "daily ")
    weekly = with_reason(kept(decisions), "weekly ")
    monthly = with_reason(kept(decisions), "monthly ")
    assert len(daily) == 30
    assert len(weekly) == 12
    # data starts 2025-10-24: 2025-10 .. 2026-11 is 14 months, fewer than 24
    assert len(monthly) == 14

    # daily: the 03:00 full of each of the last 30 days
    assert {d.record.started_at.date().isoformat() for d in daily} == {
        (NOW - timedelta(days=i)).date().isoformat() for i in range(30)
    }
    # weekly: the newest full of each ISO week (Sunday's, or today's for this week)
    assert {d.record.started_at.date().isoformat() for d in weekly} == {
        "2026-11-27",
        "2026-11-22",
        "2026-11-15",
        "2026-11-08",
        "2026-11-01",
        "2026-10-25",
        "2026-10-18",
        "2026-10-11",
        "2026-10-04",
        "2026-09-27",
        "2026-09-20",
        "2026-09-13",
    }
    assert "weekly 2026-W46" in next(d for d in weekly if d.record.started_at.day == 15).reasons
    # monthly: the last day of each month
    oct_2025 = next(
        d for d in monthly if d.record.started_at.month == 10 and d.record.started_at.year == 2025
    )
    assert oct_2025.record.started_at.date().isoformat() == "2025-10-31"
    assert "monthly 2025-10" in oct_2025.reasons

    # fulls kept: 30 daily + 7 weekly not already daily + 12 monthly not already daily
    kept_fulls = [d for d in kept(decisions) if d.record.kind == "full"]
    assert len(kept_fulls) == 30 + 7 + 12
    assert all(d.record.complete for d in kept_fulls)

    # hourlies: 11-25 12:00 .. 11-27 12:00 is 49 slots, two of which are the 03:00 fulls
    kept_hourly = [d for d in kept(decisions) if d.record.kind == "hourly"]
    assert len(kept_hourly) == 47
    assert all("within 48 h" in d.reasons for d in kept_hourly)
    assert all(NOW - d.record.started_at <= timedelta(hours=48) for d in kept_hourly)

    deleted = [d for d in decisions if not d.keep]
    assert len(deleted) == len(records) - len(kept_fulls) - len(kept_hourly)
    assert all(d.reasons for d in decisions), "every decision carries a reason"
    assert {r for d in deleted for r in d.reasons} == {
        "hourly older than 48 h",
        "full outside retention: not the newest of a kept day, week or month",
    }


def test_newest_complete_is_never_deleted_even_with_zero_policy():
    records = calendar(10)
    policy = RetentionPolicy(daily=0, weekly=0, monthly=0, hourly_hours=0)
    decisions = plan_retention(records, policy, NOW)
    survivors = kept(decisions)
    newest = max(records, key=lambda r: r.started_at)
    newest_full = max((r for r in records if r.kind == "full"), key=lambda r: r.started_at)
    assert {d.record.backup_id for d in survivors} == {newest.backup_id, newest_full.backup_id}
    assert "newest complete" in next(d for d in survivors if d.record == newest).reasons
    assert "newest complete full" in next(d for d in survivors if d.record == newest_full).reasons


def test_old_backups_only_still_keep_the_newest():
    # backups stopped 3 years ago: calendar windows hold nothing, the newest complete stays
    old_now = NOW + timedelta(days=3 * 365)
    decisions = plan_retention(calendar(20), RetentionPolicy(max_full_age_h=0), old_now)
    survivors = kept(decisions)
    assert [d.record.kind for d in survivors] == ["hourly", "full"]
    assert survivors[0].reasons == ["newest complete"]


def test_incomplete_newest_freezes_everything():
    records = calendar(60)
    records.append(record(NOW + timedelta(minutes=5), "hourly", complete=False))
    decisions = plan_retention(records, RetentionPolicy(daily=1, weekly=0, monthly=0), NOW)
    assert all(d.keep for d in decisions)
    assert all("incomplete" in d.reasons[0] and "frozen" in d.reasons[0] for d in decisions)
    assert "nothing is deleted until an operator looks" in decisions[0].reasons[0]


def test_freeze_is_per_database():
    frozen = calendar(40, database="chat_db")
    frozen.append(record(NOW + timedelta(minutes=1), "full", database="chat_db", complete=False))
    decisions = plan_retention(frozen + calendar(40), RetentionPolicy(), NOW)
    assert all(d.keep for d in decisions if d.record.database == "chat_db")
    assert any(not d.keep for d in decisions if d.record.database == "veza_db")
    assert [d.record.database for d in decisions] == sorted(d.record.database for d in decisions)


def test_incomplete_backups_grace_and_debris():
    records = calendar(40)
    young = record(NOW - timedelta(hours=5, minutes=30), "full", complete=False)
    old = record(NOW - timedelta(days=20, hours=1), "full", complete=False)
    records += [young, old]

    default = {d.record.backup_id: d for d in plan_retention(records, RetentionPolicy(), NOW)}
    assert default[young.backup_id].keep
    assert "may still be uploading" in default[young.backup_id].reasons[-1]
    assert default[old.backup_id].keep, "by default nothing without a manifest is deleted"
    assert "operator" in default[old.backup_id].reasons[-1]

    debris = {
        d.record.backup_id: d
        for d in plan_retention(records, RetentionPolicy(delete_incomplete=True), NOW)
    }
    assert debris[young.backup_id].keep
    assert not debris[old.backup_id].keep
    assert debris[old.backup_id].reasons == ["incomplete debris (no manifest) older than 24 h"]


def test_custom_policy_changes_the_counts():
    policy = RetentionPolicy(daily=7, weekly=4, monthly=3, hourly_hours=6)
    decisions = plan_retention(calendar(400), policy, NOW)
    assert len(with_reason(decisions, "daily ")) == 7
    assert len(with_reason(decisions, "weekly ")) == 4
    assert len(with_reason(decisions, "monthly ")) == 3
    # 06:00..12:00 today: 7 slots, none of them the 03:00 full
    assert len([d for d in kept(decisions) if d.record.kind == "hourly"]) == 7
    # daily 11-21..11-27; weekly adds 11-15 and 11-08 (Sundays); monthly adds 10-31, 09-30
    fulls = sorted(
        d.record.started_at.date().isoformat() for d in kept(decisions) if d.record.kind == "full"
    )
    assert fulls == [
        "2026-09-30",
        "2026-10-31",
        "2026-11-08",
        "2026-11-15",
        "2026-11-21",
        "2026-11-22",
        "2026-11-23",
        "2026-11-24",
        "2026-11-25",
        "2026-11-26",
        "2026-11-27",
    ]


def test_newest_of_a_day_is_the_one_kept():
    day = datetime(2026, 11, 26, tzinfo=UTC)
    early = record(day.replace(hour=3))
    late = record(day.replace(hour=21))  # a manual full later the same day
    today = record(NOW.replace(hour=3))
    decisions = {
        d.record.backup_id: d for d in plan_retention([early, late, today], RetentionPolicy(), NOW)
    }
    assert (
        decisions[late.backup_id].keep and "daily 2026-11-26" in decisions[late.backup_id].reasons
    )
    assert not decisions[early.backup_id].keep


@pytest.mark.parametrize(
    "field",
    ["daily", "weekly", "monthly", "hourly_hours", "incomplete_grace_hours", "max_full_age_h"],
)
def test_negative_policy_values_are_refused_naming_the_field(field):
    with pytest.raises(InvalidInputError) as caught:
        RetentionPolicy(**{field: -1})  # type: ignore[arg-type]
    assert caught.value.field == field
    assert "negative" in str(caught.value) and ">= 0" in str(caught.value)


def test_non_integer_policy_value_is_refused():
    with pytest.raises(InvalidInputError) as caught:
        RetentionPolicy(daily="30")  # type: ignore[arg-type]
    assert caught.value.field == "daily"


def test_naive_now_is_refused():
    with pytest.raises(InvalidInputError) as caught:
        plan_retention(calendar(2), RetentionPolicy(), NOW.replace(tzinfo=None))
    assert caught.value.field == "now"


def test_rows_say_what_happens():
    decisions = plan_retention(calendar(5), RetentionPolicy(hourly_hours=1), NOW)
    dry = decision_rows(decisions, dry_run=True)
    real = decision_rows(decisions, dry_run=False)
    assert {r["action"] for r in dry} == {"keep", "would delete"}
    assert {r["action"] for r in real} == {"keep", "delete"}
    assert dry[0]["reasons"] == "newest complete; within 1 h"


# --- fulls stop while hourlies continue; clocks and zones ------------------------------


def fulls_stopped(days_without: int) -> list[BackupRecord]:
    """The calendar of 60 days, its fulls of the last ``days_without`` days missing."""
    stop = NOW - timedelta(days=days_without)
    return [r for r in calendar(60) if r.kind == "hourly" or r.started_at < stop]


def test_a_day_without_a_full_keeps_its_newest_backup_instead_of_a_gap():
    records = fulls_stopped(41)
    decisions = plan_retention(records, RetentionPolicy(max_full_age_h=0), NOW)
    daily = with_reason(kept(decisions), "daily ")
    days = {d.record.started_at.date() for d in daily}
    assert days == {(NOW - timedelta(days=i)).date() for i in range(30)}, "one per day, no gap"
    assert all(d.record.kind == "hourly" for d in daily)
    assert all(any("no full that day: its newest backup" in r for r in d.reasons) for d in daily)
    # the newest backup of each of those days is the one kept (23:00; today: 12:00)
    past = [d for d in daily if d.record.started_at < NOW.replace(hour=0)]
    assert len(past) == 29 and all(d.record.started_at.hour == 23 for d in past)
    weekly = with_reason(kept(decisions), "weekly ")
    assert len(weekly) == 9 and len({d.record.backup_id for d in weekly}) == 9


def test_prune_refuses_while_the_newest_full_is_too_old():
    records = fulls_stopped(41) + calendar(10, database="chat_db")
    decisions = plan_retention(records, RetentionPolicy(), NOW)
    veza = [d for d in decisions if d.record.database == "veza_db"]
    assert all(d.keep and d.alarm for d in veza), "nothing of veza_db is deleted"
    assert any(not d.keep for d in decisions if d.record.database == "chat_db")
    assert not any(d.alarm for d in decisions if d.record.database == "chat_db")
    assert list(alarms(decisions)) == ["veza_db"]
    why = alarms(decisions)["veza_db"]
    assert "veza_db" in why and "41 d 9 h old" in why and "max_full_age_h=48" in why
    # within the limit, no alarm; a database with no full at all is an alarm too
    assert not alarms(plan_retention(fulls_stopped(1), RetentionPolicy(), NOW))
    hourly_only = [r for r in calendar(3) if r.kind == "hourly"]
    assert "there is none" in alarms(plan_retention(hourly_only, RetentionPolicy(), NOW))["veza_db"]


def test_the_same_instant_in_another_zone_gives_the_same_plan():
    late = NOW.replace(hour=23, minute=30)  # 01:30 the next day in UTC+2
    zoned = late.astimezone(timezone(timedelta(hours=2)))
    assert zoned.date() != late.date()
    records = calendar(40, now=late)
    policy = RetentionPolicy(daily=3, weekly=0, monthly=0, hourly_hours=6)
    assert plan_retention(records, policy, zoned) == plan_retention(records, policy, late)


def test_a_future_dated_debris_object_freezes_but_says_so():
    records = calendar(40)
    ahead = record(NOW + timedelta(days=3, hours=2), "full", complete=False)
    decisions = plan_retention([*records, ahead], RetentionPolicy(), NOW)
    assert all(d.keep for d in decisions)
    why = freezes(decisions)["veza_db"]
    assert ahead.backup_id in why and "3 d 2 h in the future" in why and "clock" in why
    assert not alarms(decisions)
