"""DORA metrics from synthetic release records: each metric, windows, incidents, markdown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from errors import InvalidInputError
from tasks.release.build import check_commit
from tasks.release.dora import (
    check_windows,
    compute,
    compute_windows,
    format_value,
    incidents,
    rolled_back_later,
    to_markdown,
)
from tasks.release.history import ReleaseRecord

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def rec(hours_ago: float, outcome: str = "succeeded", *, kind: str = "release",
        minutes: float = 2.0, lead_min: float | None = None, n: int = 0) -> ReleaseRecord:
    """A record that started ``hours_ago`` before NOW and took ``minutes``."""
    started = NOW - timedelta(hours=hours_ago)
    finished = started + timedelta(minutes=minutes)
    return ReleaseRecord(
        id=ReleaseRecord.new_id(started, f"r{n:04d}"), kind=kind, environment="production",
        version=f"1.{n}.0", started_at=started, finished_at=finished, outcome=outcome,
        commit_sha="ab" * 20 if lead_min is not None else None,
        commit_timestamp=finished - timedelta(minutes=lead_min) if lead_min is not None else None)


def test_frequency_success_and_failure_rates_over_each_window():
    records = [rec(24 * d + 1, n=d) for d in range(10)]          # 10 successes, one a day
    records += [rec(5, "rolled-back", n=100), rec(6, "failed", n=101)]
    records += [rec(24 * 20, "crashed", n=102)]                    # only in the 30-day window
    seven, thirty = compute_windows(records, environment="production", now=NOW)
    assert (seven.window_days, seven.succeeded, seven.attempts) == (7, 7, 9)
    assert seven.metric("deployment_frequency").value == pytest.approx(1.0)
    assert seven.metric("deployment_frequency").met is False       # multiple/day: >= 2
    assert seven.metric("deployment_success_rate").value == pytest.approx(7 / 9)
    # "failed" never took traffic: it is not a change failure, "rolled-back" is
    assert seven.metric("change_failure_rate").value == pytest.approx(1 / 9)
    assert seven.failed_changes == 1
    assert (thirty.succeeded, thirty.attempts, thirty.failed_changes) == (10, 13, 2)
    assert thirty.metric("deployment_frequency").value == pytest.approx(10 / 30)


def test_targets_met_by_a_healthy_environment():
    records = [rec(h, n=i, lead_min=20 + i) for i, h in enumerate(range(1, 7 * 24, 8))]
    report = compute(records, environment="production", days=7, now=NOW)
    assert report.metric("deployment_frequency").value == pytest.approx(3.0)
    assert all(report.metric(k).met for k in ("deployment_frequency", "lead_time",
                                               "change_failure_rate",
                                               "deployment_success_rate"))
    assert report.metric("mttr").value is None and report.metric("mttr").met is None


def test_lead_time_is_the_median_of_commit_to_success_and_ignores_records_without_commit():
    records = [rec(1, lead_min=30, n=1), rec(2, lead_min=50, n=2), rec(3, lead_min=200, n=3),
               rec(4, n=4)]  # an old record without commit fields
    lead = compute(records, environment="production", days=7, now=NOW).metric("lead_time")
    assert lead.value == pytest.approx(50 * 60)
    assert lead.samples == 3 and lead.met is True
    slow = [rec(1, lead_min=61, n=1)]
    assert compute(slow, environment="p", days=7, now=NOW).metric("lead_time").met is False


def test_mttr_runs_from_the_first_failure_to_the_next_success():
    records = [
        rec(10, n=1),
        rec(9, "rolled-back", minutes=1, n=2),   # incident opens at its end: 9 h - 1 min ago
        rec(8.5, "failed", minutes=1, n=3),      # same incident
        rec(8, minutes=4, n=4),                  # closes at 8 h - 4 min ago
        rec(5, "crashed", minutes=1, n=5),       # opens at 5 h - 1 min ago
        rec(4.9, kind="rollback", minutes=2, n=6),  # closes at 4 h 52 min ago
    ]
    found = incidents(records)
    assert [i.duration_s for i in found] == [pytest.approx(63 * 60), pytest.approx(7 * 60)]
    report = compute(records, environment="production", days=7, now=NOW)
    assert report.metric("mttr").value == pytest.approx(35 * 60)
    assert report.metric("mttr").met is False and report.open_incident_since is None


def test_a_rollback_run_opens_an_incident_and_marks_the_release_it_undid():
    good, bad = rec(3, n=1), rec(2, n=2)
    rollback = rec(1, kind="rollback", minutes=3, n=3)
    assert rolled_back_later([good, bad, rollback]) == {bad.id}
    report = compute([good, bad, rollback], environment="production", days=7, now=NOW)
    assert report.failed_changes == 1
    assert report.metric("change_failure_rate").value == pytest.approx(0.5)
    assert report.metric("deployment_success_rate").value == pytest.approx(1.0)
    assert report.metric("mttr").value == pytest.approx(180.0)
    assert report.metric("mttr").met is True


def test_an_open_incident_is_reported_and_cancelled_or_running_runs_are_not_attempts():
    records = [rec(3, n=1), rec(2, "rolled-back", n=2), rec(1, "cancelled", n=3),
               rec(0.5, "running", n=4)]
    report = compute(records, environment="production", days=7, now=NOW)
    assert report.attempts == 2
    assert report.open_incident_since == records[1].finished_at
    assert report.metric("mttr").value is None
    assert "open incident" in to_markdown([report])


def test_no_records_means_no_data_not_a_verdict():
    report = compute([], environment="staging", days=7, now=NOW)
    assert report.attempts == 0
    assert report.metric("deployment_frequency").value == 0.0
    for key in ("lead_time", "mttr", "change_failure_rate", "deployment_success_rate"):
        assert report.metric(key).value is None and report.metric(key).met is None


def test_a_full_history_newer_than_the_window_is_marked_incomplete():
    records = [rec(h, n=h) for h in range(1, 6)]
    assert compute(records, environment="p", days=7, now=NOW, keep=5).complete is False
    assert compute(records, environment="p", days=7, now=NOW, keep=50).complete is True
    text = to_markdown([compute(records, environment="p", days=7, now=NOW, keep=5)])
    assert "incomplete" in text


def test_markdown_has_one_table_per_environment_with_both_windows_and_targets():
    reports = (compute_windows([rec(1, lead_min=30, n=1)], environment="production", now=NOW)
               + compute_windows([], environment="staging", now=NOW))
    text = to_markdown(reports)
    assert "## production" in text and "## staging" in text
    assert "| metric | last 7 d | last 30 d | target |" in text
    for target in ("multiple per day", "< 1 h", "< 5 min", "< 5 %", "> 95 %"):
        assert target in text
    assert "30 min (met, n=1)" in text
    assert "no data" in text


def test_values_are_formatted_for_people():
    report = compute([rec(1, lead_min=150, n=1)], environment="p", days=7, now=NOW)
    assert format_value(report.metric("lead_time")) == "2.5 h"
    assert format_value(report.metric("deployment_success_rate")) == "100.0 %"
    assert format_value(report.metric("deployment_frequency")) == "0.1/day"


def test_old_records_without_commit_fields_stay_readable():
    raw = rec(1, n=1).model_dump(mode="json")
    del raw["commit_sha"], raw["commit_timestamp"]
    assert ReleaseRecord.model_validate(raw).commit_timestamp is None


def test_bad_windows_and_commits_are_refused_naming_the_field():
    with pytest.raises(InvalidInputError, match="windows_days"):
        check_windows([7, 0])
    with pytest.raises(InvalidInputError, match="commit_sha"):
        check_commit("not-a-sha", None)
    with pytest.raises(InvalidInputError, match="commit_timestamp"):
        check_commit(None, datetime(2026, 12, 1, 10, 0))  # naive: no offset
    assert check_commit("ABCDEF1", NOW) == ("abcdef1", NOW)
