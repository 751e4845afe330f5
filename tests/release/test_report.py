"""The run's report: what each step records in the history record and the summary (pure)."""

from __future__ import annotations

import pytest

from tasks.release.colours import Prepared
from tasks.release.report import ReleaseReport
from tasks.release.switching import RestoreReport, SwitchRecord


def prepared(service: str) -> Prepared:
    return Prepared(service=service, live_colour="blue", new_colour="green",
                    deployment=f"{service}-green", image=f"{service}:2", previous_image=None,
                    secret_name=f"{service}-secrets-1", replicas=1, smoke=["GET / -> 200"])


def test_a_release_switched_then_rolled_back():
    report = ReleaseReport.start(kind="release", environment="production", version="2",
                                 triggered_by="ci", run_id="0123456789abcdef",
                                 images={"a": "a:2", "b": "b:2"})
    assert report.id.endswith("-01234567") and report.holder == f"release/{report.id}"
    report.prepared([prepared("a"), prepared("b")])
    assert report.record.previous_images == {"a": "-", "b": "-"}
    report.switched_to("a")
    report.verified("a", "green", "2 of 2 measurements healthy")
    report.switched_to("b")
    switches = [SwitchRecord(s, s, "p", "blue", "green", {}, at) for s, at in (("a", 10.0),
                                                                               ("b", 20.0))]
    report.rolled_back(switches, RestoreReport(["b", "a"], {}, decided_at=23.0,
                                               finished_at=23.5))
    assert report.record.timings == {"detection_s": pytest.approx(3.0),
                                     "restoration_s": pytest.approx(0.5)}
    assert report.switched == 2
    assert {s.colour for s in report.summary.services.values()} == {"blue"}
    names = [c.name for c in report.record.checks]
    assert names == ["smoke a green", "smoke b green", "verify a green", "rollback"]
    assert "2 service(s) back on their old colour in 0.50 s" in report.record.checks[-1].detail


def test_a_rollback_is_recorded_from_its_target_on():
    report = ReleaseReport.start(kind="rollback", environment="production", version="?",
                                 triggered_by="ui", run_id="local")
    assert not report.changed
    report.rolling_back_to("before 2", {"a": "a:1"}, {"a": "a:2"})
    report.restored("a", "a:1", "blue", "scaled")
    assert report.changed and report.summary.version == report.record.version == "before 2"
    assert report.summary.services["a"].switched and report.record.colours == {"a": "blue"}
