"""Switching: the switch-back's report and the rollback timings (pure parts)."""

from __future__ import annotations

import pytest

from tasks.release.switching import RestoreReport, SwitchRecord, rollback_timings


def switch(service: str, at: float) -> SwitchRecord:
    return SwitchRecord(service, service, "p", "blue", "green", {"color": "blue"}, at)


def test_restoration_time_is_decision_to_last_selector():
    report = RestoreReport(decided_at=100.0, finished_at=100.75)
    assert report.restoration_s == pytest.approx(0.75)
    assert RestoreReport(decided_at=5.0, finished_at=4.0).restoration_s == 0.0


def test_rollback_timings_from_the_last_switch_to_the_verdict_to_traffic_back():
    report = RestoreReport(decided_at=110.0, finished_at=110.5)
    timings = rollback_timings([switch("a", 90.0), switch("b", 104.0)], report)
    assert timings == {"detection_s": pytest.approx(6.0), "restoration_s": pytest.approx(0.5)}
    assert rollback_timings([], report) == {}
